"""The c2s stream's state machine: its states, the triggers that move it, and one table of transitions.

Spec: RFC 6120 §4.3 (stream negotiation: TLS, then SASL, then resource binding, each after a restart).

Rule 1: every state change of a :class:`~transport.xmpp.connection.C2SConnection` is a (state, trigger)
pair of :data:`TRANSITIONS` and goes through :func:`next_state` (the connection's ``_goto``); nothing else
assigns a state. A pair the table does not hold is a bug in the core or its adapter and raises
:class:`~transport.xmpp.events.LocalProtocolError` naming the state and the trigger.
Rule 2: this file knows nothing of elements or bytes. Which element a state accepts, and which trigger its
handler fires, is ``connection.py``'s (``ACCEPTED``); what the client sees of a refusal is ``errors.py``'s.

Theory of operation. A stream waits for a header (``WAIT_STREAM``), answers with features, and the trigger
says what the features offer: STARTTLS (``WAIT_STARTTLS``), SASL only (``WAIT_AUTH``), or, once
authenticated, resource binding (``WAIT_BIND``). TLS and SASL success each restart the stream, so the
machine comes back to ``WAIT_STREAM`` twice. Three states wait for the adapter (``WAIT_TLS``,
``SASL_PENDING``, ``BIND_PENDING``): the core holds the client's input there until the adapter calls back.
A SASL failure offers SASL again, so the client may retry (RFC 6120 §6.4.5); before TLS no mechanism is
offered, so ``<auth/>`` there fails and STARTTLS stays on offer::

    WAIT_STREAM --OFFER_STARTTLS--> WAIT_STARTTLS --STARTTLS--> WAIT_TLS --TLS_ESTABLISHED--> WAIT_STREAM
    WAIT_STREAM --OFFER_SASL--> WAIT_AUTH --SASL_REQUEST--> SASL_PENDING --SASL_SUCCESS--> WAIT_STREAM
                                WAIT_AUTH --SASL_CHALLENGE--> SASL_CHALLENGE --SASL_REQUEST--> SASL_PENDING
                                          SASL_PENDING --SASL_CHALLENGE--> SASL_CHALLENGE (SCRAM's rounds)
                   SASL_PENDING / SASL_CHALLENGE / WAIT_AUTH --OFFER_SASL--> WAIT_AUTH (a failure, a retry)
    WAIT_STREAM --OFFER_BIND--> WAIT_BIND --BIND_REQUEST--> BIND_PENDING --BIND_ACCEPTED--> SESSION
    any state but CLOSED --CLOSE--> CLOSED;  any state --CONNECTION_LOST--> CLOSED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .events import LocalProtocolError


class State(enum.Enum):
    # Members are singletons compared by identity: hashed by identity too, in C, instead of Enum's Python
    # __hash__ (hash of the name), which every table lookup and ``in`` test paid (issue 17 §6).
    __hash__ = object.__hash__

    WAIT_STREAM = "wait-stream"  # expecting a stream header (initially and after each restart)
    WAIT_STARTTLS = "wait-starttls"  # STARTTLS offered (RFC 6120 §5.4.1)
    WAIT_TLS = "wait-tls"  # <proceed/> sent; the adapter runs the TLS handshake
    WAIT_AUTH = "wait-auth"  # SASL mechanisms offered (RFC 6120 §6.4.1)
    SASL_CHALLENGE = "sasl-challenge"  # a <challenge/> sent, expecting <response/> (RFC 6120 §6.4.3)
    SASL_PENDING = "sasl-pending"  # the adapter's authenticator decides
    WAIT_BIND = "wait-bind"  # authenticated; resource binding offered (RFC 6120 §7.4)
    BIND_PENDING = "bind-pending"  # the adapter re-checks the credentials before the session exists
    SESSION = "session"  # a full JID is bound: stanzas flow (RFC 6120 §8)
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What moves the machine: something the client sent, the core answered, or the adapter reported."""

    __hash__ = object.__hash__  # as State's

    OFFER_STARTTLS = "features offering STARTTLS sent (after a header, or again after a SASL failure)"
    OFFER_SASL = "features offering SASL only sent (after a header, or again after a SASL failure)"
    OFFER_BIND = "features offering resource binding sent (the header after SASL success)"
    STARTTLS = "<proceed/> sent (RFC 6120 §5.4.2.3)"
    TLS_ESTABLISHED = "the adapter finished the TLS handshake: the stream restarts (RFC 6120 §5.4.3.3)"
    SASL_CHALLENGE = "a <challenge/> sent (RFC 6120 §6.4.3)"
    SASL_REQUEST = "the client's SASL data handed to the adapter for a verdict"
    SASL_SUCCESS = "<success/> sent: the stream restarts (RFC 6120 §6.4.6)"
    BIND_REQUEST = "a bind request handed to the adapter (RFC 6120 §7.6)"
    BIND_ACCEPTED = "the adapter admitted the session: the bind result sent (RFC 6120 §7.6.1)"
    CLOSE = "the stream ended: a stream error, the client's or our closing tag (RFC 6120 §4.4, §4.9)"
    CONNECTION_LOST = "the transport went away"


