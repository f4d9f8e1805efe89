"""The bounds of issue 16 point 3, read from ``[xmppauth]`` (xmppauth/config.py documents each), and the
per-process counters behind the per-address ones.

Specs: XEP-0205 §3 (delay, then refuse, a peer that keeps failing), RFC 6120 §4.9.3.14 (``policy-violation``).
Each rule lives where it is enforced; this module only answers "what is the limit" and "how many so far".
Counters are per process (a listener process sees the connections it holds); with ``--reuse-port`` the kernel
spreads one address over the processes, so the effective limit is at most that many times the setting.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from django.conf import settings

from xmppauth.config import XmppauthOptions

POLICY_VIOLATION = "policy-violation"  # RFC 6120 §4.9.3.14
WINDOW_SECONDS = 60.0
MAX_TRACKED = 100_000  # addresses tracked per counter; past it the oldest are forgotten
_DEFAULTS = XmppauthOptions()


def option(name: str) -> int:
    """``[xmppauth] <name>`` of the running config, else its documented default."""
    options = getattr(getattr(settings, "XMPP", None), "options", None)
    value = getattr(options, name, None)
    return int(getattr(_DEFAULTS, name) if value is None else value)


def address_of(peer: str) -> str:
    """The IP address of ``host:port`` or ``[v6]:port`` (as adapters log peers)."""
    if peer.startswith("["):
        return peer[1 : peer.find("]")]
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer


class WindowCounter:
    """Events per key within the last :data:`WINDOW_SECONDS` (thread-safe: the DB threads record refusals)."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= MAX_TRACKED:
                self._events.pop(next(iter(self._events)))
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def add(self, key: str) -> int:
        """Record one event; returns how many there are in the window, this one included."""
        now = time.monotonic()
        with self._lock:
            events = self._recent(key, now)
            events.append(now)
            return len(events)

    def count(self, key: str) -> int:
        with self._lock:
            return len(self._recent(key, time.monotonic()))

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


auth_failures = WindowCounter()  # failed authentications per address (auth_failures_per_minute)
auth_events = WindowCounter()  # refusals recorded as AuthEvent rows per address (auth_events_per_minute)


def too_many_auth_failures(peer: str) -> bool:
    """Whether ``peer``'s address failed ``auth_failures_per_minute`` times within the last minute."""
    limit = option("auth_failures_per_minute")
    return limit > 0 and auth_failures.count(address_of(peer)) >= limit


class ConnectionCounter:
    """Open connections per address in this process (``max_connections_per_address``)."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count one more connection from ``address``, or refuse it (False) past the limit."""
        limit = option("max_connections_per_address")
        current = self.open.get(address, 0)
        if limit and current >= limit:
            return False
        self.open[address] = current + 1
        return True

    def release(self, address: str) -> None:
        left = self.open.get(address, 0) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)


connections = ConnectionCounter()  # touched on the reactor thread only
