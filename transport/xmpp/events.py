"""What the c2s core hands to its adapter (events out) and what the adapter hands back (results in).

Spec: DESIGN §2 (sans-I/O core, in the manner of h11: bytes and results in, bytes and events out).
The adapter writes ``data_to_send()`` before acting on the events of the same call, so ``<proceed/>`` and
``<success/>`` reach the client before TLS starts or the connection closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element


class LocalProtocolError(RuntimeError):
    """The adapter called the core at the wrong time (for instance ``auth_result`` with no request)."""


@dataclass(frozen=True)
class StreamOpened:
    """A stream header was accepted (initially and after each restart); ``domain`` is its ``to``."""

    domain: str
    stream_id: str


@dataclass(frozen=True)
class StartTls:
    """``<proceed/>`` is queued: flush it, then start TLS and call ``tls_established`` (RFC 6120 §5.4.3.3)."""


@dataclass(frozen=True)
class AuthenticateRequest:
    """SASL EXTERNAL wants a verdict: call ``auth_result`` with an
    :class:`~transport.xmpp.decisions.IdentityDecision`.

    ``authzid`` is the decoded authorization identity, already checked to be a bare JID, or None.
    """

    facts: Any
    authzid: str | None
    domain: str
    mechanism: str = "EXTERNAL"


@dataclass(frozen=True)
class PasswordStepRequest:
    """A password mechanism (PLAIN, SCRAM-*) has client data: call ``auth_result`` with an
    ``IdentityDecision`` holding a ``challenge``, a ``jid`` (with SCRAM's ``additional_data``) or a
    ``condition``.

    ``first`` marks the exchange's first message (a new exchange: forget any earlier one).
    ``channel_bindings`` (type -> data) and ``plus_offered`` (a -PLUS mechanism was advertised) are what
    SCRAM's channel binding and its downgrade check need (RFC 5802 §6, XEP-0440).
    """

    mechanism: str
    data: bytes
    domain: str
    first: bool
    channel_bindings: dict[str, bytes] = field(default_factory=dict, repr=False)
    plus_offered: bool = False


@dataclass(frozen=True)
class AuthRefused:
    """The core refused a SASL attempt by itself, without asking the adapter (EXTERNAL or another mechanism
    not offered, no TLS, malformed or undecodable data): the adapter records it as any other attempt
    (issue 18 §3). ``mechanism``: what the client asked for ("" when unknown)."""

    condition: str
    reason: str
    mechanism: str = ""


@dataclass(frozen=True)
class Authenticated:
    """SASL succeeded for the bare ``jid``; the stream restarts (RFC 6120 §6.4.6)."""

    jid: str


@dataclass(frozen=True)
class BindRequest:
    """The client asked to bind the full ``jid``: call ``bind_result`` once the adapter has registered the
    session and checked again that its credentials still hold (revocation, expiry, account); until then the
    core holds the client's input and sends no bind result (no window between a revocation and a session)."""

    jid: str
    resource: str


@dataclass(frozen=True)
class Bound:
    """A resource was bound: the session of the full ``jid`` exists (RFC 6120 §7.6.1)."""

    jid: str
    resource: str


@dataclass(frozen=True)
class StanzaReceived:
    """A stanza for the router, its ``from`` already stamped with the full JID (RFC 6120 §8.1.2.1)."""

    element: Element


@dataclass(frozen=True)
class Close:
    """The stream is over: flush ``data_to_send()``, close the transport. ``condition``: the stream error."""

    reason: str
    condition: str | None = None


# Timer names (StartTimer/CancelTimer): the adapter keeps the clock, the core decides what a timeout means.
AUTH_DEADLINE = "auth-deadline"  # from connection_made() until a resource is bound (slowloris before auth)
KEEPALIVE = "keepalive"  # XEP-0199 §4.2: silence from a bound client for this long gets a server ping


@dataclass(frozen=True)
class StartTimer:
    """Call ``timer_fired(name)`` ``seconds`` from now; a timer of the same name already running is replaced
    (its earlier deadline no longer counts)."""

    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    """The timer ``name`` is no longer needed (nothing happens if it is not running)."""

    name: str


Event = (
    StreamOpened
    | StartTls
    | AuthenticateRequest
    | PasswordStepRequest
    | AuthRefused
    | Authenticated
    | BindRequest
    | Bound
    | StanzaReceived
    | Close
    | StartTimer
    | CancelTimer
)
