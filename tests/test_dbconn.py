"""Listener processes keep one database connection per thread (xmppauth.dbconn); others keep the settings'."""

from __future__ import annotations

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from xmppauth import dbconn


@pytest.fixture
def database_settings(monkeypatch):
    database = connections.settings[DEFAULT_DB_ALIAS]
    for key in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS"):
        monkeypatch.setitem(database, key, database.get(key))
    return database


def test_settings_close_connections_after_each_call_by_default(database_settings):
    assert database_settings["CONN_MAX_AGE"] == 0


def test_listener_connections_are_kept_and_health_checked(database_settings, monkeypatch):
    monkeypatch.delenv("XMPPAUTH_DB_CONN_MAX_AGE", raising=False)
    dbconn.keep_connections_in_threads()
    assert database_settings["CONN_MAX_AGE"] == dbconn.LISTENER_CONN_MAX_AGE
    assert database_settings["CONN_HEALTH_CHECKS"] is True


def test_an_explicit_environment_value_is_left_alone(database_settings, monkeypatch):
    monkeypatch.setenv("XMPPAUTH_DB_CONN_MAX_AGE", "7")
    database_settings["CONN_MAX_AGE"] = 7
    dbconn.keep_connections_in_threads()
    assert database_settings["CONN_MAX_AGE"] == 7


# -- the health check at most once per HEALTH_CHECK_INTERVAL per thread (issue 17) --------------------------

POSTGRES = connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def in_a_new_thread(function):
    """``function()`` in a thread of its own (its own connection, as a listener's pool thread has)."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except Exception as exc:  # handed to the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def select_one() -> int:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 2")
        return cursor.fetchone()[0]


@pytest.fixture
def kept_connections(database_settings, monkeypatch):
    monkeypatch.delenv("XMPPAUTH_DB_CONN_MAX_AGE", raising=False)
    dbconn.keep_connections_in_threads()


@pytest.fixture
def health_checks(monkeypatch):
    """Counts Django's health checks (``is_usable``) of every connection."""
    wrapper = type(connections[DEFAULT_DB_ALIAS])  # the backend's DatabaseWrapper
    checks = []
    original = wrapper.is_usable

    def counted(self):
        checks.append(self.alias)
        return original(self)

    monkeypatch.setattr(wrapper, "is_usable", counted)
    return checks


@pytest.mark.django_db(transaction=True)
def test_calls_in_a_row_check_the_connection_once_per_interval(kept_connections, health_checks, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(dbconn.time, "monotonic", lambda: now[0])

    def calls():
        counts = []
        for step in (
            0.0,
            0.2,
            0.3,
            0.4,
            0.2,
            0.5,
        ):  # 0, 0.2, 0.5, 0.9: vouched for; 1.1: checked; 1.6: vouched
            now[0] += step
            assert dbconn.with_fresh_connections(select_one) == 2
            counts.append(len(health_checks))
        return counts

    # The first call opens the connection (new: no check); the next ones within the interval skip it.
    assert in_a_new_thread(calls) == [0, 0, 0, 0, 1, 1]


@pytest.mark.django_db(transaction=True)
def test_without_a_recent_check_every_call_is_checked(kept_connections, health_checks, monkeypatch):
    monkeypatch.setattr(dbconn, "HEALTH_CHECK_INTERVAL", 0.0)

    def calls():
        for _ in range(3):
            dbconn.with_fresh_connections(select_one)
        return len(health_checks)

    assert in_a_new_thread(calls) == 2  # Django's own behaviour: every call after the first


@pytest.mark.skipif(not POSTGRES, reason="SQLite has no server that could drop a connection")
@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_fails_one_call_and_the_next_reconnects(kept_connections):
    import django.db

    def calls():
        assert dbconn.with_fresh_connections(select_one) == 2
        pid = connections[DEFAULT_DB_ALIAS].connection.info.backend_pid
        import psycopg

        settings = connections[DEFAULT_DB_ALIAS].settings_dict
        with psycopg.connect(
            host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"],
            dbname=settings["NAME"], autocommit=True,
        ) as other:  # fmt: skip
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        outcome = []
        try:
            dbconn.with_fresh_connections(select_one)  # within the interval: not checked, so it fails
            outcome.append("answered")
        except django.db.OperationalError:
            outcome.append("failed")
        outcome.append(dbconn.with_fresh_connections(select_one))  # a new connection
        return outcome

    assert in_a_new_thread(calls) == ["failed", 2]
