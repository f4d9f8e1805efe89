"""Suite-wide fixtures: a scratch VAR_DIR so no test writes into the checkout's var/."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _scratch_var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser(username="operator", email="", password="pw-operator")
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def _learning_inside_the_tests_transaction(request, monkeypatch):
    """``certauth.learning`` writes from a background thread on PostgreSQL. A test that runs inside one
    transaction (``django_db`` without ``transaction=True``) would see that thread commit rows outside it,
    left for the next tests: there the offering thread learns, inside the test's transaction."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or "live_server" in request.fixturenames
    if marker is None or transactional or marker.kwargs.get("transaction"):
        return
    from certauth import learning

    learning.forget()
    monkeypatch.setattr(learning, "INLINE", True)
