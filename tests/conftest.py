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
