"""The sans-I/O c2s XMPP core: feed it bytes and certificate facts, get bytes and events back.

Specs: RFC 6120 (XMPP core), RFC 7395 (WebSocket framing), RFC 7622 (JIDs), XEP-0178 (SASL EXTERNAL with
certificates). Nothing here imports Django, asyncio, Twisted, sockets or ssl (DESIGN §2): the standard
library only, plus ``precis_i18n`` and ``idna`` for the JID grammar (``jid.py``), both pure; checked by
tests/transport/test_core_imports.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .auth import Authenticator
from .connection import C2SConnection, StreamSettings, settings_from_config
from .decisions import IdentityDecision
from .errors import StreamError
from .events import (
    Authenticated,
    AuthenticateRequest,
    AuthRefused,
    BindRequest,
    Bound,
    CancelTimer,
    Close,
    Event,
    LocalProtocolError,
    PasswordStepRequest,
    StanzaReceived,
    StartTimer,
    StartTls,
    StreamOpened,
)
from .states import State

__all__ = [
    "Authenticated",
    "AuthenticateRequest",
    "Authenticator",
    "BindRequest",
    "Bound",
    "C2SConnection",
    "CancelTimer",
    "Close",
    "Event",
    "IdentityDecision",
    "LocalProtocolError",
    "AuthRefused",
    "PasswordStepRequest",
    "StanzaReceived",
    "StartTimer",
    "StartTls",
    "State",
    "StreamError",
    "StreamOpened",
    "StreamSettings",
    "new_c2s_stream",
    "settings_from_config",
]


def new_c2s_stream(
    config: Any,
    listener: Any,
    *,
    framing: str = "stream",
    log_id: str = "c2s",
    hosted: Callable[[str], bool] | None = None,
) -> C2SConnection:
    """A fresh connection for one client of ``listener`` (``xmppauth.config`` objects); ``hosted`` answers
    "is this domain served here?" at stream open (the adapters pass ``accounts.domains.checker``)."""
    return C2SConnection(_listener_settings(config, listener, framing), log_id=log_id, hosted=hosted)


# StreamSettings per (config, listener, framing), made at a listener's first connection, not at every one.
# Config and listener are frozen dataclasses: by identity, each entry holding both so that their ids stay
# theirs; a handful per process (tests make many: the oldest go beyond SETTINGS_KEPT).
SETTINGS_KEPT = 64
_settings: dict[tuple[int, int, str], tuple[Any, Any, StreamSettings]] = {}
_settings_lock = threading.Lock()


def _listener_settings(config: Any, listener: Any, framing: str) -> StreamSettings:
    key = (id(config), id(listener), framing)
    held = _settings.get(key)
    if held is not None and held[0] is config and held[1] is listener:
        return held[2]
    settings = settings_from_config(config, listener, framing)
    with _settings_lock:
        while len(_settings) >= SETTINGS_KEPT:
            _settings.pop(next(iter(_settings)), None)
        _settings[key] = (config, listener, settings)
    return settings
