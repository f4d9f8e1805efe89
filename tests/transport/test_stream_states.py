"""The c2s state machine's transition table (transport/xmpp/states.py), after h11's ``_state.py``.

Every (state, trigger) pair the table does not hold is refused with LocalProtocolError naming both; every pair
it holds is reached by a real connection driven with bytes and adapter verdicts; and nothing changes the state
except through the table.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from collections.abc import Callable

import pytest

from transport.xmpp import C2SConnection, IdentityDecision, LocalProtocolError, State, connection
from transport.xmpp.states import TRANSITIONS, Trigger, next_state

from .streamkit import AUTH_EXTERNAL, BIND, DOMAIN, HEADER, JULIET, STARTTLS, Facts, stream_settings

ABORT = "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
EMPTY_AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'/>"
RESPONSE = "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>"
PLAIN_AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>"

LEGAL = {(state, trigger) for state, row in TRANSITIONS.items() for trigger in row}
ILLEGAL = sorted(set(itertools.product(State, Trigger)) - LEGAL, key=lambda p: (p[0].name, p[1].name))


class Recording(C2SConnection):
    """A connection that notes every transition it makes (state before, trigger, state after)."""

    seen: set[tuple[State, Trigger]] = set()

    def _goto(self, trigger: Trigger) -> None:
        before = self.state
        super()._goto(trigger)
        type(self).seen.add((before, trigger))
        assert TRANSITIONS[before][trigger] is self.state


def starttls_conn() -> Recording:
    return Recording(stream_settings(tls_mode="starttls"))


def tls_conn(**overrides: object) -> Recording:
    conn = Recording(stream_settings(tls_mode="tls", **overrides))
    conn.tls_established(Facts(), True)
    return conn


def send(conn: C2SConnection, text: str) -> list[object]:
    return conn.receive_data(text.encode())


def opened(conn: Recording) -> Recording:
    send(conn, HEADER.format(to=DOMAIN))
    return conn


def in_wait_stream() -> Recording:
    return tls_conn()


def in_wait_starttls() -> Recording:
    return opened(starttls_conn())


def in_wait_tls() -> Recording:
    conn = in_wait_starttls()
    send(conn, STARTTLS)
    return conn


def in_wait_auth() -> Recording:
    return opened(tls_conn())


def in_sasl_challenge() -> Recording:
    conn = in_wait_auth()
    send(conn, EMPTY_AUTH.format("EXTERNAL"))
    return conn


def in_sasl_pending() -> Recording:
    conn = in_wait_auth()
    send(conn, AUTH_EXTERNAL.format("="))
    return conn


def in_wait_bind() -> Recording:
    conn = in_sasl_pending()
    conn.auth_result(IdentityDecision.accept(JULIET))
    return opened(conn)


def in_bind_pending() -> Recording:
    conn = in_wait_bind()
    send(conn, BIND.format(""))
    return conn


def in_session() -> Recording:
    conn = in_bind_pending()
    conn.bind_result(None)
    return conn


def in_closed() -> Recording:
    conn = in_session()
    conn.close()
    return conn


REACH: dict[State, Callable[[], Recording]] = {
    State.WAIT_STREAM: in_wait_stream,
    State.WAIT_STARTTLS: in_wait_starttls,
    State.WAIT_TLS: in_wait_tls,
    State.WAIT_AUTH: in_wait_auth,
    State.SASL_CHALLENGE: in_sasl_challenge,
    State.SASL_PENDING: in_sasl_pending,
    State.WAIT_BIND: in_wait_bind,
    State.BIND_PENDING: in_bind_pending,
    State.SESSION: in_session,
    State.CLOSED: in_closed,
}


@pytest.mark.parametrize("state", list(State))
def test_each_state_is_reached_by_bytes_and_verdicts(state):
    assert REACH[state]().state is state


@pytest.mark.parametrize(("state", "trigger"), ILLEGAL, ids=lambda v: v.name)
def test_every_illegal_transition_is_refused_naming_state_and_trigger(state, trigger):
    with pytest.raises(LocalProtocolError) as refused:
        next_state(state, trigger)
    assert state.name in str(refused.value) and trigger.name in str(refused.value)


@pytest.mark.parametrize(("state", "trigger"), ILLEGAL, ids=lambda v: v.name)
def test_a_connection_refuses_an_illegal_transition_and_keeps_its_state(state, trigger):
    conn = REACH[state]()
    with pytest.raises(LocalProtocolError, match=f"{trigger.name} is not allowed in state {state.name}"):
        conn._goto(trigger)
    assert conn.state is state


def test_every_legal_transition_is_reached():
    Recording.seen = set()
    # The happy path over STARTTLS: every restart, both adapter waits, the session, the end.
    conn = in_wait_tls()
    conn.tls_established(Facts(), True)  # TLS_ESTABLISHED
    opened(conn)  # OFFER_SASL from WAIT_STREAM
    send(conn, AUTH_EXTERNAL.format("="))  # SASL_REQUEST from WAIT_AUTH
    conn.auth_result(IdentityDecision.accept(JULIET))  # SASL_SUCCESS
    opened(conn)  # OFFER_BIND
    send(conn, BIND.format(""))  # BIND_REQUEST
    conn.bind_result(None)  # BIND_ACCEPTED
    # <auth/> before TLS fails and keeps STARTTLS on offer.
    send(in_wait_starttls(), AUTH_EXTERNAL.format("="))
    # SASL failures and aborts offer SASL again, from every SASL state.
    send(in_wait_auth(), ABORT)
    send(in_sasl_challenge(), ABORT)
    send(in_sasl_challenge(), RESPONSE)  # SASL_REQUEST from SASL_CHALLENGE
    in_sasl_pending().auth_result(IdentityDecision.refuse("not-authorized", "no"))
    # A password mechanism's next round: SASL_PENDING -> SASL_CHALLENGE.
    scram = tls_conn(sasl_mechanisms=("plain",), password_auth=True)
    opened(scram)
    send(scram, PLAIN_AUTH)
    scram.auth_result(IdentityDecision(challenge=b"more"))
    # Every state ends with a stream error, and every state sees its transport go away.
    for state, reach in REACH.items():
        if state is not State.CLOSED:
            reach().close_with_error("reset")
        reach().connection_lost()
    assert Recording.seen == LEGAL, sorted((s.name, t.name) for s, t in LEGAL - Recording.seen)


def test_the_state_is_read_only():
    conn = in_wait_stream()
    with pytest.raises(AttributeError):
        conn.state = State.SESSION  # type: ignore[misc]


def test_only_goto_assigns_the_state():
    """Rule 1 of states.py, read off the source: ``_state`` is set in ``__init__`` and ``_goto`` only."""
    tree = ast.parse(inspect.getsource(connection))
    setters = {
        function.name
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and target.attr in ("_state", "state")
    }
    assert setters == {"__init__", "_goto"}
