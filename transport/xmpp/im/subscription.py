"""Presence subscription states of one roster item and how subscription stanzas change them.

Spec: RFC 6121 §3 (managing presence subscriptions) and Appendix A (the subscription states; A.2 outbound
stanzas, processed on the sender's roster; A.3 inbound stanzas, processed on the recipient's roster).

Rule: every transition lives in the two tables below and nowhere else; the router only looks them up.
A state is the item's ``subscription`` (none / to / from / both) plus the two pending flags: ``ask`` (we
asked the contact: "Pending Out") and ``pending_in`` (the contact asked us: "Pending In").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Sub(enum.Enum):
    NONE = "none"
    TO = "to"  # the user receives the contact's presence
    FROM = "from"  # the contact receives the user's presence
    BOTH = "both"


@dataclass(frozen=True)
class State:
    """One of the nine states of RFC 6121 Appendix A.1."""

    sub: Sub = Sub.NONE
    pending_out: bool = False  # "ask='subscribe'" in roster pushes
    pending_in: bool = False

    def __str__(self) -> str:
        flags = [
            name for name, on in (("Pending Out", self.pending_out), ("Pending In", self.pending_in)) if on
        ]
        return self.sub.value.capitalize() + (" + " + "/".join(flags) if flags else "")


NONE = State()
NONE_OUT = State(Sub.NONE, pending_out=True)
NONE_IN = State(Sub.NONE, pending_in=True)
NONE_OUT_IN = State(Sub.NONE, pending_out=True, pending_in=True)
TO = State(Sub.TO)
TO_IN = State(Sub.TO, pending_in=True)
FROM = State(Sub.FROM)
FROM_OUT = State(Sub.FROM, pending_out=True)
BOTH = State(Sub.BOTH)

ALL_STATES = (NONE, NONE_OUT, NONE_IN, NONE_OUT_IN, TO, TO_IN, FROM, FROM_OUT, BOTH)
KINDS = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


@dataclass(frozen=True)
class Outcome:
    """The new state, whether to pass the stanza on, and (inbound) whether the server answers by itself."""

    state: State
    forward: bool  # outbound: route to the contact; inbound: deliver to the user's resources
    auto_reply: str | None = None  # inbound only: 'subscribed' when the contact is already approved

    def changed(self, before: State) -> bool:
        return self.state != before


# RFC 6121 Appendix A.2: the user sends ``kind`` to the contact; the user's roster item changes.
# Outbound subscribe and unsubscribe are always routed (§3.1.2, §3.3.2); subscribed and unsubscribed only
# when they change the state (§3.1.5, §3.2.2: "MUST NOT route" otherwise; we keep no pre-approvals).
OUTBOUND: dict[tuple[State, str], State] = {
    # A.2.1 subscribe
    (NONE, "subscribe"): NONE_OUT,
    (NONE_OUT, "subscribe"): NONE_OUT,
    (NONE_IN, "subscribe"): NONE_OUT_IN,
    (NONE_OUT_IN, "subscribe"): NONE_OUT_IN,
    (TO, "subscribe"): TO,
    (TO_IN, "subscribe"): TO_IN,
    (FROM, "subscribe"): FROM_OUT,
    (FROM_OUT, "subscribe"): FROM_OUT,
    (BOTH, "subscribe"): BOTH,
    # A.2.2 unsubscribe
    (NONE, "unsubscribe"): NONE,
    (NONE_OUT, "unsubscribe"): NONE,
    (NONE_IN, "unsubscribe"): NONE_IN,
    (NONE_OUT_IN, "unsubscribe"): NONE_IN,
    (TO, "unsubscribe"): NONE,
    (TO_IN, "unsubscribe"): NONE_IN,
    (FROM, "unsubscribe"): FROM,
    (FROM_OUT, "unsubscribe"): FROM,
    (BOTH, "unsubscribe"): FROM,
    # A.2.3 subscribed
    (NONE, "subscribed"): NONE,
    (NONE_OUT, "subscribed"): NONE_OUT,
    (NONE_IN, "subscribed"): FROM,
    (NONE_OUT_IN, "subscribed"): FROM_OUT,
    (TO, "subscribed"): TO,
    (TO_IN, "subscribed"): BOTH,
    (FROM, "subscribed"): FROM,
    (FROM_OUT, "subscribed"): FROM_OUT,
    (BOTH, "subscribed"): BOTH,
    # A.2.4 unsubscribed
    (NONE, "unsubscribed"): NONE,
    (NONE_OUT, "unsubscribed"): NONE_OUT,
    (NONE_IN, "unsubscribed"): NONE,
    (NONE_OUT_IN, "unsubscribed"): NONE_OUT,
    (TO, "unsubscribed"): TO,
    (TO_IN, "unsubscribed"): TO,
    (FROM, "unsubscribed"): NONE,
    (FROM_OUT, "unsubscribed"): NONE_OUT,
    (BOTH, "unsubscribed"): TO,
}
ALWAYS_ROUTED = frozenset({"subscribe", "unsubscribe"})

# RFC 6121 Appendix A.3: the contact's ``kind`` reaches the user; (new state, deliver to the user?).
# An inbound subscribe from a contact already allowed ("From"/"Both") is answered by the server with
# 'subscribed' on the user's behalf and not delivered (§3.1.3).
INBOUND: dict[tuple[State, str], tuple[State, bool]] = {
    # A.3.1 subscribe
    (NONE, "subscribe"): (NONE_IN, True),
    (NONE_OUT, "subscribe"): (NONE_OUT_IN, True),
    (NONE_IN, "subscribe"): (NONE_IN, False),
    (NONE_OUT_IN, "subscribe"): (NONE_OUT_IN, False),
    (TO, "subscribe"): (TO_IN, True),
    (TO_IN, "subscribe"): (TO_IN, False),
    (FROM, "subscribe"): (FROM, False),
    (FROM_OUT, "subscribe"): (FROM_OUT, False),
    (BOTH, "subscribe"): (BOTH, False),
    # A.3.2 unsubscribe
    (NONE, "unsubscribe"): (NONE, False),
    (NONE_OUT, "unsubscribe"): (NONE_OUT, False),
    (NONE_IN, "unsubscribe"): (NONE, True),
    (NONE_OUT_IN, "unsubscribe"): (NONE_OUT, True),
    (TO, "unsubscribe"): (TO, False),
    (TO_IN, "unsubscribe"): (TO, True),
    (FROM, "unsubscribe"): (NONE, True),
    (FROM_OUT, "unsubscribe"): (NONE_OUT, True),
    (BOTH, "unsubscribe"): (TO, True),
    # A.3.3 subscribed
    (NONE, "subscribed"): (NONE, False),
    (NONE_OUT, "subscribed"): (TO, True),
    (NONE_IN, "subscribed"): (NONE_IN, False),
    (NONE_OUT_IN, "subscribed"): (TO_IN, True),
    (TO, "subscribed"): (TO, False),
    (TO_IN, "subscribed"): (TO_IN, False),
    (FROM, "subscribed"): (FROM, False),
    (FROM_OUT, "subscribed"): (BOTH, True),
    (BOTH, "subscribed"): (BOTH, False),
    # A.3.4 unsubscribed
    (NONE, "unsubscribed"): (NONE, False),
    (NONE_OUT, "unsubscribed"): (NONE, True),
    (NONE_IN, "unsubscribed"): (NONE_IN, False),
    (NONE_OUT_IN, "unsubscribed"): (NONE_IN, True),
    (TO, "unsubscribed"): (NONE, True),
    (TO_IN, "unsubscribed"): (NONE_IN, True),
    (FROM, "unsubscribed"): (FROM, False),
    (FROM_OUT, "unsubscribed"): (FROM, True),
    (BOTH, "unsubscribed"): (FROM, True),
}


class UnknownSubscriptionStanza(ValueError):
    """A presence type that is not one of the four subscription types."""


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise UnknownSubscriptionStanza(f"presence type {kind!r} is not one of {', '.join(KINDS)}")


def outbound(state: State, kind: str) -> Outcome:
    """The user sends ``kind`` to the contact (RFC 6121 Appendix A.2)."""
    _check(kind)
    new = OUTBOUND[(state, kind)]
    return Outcome(new, forward=kind in ALWAYS_ROUTED or new != state)


def inbound(state: State, kind: str) -> Outcome:
    """The contact's ``kind`` arrives for the user (RFC 6121 Appendix A.3)."""
    _check(kind)
    new, deliver = INBOUND[(state, kind)]
    already_allowed = kind == "subscribe" and state.sub in (Sub.FROM, Sub.BOTH)
    return Outcome(new, forward=deliver, auto_reply="subscribed" if already_allowed else None)


def sends_presence_to_contact(state: State) -> bool:
    """The contact gets the user's presence broadcasts (RFC 6121 §4.2.2: subscription 'from' or 'both')."""
    return state.sub in (Sub.FROM, Sub.BOTH)


def receives_presence_from_contact(state: State) -> bool:
    """The user probes the contact at login (RFC 6121 §4.3: subscription 'to' or 'both')."""
    return state.sub in (Sub.TO, Sub.BOTH)
