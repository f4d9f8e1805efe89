"""Database connections of the long-running listener processes (runc2s, runxmpp): kept open per thread.

Django's default here (``CONN_MAX_AGE = 0``, settings) closes the connection after each call. The
listeners run every database call in a thread of Twisted's pool (``transport.tcp.protocol``,
``transport.sessions.registry``),
each followed by ``close_old_connections()``: with age 0 every call opened a new connection, about a third
of a login's server CPU (bench: 18.4 -> 12.4 ms per login with SQLite). Listener processes keep one
connection per pool thread instead, for :data:`LISTENER_CONN_MAX_AGE` seconds, with Django's health check
before reuse (``CONN_HEALTH_CHECKS``) so a connection the database dropped is replaced, not used. Only
connections are kept, never data: every query still reads the committed rows of that moment.

Django checks a kept connection's health (PostgreSQL: ``SELECT 1``) before the first query after every
``close_old_connections()``, which here means before every database call: three round trips per login, half
the statements a login sent (issue 17). A pool thread's connection is checked at most every
:data:`HEALTH_CHECK_INTERVAL` instead: a check that passed (or a connection just opened) vouches for the
connection that long. A connection the database dropped within that window fails its next call, which the
caller's error path answers (a login: ``temporary-auth-failure``, fail closed), and Django closes it at the
end of that call (``errors_occurred``), so the next call opens a new one.

Other processes (tests, management commands, celery) keep the settings' value. ``XMPPAUTH_DB_CONN_MAX_AGE``
in the environment, when set, wins everywhere (settings reads it) and is left alone here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

logger = logging.getLogger(__name__)

LISTENER_CONN_MAX_AGE = 300  # seconds a pool thread keeps its connection before opening a new one
HEALTH_CHECK_INTERVAL = 1.0  # seconds a passed health check (or a new connection) vouches for a connection


def keep_connections_in_threads(max_age: int = LISTENER_CONN_MAX_AGE) -> None:
    """Call before the listeners make their first query: connections opened from then on stay open."""
    if os.environ.get("XMPPAUTH_DB_CONN_MAX_AGE"):
        return
    database = connections.settings[DEFAULT_DB_ALIAS]
    database["CONN_MAX_AGE"] = max_age
    database["CONN_HEALTH_CHECKS"] = True
    logger.debug("database connections kept %d s per thread", max_age)


def with_fresh_connections(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a worker thread between two ``close_old_connections()``, as Django does around a
    request: a connection that broke, or outlived ``CONN_MAX_AGE``, is not used (the listeners, the trust
    refresh and the in-process jobs call the database this way)."""
    close_old_connections()
    vouched = _vouch_for_recent_check()
    try:
        return function(*args)
    finally:
        if not vouched:
            _note_health_check()
        close_old_connections()


def _vouch_for_recent_check() -> bool:
    """Skip Django's health check of this thread's connection when one passed within the interval."""
    connection = connections[DEFAULT_DB_ALIAS]
    checked_at = getattr(connection, "xmppauth_checked_at", None)
    if (
        connection.connection is None
        or not connection.health_check_enabled
        or checked_at is None
        or time.monotonic() - checked_at >= HEALTH_CHECK_INTERVAL
    ):
        return False
    connection.health_check_done = True
    return True


def _note_health_check() -> None:
    """When this call's first query ran Django's health check (or opened the connection) and nothing failed:
    that moment vouches for the connection for the next :data:`HEALTH_CHECK_INTERVAL`."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.connection is not None and connection.health_check_done and not connection.errors_occurred:
        connection.xmppauth_checked_at = time.monotonic()
