"""A dependency that stops answering (PostgreSQL, Redis) is logged once when it fails and once when it
answers again, not at every retry: the loops that poll it (termination watcher, heartbeat, a session's
channel) retry several times a second, and an operator must see the outage, not drown in it.

Also what counts as "the database cannot be reached" (:data:`DATABASE_UNAVAILABLE`), one place for every
caller that answers it with a temporary refusal (SASL ``temporary-auth-failure``, RFC 6120 §6.5.12; a
stanza bounced with a ``wait`` error, §8.3.2) instead of ending a session.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from django.db import InterfaceError, OperationalError

# psycopg and sqlite3 failures to connect, a connection the server dropped, a server shutting down: all are
# OperationalError or InterfaceError once Django wraps them. Integrity or programming errors are not outages.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

# Outages seen in this process, by dependency ("database", "redis"): whoever must repair something after one
# (the session registry's rows) compares the count with the one it saw last.
outages: Counter[str] = Counter()


class OutageLog:
    """``failed(exc)`` logs an ERROR line the first time, ``ok()`` a WARNING line when it answers again."""

    def __init__(self, logger: logging.Logger, what: str, dependency: str = "database") -> None:
        self.logger = logger
        self.what = what
        self.dependency = dependency
        self.down = False
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            first, self.down = not self.down, True
        if first:
            outages[self.dependency] += 1
            cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.logger.error("%s unavailable: %s (logged again when it answers)", self.what, cause)

    def ok(self) -> None:
        with self._lock:
            back, self.down = self.down, False
        if back:
            self.logger.warning("%s answers again", self.what)
