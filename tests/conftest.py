"""Suite-wide fixtures: a scratch VAR_DIR so no test writes into the checkout's var/."""

from __future__ import annotations

import time

import pytest
from django.core.management.base import CommandError
from django.db import OperationalError
from django.test import TransactionTestCase

LATE_WRITE_WAIT = 10.0  # seconds a transactional test's teardown flush waits for a server's last write

_flush_database = TransactionTestCase._fixture_teardown


def _flush_after_late_writes(self: TransactionTestCase) -> None:
    """The flush at the end of a transactional test, retried while the database is locked.

    A connection that ends as its test ends is still read and recorded by the server's database threads (its
    revocation check, its auth event) while the flush runs; SQLite's in-memory test database (shared cache)
    then refuses the flush at once ("database table is locked") instead of waiting for those statements, and
    a failed flush leaves the next tests on this test's rows. The flush is one transaction: tried again."""
    deadline = time.monotonic() + LATE_WRITE_WAIT
    while True:
        try:
            return _flush_database(self)
        except (OperationalError, CommandError) as exc:  # flush wraps the OperationalError in a CommandError
            if "locked" not in f"{exc} {exc.__cause__}" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


TransactionTestCase._fixture_teardown = _flush_after_late_writes


@pytest.fixture(autouse=True)
def _scratch_var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()


@pytest.fixture(autouse=True)
def _fresh_address_counters():
    """Per-address counters (xmppauth.limits) start empty in each test: refusals of one test do not
    rate-limit the next one's loopback client."""
    from xmppauth import limits

    limits.auth_failures.clear()
    limits.auth_events.clear()
    yield
    limits.auth_failures.clear()
    limits.auth_events.clear()


@pytest.fixture(autouse=True)
def _fresh_hosted_domains():
    """The disabled-domain names cached by accounts.domains come from this test's database, not from an
    earlier test's rolled-back rows (a rollback sends no post_save)."""
    from accounts import changefeed, domains

    domains.invalidate()
    changefeed.reset()  # nor the login path's caches (accounts.changefeed)
    yield
    domains.invalidate()
    changefeed.reset()


@pytest.fixture
def xmpp_options(monkeypatch):
    """``xmpp_options(name=value, ...)`` sets ``[xmppauth]`` options of the running config for one test."""
    import dataclasses

    from django.conf import settings

    def set_options(**values):
        config = settings.XMPP
        options = dataclasses.replace(config.options, **values)
        monkeypatch.setattr(settings, "XMPP", dataclasses.replace(config, options=options))

    return set_options


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
