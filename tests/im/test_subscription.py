"""RFC 6121 Appendix A: every state × every subscription stanza, outbound and inbound."""

from __future__ import annotations

import pytest

from transport.xmpp.im import subscription as s
from transport.xmpp.im.subscription import (
    ALL_STATES,
    BOTH,
    FROM,
    FROM_OUT,
    KINDS,
    NONE,
    NONE_IN,
    NONE_OUT,
    NONE_OUT_IN,
    TO,
    TO_IN,
    inbound,
    outbound,
)


def test_both_tables_cover_every_state_and_kind_and_nothing_else():
    expected = {(state, kind) for state in ALL_STATES for kind in KINDS}
    assert set(s.OUTBOUND) == expected
    assert set(s.INBOUND) == expected


# (state, kind, new state) from RFC 6121 A.2.1-A.2.4, transcribed independently of the module's table.
OUTBOUND_CASES = [
    (NONE, "subscribe", NONE_OUT),
    (NONE_IN, "subscribe", NONE_OUT_IN),
    (FROM, "subscribe", FROM_OUT),
    (TO, "subscribe", TO),
    (BOTH, "subscribe", BOTH),
    (NONE_OUT, "unsubscribe", NONE),
    (NONE_OUT_IN, "unsubscribe", NONE_IN),
    (TO, "unsubscribe", NONE),
    (TO_IN, "unsubscribe", NONE_IN),
    (FROM_OUT, "unsubscribe", FROM),
    (BOTH, "unsubscribe", FROM),
    (FROM, "unsubscribe", FROM),
    (NONE_IN, "subscribed", FROM),
    (NONE_OUT_IN, "subscribed", FROM_OUT),
    (TO_IN, "subscribed", BOTH),
    (NONE, "subscribed", NONE),
    (BOTH, "subscribed", BOTH),
    (NONE_IN, "unsubscribed", NONE),
    (NONE_OUT_IN, "unsubscribed", NONE_OUT),
    (TO_IN, "unsubscribed", TO),
    (FROM, "unsubscribed", NONE),
    (FROM_OUT, "unsubscribed", NONE_OUT),
    (BOTH, "unsubscribed", TO),
    (TO, "unsubscribed", TO),
]


@pytest.mark.parametrize(("state", "kind", "new"), OUTBOUND_CASES, ids=lambda v: str(v))
def test_outbound_stanza_moves_the_senders_item_as_appendix_a2_says(state, kind, new):
    assert outbound(state, kind).state == new


INBOUND_CASES = [
    (NONE, "subscribe", NONE_IN, True),
    (NONE_OUT, "subscribe", NONE_OUT_IN, True),
    (TO, "subscribe", TO_IN, True),
    (NONE_IN, "subscribe", NONE_IN, False),
    (TO_IN, "subscribe", TO_IN, False),
    (NONE_IN, "unsubscribe", NONE, True),
    (NONE_OUT_IN, "unsubscribe", NONE_OUT, True),
    (TO_IN, "unsubscribe", TO, True),
    (FROM, "unsubscribe", NONE, True),
    (FROM_OUT, "unsubscribe", NONE_OUT, True),
    (BOTH, "unsubscribe", TO, True),
    (NONE, "unsubscribe", NONE, False),
    (TO, "unsubscribe", TO, False),
    (NONE_OUT, "subscribed", TO, True),
    (NONE_OUT_IN, "subscribed", TO_IN, True),
    (FROM_OUT, "subscribed", BOTH, True),
    (NONE, "subscribed", NONE, False),
    (FROM, "subscribed", FROM, False),
    (BOTH, "subscribed", BOTH, False),
    (NONE_OUT, "unsubscribed", NONE, True),
    (NONE_OUT_IN, "unsubscribed", NONE_IN, True),
    (TO, "unsubscribed", NONE, True),
    (TO_IN, "unsubscribed", NONE_IN, True),
    (FROM_OUT, "unsubscribed", FROM, True),
    (BOTH, "unsubscribed", FROM, True),
    (NONE, "unsubscribed", NONE, False),
    (FROM, "unsubscribed", FROM, False),
]


@pytest.mark.parametrize(("state", "kind", "new", "deliver"), INBOUND_CASES, ids=lambda v: str(v))
def test_inbound_stanza_moves_the_recipients_item_as_appendix_a3_says(state, kind, new, deliver):
    outcome = inbound(state, kind)
    assert (outcome.state, outcome.forward) == (new, deliver)


@pytest.mark.parametrize("state", [FROM, FROM_OUT, BOTH], ids=str)
def test_subscribe_from_an_already_approved_contact_is_answered_subscribed_by_the_server(state):
    outcome = inbound(state, "subscribe")
    assert outcome.auto_reply == "subscribed" and not outcome.forward and outcome.state == state


@pytest.mark.parametrize("state", [NONE, NONE_OUT, NONE_IN, TO, TO_IN], ids=str)
def test_subscribe_from_a_contact_not_approved_gets_no_automatic_answer(state):
    assert inbound(state, "subscribe").auto_reply is None


@pytest.mark.parametrize("state", ALL_STATES, ids=str)
def test_outbound_subscribe_and_unsubscribe_are_always_routed(state):
    assert outbound(state, "subscribe").forward and outbound(state, "unsubscribe").forward


@pytest.mark.parametrize("kind", ["subscribed", "unsubscribed"])
@pytest.mark.parametrize("state", ALL_STATES, ids=str)
def test_outbound_subscribed_and_unsubscribed_are_routed_only_when_they_change_the_state(state, kind):
    outcome = outbound(state, kind)
    assert outcome.forward == outcome.changed(state)


def test_a_full_handshake_ends_in_both_on_each_side():
    alice, bob = NONE, NONE
    alice = outbound(alice, "subscribe").state  # alice asks bob
    bob = inbound(bob, "subscribe").state
    bob = outbound(bob, "subscribed").state  # bob approves
    alice = inbound(alice, "subscribed").state
    bob = outbound(bob, "subscribe").state  # and asks back
    alice = inbound(alice, "subscribe").state
    alice = outbound(alice, "subscribed").state
    bob = inbound(bob, "subscribed").state
    assert alice == BOTH and bob == BOTH


def test_unknown_presence_type_is_refused():
    with pytest.raises(s.UnknownSubscriptionStanza):
        outbound(NONE, "probe")
    with pytest.raises(s.UnknownSubscriptionStanza):
        inbound(NONE, "available")


@pytest.mark.parametrize("state", ALL_STATES, ids=str)
def test_presence_flows_to_the_contact_only_with_from_or_both(state):
    assert s.sends_presence_to_contact(state) == (state.sub in (s.Sub.FROM, s.Sub.BOTH))
    assert s.receives_presence_from_contact(state) == (state.sub in (s.Sub.TO, s.Sub.BOTH))
