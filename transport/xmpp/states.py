"""The c2s stream's states and, in one table, which first-level elements each state accepts.

Spec: RFC 6120 §4.3 (stream negotiation: TLS, then SASL, then resource binding, each after a restart).

Rule 1: what a state accepts lives here and nowhere else; ``connection.py`` only implements the handlers
named in the table. Rule 2: an element the table does not list for the current state is refused the same
way everywhere: a stanza before the session exists is ``not-authorized`` (RFC 6120 §4.9.3.12), anything
else is ``unsupported-stanza-type`` (§4.9.3.20).

Theory of operation::

    WAIT_STREAM --header--> WAIT_STARTTLS --<starttls/>--> WAIT_TLS --tls_established()--> WAIT_STREAM
                       \\--> WAIT_AUTH --<auth/>--> SASL_PENDING (or SASL_CHALLENGE --<response/>--> ...)
                                         SASL_PENDING --auth_result(ok)--> WAIT_STREAM --header--> WAIT_BIND
                                         SASL_PENDING --auth_result(refused)--> WAIT_STARTTLS / WAIT_AUTH
                       WAIT_BIND --<iq><bind/></iq>--> BIND_PENDING --bind_result(ok)--> SESSION
                                                        BIND_PENDING --bind_result(refused)--> CLOSED
    any state --stream error / </stream:stream> / close--> CLOSED

In WAIT_TLS, SASL_PENDING and BIND_PENDING the core waits for the adapter: input is held, not parsed.
"""

from __future__ import annotations

import enum

from . import namespaces as ns


class State(enum.Enum):
    WAIT_STREAM = "wait-stream"  # expecting a stream header (initially and after each restart)
    WAIT_STARTTLS = "wait-starttls"  # STARTTLS offered (RFC 6120 §5.4.1)
    WAIT_TLS = "wait-tls"  # <proceed/> sent; the adapter runs the TLS handshake
    WAIT_AUTH = "wait-auth"  # SASL mechanisms offered (RFC 6120 §6.4.1)
    SASL_CHALLENGE = "sasl-challenge"  # empty <challenge/> sent, expecting <response/> (RFC 6120 §6.4.2)
    SASL_PENDING = "sasl-pending"  # the adapter's authenticator decides
    WAIT_BIND = "wait-bind"  # authenticated; resource binding offered (RFC 6120 §7.4)
    BIND_PENDING = "bind-pending"  # the adapter re-checks the credentials before the session exists
    SESSION = "session"  # a full JID is bound: stanzas flow (RFC 6120 §8)
    CLOSED = "closed"


# States in which the core parses nothing and holds the client's bytes until the adapter answers.
WAITING_FOR_ADAPTER = frozenset({State.WAIT_TLS, State.SASL_PENDING, State.BIND_PENDING})

# States before the session exists: a stanza there is `not-authorized` (RFC 6120 §4.9.3.12).
BEFORE_SESSION = frozenset(
    {State.WAIT_STREAM, State.WAIT_STARTTLS, State.WAIT_AUTH, State.SASL_CHALLENGE, State.WAIT_BIND}
)

# state -> {element: name of the C2SConnection method that handles it}
ACCEPTED: dict[State, dict[str, str]] = {
    State.WAIT_STREAM: {},  # only a header, which the parser reports apart
    State.WAIT_STARTTLS: {
        ns.STARTTLS: "_on_starttls",  # RFC 6120 §5.4.2.1
        ns.AUTH: "_on_auth",  # allowed unless STARTTLS is required (then refused: encryption-required)
        ns.ABORT: "_on_abort",
    },
    State.WAIT_TLS: {},
    State.WAIT_AUTH: {
        ns.AUTH: "_on_auth",  # RFC 6120 §6.4.2
        ns.ABORT: "_on_abort",  # RFC 6120 §6.4.4
        ns.STARTTLS: "_on_starttls_refused",  # TLS is already on, or was not offered
    },
    State.SASL_CHALLENGE: {
        ns.RESPONSE: "_on_response",  # RFC 6120 §6.4.3
        ns.ABORT: "_on_abort",
    },
    State.SASL_PENDING: {},
    State.WAIT_BIND: {
        ns.IQ: "_on_iq_before_bind",  # only <iq type='set'><bind/></iq> (RFC 6120 §7.6)
    },
    State.BIND_PENDING: {},
    State.SESSION: {
        ns.IQ: "_on_iq",
        ns.MESSAGE: "_on_routed",
        ns.PRESENCE: "_on_routed",
    },
    State.CLOSED: {},
}
