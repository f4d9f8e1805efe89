"""Database connections of the long-running listener processes (runc2s, runxmpp): kept open per thread.

Django's default here (``CONN_MAX_AGE = 0``, settings) closes the connection after each call. The
listeners run every database call in a thread of Twisted's pool (``transport.tcp.protocol``,
``transport.sessions.registry``),
each followed by ``close_old_connections()``: with age 0 every call opened a new connection, about a third
of a login's server CPU (bench: 18.4 -> 12.4 ms per login with SQLite). Listener processes keep one
connection per pool thread instead, for :data:`LISTENER_CONN_MAX_AGE` seconds, with Django's health check
before reuse (``CONN_HEALTH_CHECKS``) so a connection the database dropped is replaced, not used. Only
connections are kept, never data: every query still reads the committed rows of that moment.

Other processes (tests, management commands, celery) keep the settings' value. ``XMPPAUTH_DB_CONN_MAX_AGE``
in the environment, when set, wins everywhere (settings reads it) and is left alone here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

logger = logging.getLogger(__name__)

LISTENER_CONN_MAX_AGE = 300  # seconds a pool thread keeps its connection before opening a new one


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
    try:
        return function(*args)
    finally:
        close_old_connections()
