"""The sans-I/O c2s XMPP core: feed it bytes and certificate facts, get bytes and events back.

Specs: RFC 6120 (XMPP core), RFC 7395 (WebSocket framing), XEP-0178 (SASL EXTERNAL with certificates).
Nothing here imports Django, asyncio, Twisted or sockets (DESIGN §2).
"""

from __future__ import annotations

from typing import Any

from .auth import Authenticator, AuthResult, IdentityAuthenticator
from .connection import C2SConnection, StreamSettings, settings_from_config
from .errors import StreamError
from .events import (
    Authenticated,
    AuthenticateRequest,
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
    "AuthResult",
    "Authenticated",
    "AuthenticateRequest",
    "Authenticator",
    "BindRequest",
    "Bound",
    "C2SConnection",
    "CancelTimer",
    "Close",
    "Event",
    "IdentityAuthenticator",
    "LocalProtocolError",
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
    config: Any, listener: Any, *, framing: str = "stream", log_id: str = "c2s"
) -> C2SConnection:
    """A fresh connection for one client of ``listener`` (``xmppauth.config`` objects)."""
    return C2SConnection(settings_from_config(config, listener, framing), log_id=log_id)
