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