# States in which the core parses nothing and holds the client's bytes until the adapter answers.
WAITING_FOR_ADAPTER = frozenset({State.WAIT_TLS, State.SASL_PENDING, State.BIND_PENDING})

# States before the session exists: a stanza there is `not-authorized` (RFC 6120 §4.9.3.12).
BEFORE_SESSION = frozenset(
    {State.WAIT_STREAM, State.WAIT_STARTTLS, State.WAIT_AUTH, State.SASL_CHALLENGE, State.WAIT_BIND}
)

_ENDS: dict[Trigger, State] = {Trigger.CLOSE: State.CLOSED, Trigger.CONNECTION_LOST: State.CLOSED}

# state -> {trigger: next state}: every legal transition, and only those.
TRANSITIONS: Mapping[State, Mapping[Trigger, State]] = {
    State.WAIT_STREAM: {
        Trigger.OFFER_STARTTLS: State.WAIT_STARTTLS,  # RFC 6120 §5.4.1
        Trigger.OFFER_SASL: State.WAIT_AUTH,  # RFC 6120 §6.4.1
        Trigger.OFFER_BIND: State.WAIT_BIND,  # RFC 6120 §7.4
        **_ENDS,
    },
    State.WAIT_STARTTLS: {
        Trigger.STARTTLS: State.WAIT_TLS,
        # <auth/> before TLS always fails: no mechanism is offered without TLS (RFC 6120 §13.8, DESIGN §4),
        # so no exchange starts here; the failure keeps STARTTLS on offer.
        Trigger.OFFER_STARTTLS: State.WAIT_STARTTLS,
        **_ENDS,
    },
    State.WAIT_TLS: {Trigger.TLS_ESTABLISHED: State.WAIT_STREAM, **_ENDS},
    State.WAIT_AUTH: {
        Trigger.SASL_CHALLENGE: State.SASL_CHALLENGE,  # no initial response (RFC 6120 §6.4.2)
        Trigger.SASL_REQUEST: State.SASL_PENDING,
        Trigger.OFFER_SASL: State.WAIT_AUTH,  # a SASL failure: the client may retry (RFC 6120 §6.4.5)
        **_ENDS,
    },
    State.SASL_CHALLENGE: {
        Trigger.SASL_REQUEST: State.SASL_PENDING,
        Trigger.OFFER_SASL: State.WAIT_AUTH,  # aborted or refused (RFC 6120 §6.4.4, §6.4.5)
        **_ENDS,
    },
    State.SASL_PENDING: {
        Trigger.SASL_CHALLENGE: State.SASL_CHALLENGE,  # a multi-step mechanism's next round (SCRAM)
        Trigger.SASL_SUCCESS: State.WAIT_STREAM,
        Trigger.OFFER_SASL: State.WAIT_AUTH,  # refused (RFC 6120 §6.4.5)
        **_ENDS,
    },
    State.WAIT_BIND: {Trigger.BIND_REQUEST: State.BIND_PENDING, **_ENDS},
    State.BIND_PENDING: {Trigger.BIND_ACCEPTED: State.SESSION, **_ENDS},
    State.SESSION: {**_ENDS},
    State.CLOSED: {Trigger.CONNECTION_LOST: State.CLOSED},  # nothing else happens after the end
}


def next_state(state: State, trigger: Trigger) -> State:
    """The state ``trigger`` leads to from ``state``; LocalProtocolError naming both if it is illegal."""
    try:
        return TRANSITIONS[state][trigger]
    except KeyError:
        raise LocalProtocolError(f"{trigger.name} is not allowed in state {state.name}") from None
