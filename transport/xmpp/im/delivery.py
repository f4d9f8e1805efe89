"""Where a stanza addressed to a local account goes: RFC 6121 §8.5 as pure functions.

Spec: RFC 6121 §8.5.1 (no such account), §8.5.2 (bare JID: §8.5.2.1 available resources, §8.5.2.2 none),
§8.5.3 (full JID: §8.5.3.1 the resource exists, §8.5.3.2 it does not). The inputs are the account's live
sessions as (resource, priority, available); the answer is a :class:`Decision`.

Choices where the RFC leaves one: `normal` messages go to every available resource sharing the highest
non-negative priority; `chat` and `headline` go to every available resource of non-negative priority; a
message to an unknown account is answered with `service-unavailable` (the issue asks for errors).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    """One live session of the account: ``available`` once it has sent available presence (RFC 6121 §4.2)."""

    resource: str
    priority: int = 0
    available: bool = False


class Action(enum.Enum):
    DELIVER = "deliver"  # to ``resources``
    STORE = "store"  # offline storage (XEP-0160)
    ERROR = "error"  # bounce ``condition`` to the sender
    DROP = "drop"  # silently ignore
    SERVER = "server"  # the server answers on the account's behalf (RFC 6121 §8.5.2.1.3)


@dataclass(frozen=True)
class Decision:
    action: Action
    resources: tuple[str, ...] = field(default=())
    condition: str | None = None


SERVICE_UNAVAILABLE = "service-unavailable"
DROP = Decision(Action.DROP)
STORE = Decision(Action.STORE)
BOUNCE = Decision(Action.ERROR, condition=SERVICE_UNAVAILABLE)

MESSAGE_TYPES = ("normal", "chat", "groupchat", "headline", "error")
PRESENCE_SUBSCRIPTION = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


def message_type(raw: str | None) -> str:
    """RFC 6121 §5.2.2: no type, or one we do not know, is `normal`."""
    return raw if raw in MESSAGE_TYPES else "normal"


def _non_negative(sessions: Sequence[Resource]) -> list[Resource]:
    return [s for s in sessions if s.available and s.priority >= 0]


def _find(sessions: Sequence[Resource], resource: str) -> Resource | None:
    return next((s for s in sessions if s.resource == resource), None)


# == messages ============================================================================================


def message_to_bare(kind: str | None, sessions: Sequence[Resource]) -> Decision:
    """A message to ``user@domain`` of an existing account (RFC 6121 §8.5.2.1.1 and §8.5.2.2.1)."""
    kind = message_type(kind)
    if kind == "error":
        return DROP  # §8.5.2.1.1 / §8.5.2.2.1: errors are silently ignored
    if kind == "groupchat":
        return BOUNCE  # §8.5.2.1.1: no groupchat to a bare account JID
    candidates = _non_negative(sessions)
    if not candidates:
        # §8.5.2.2.1: normal and chat are stored offline (XEP-0160); headline is dropped.
        return DROP if kind == "headline" else STORE
    if kind == "normal":
        top = max(s.priority for s in candidates)
        candidates = [s for s in candidates if s.priority == top]  # §8.5.2.1.1: the highest priority
    return Decision(Action.DELIVER, tuple(s.resource for s in candidates))


def message_to_full(kind: str | None, resource: str, sessions: Sequence[Resource]) -> Decision:
    """A message to ``user@domain/resource`` of an existing account (RFC 6121 §8.5.3)."""
    kind = message_type(kind)
    if _find(sessions, resource) is not None:
        return Decision(Action.DELIVER, (resource,))  # §8.5.3.1
    if kind == "error":
        return DROP  # §8.5.3.2.1
    if kind == "groupchat":
        return BOUNCE  # §8.5.3.2.1
    return message_to_bare(kind, sessions)  # §8.5.3.2.1: normal, chat, headline as if to the bare JID


# == presence ============================================================================================


def presence_to_bare(kind: str | None, sessions: Sequence[Resource]) -> Decision:
    """Presence to ``user@domain`` (RFC 6121 §8.5.2.1.2, §8.5.2.2.2): every available resource.

    Subscription stanzas with no available resource are kept by the roster's pending state (§3.1.3), which
    the caller stores: that is :attr:`Action.STORE` here.
    """
    if kind == "probe":
        return Decision(Action.SERVER)  # §4.3.2: the server answers probes from the sessions it holds
    available = tuple(s.resource for s in sessions if s.available)
    if available:
        return Decision(Action.DELIVER, available)
    if kind in PRESENCE_SUBSCRIPTION:
        return STORE
    return DROP  # §8.5.2.2.2


def presence_to_full(kind: str | None, resource: str, sessions: Sequence[Resource]) -> Decision:
    """Presence to ``user@domain/resource`` (RFC 6121 §8.5.3.1, §8.5.3.2.2)."""
    if kind in PRESENCE_SUBSCRIPTION or kind == "probe":
        return presence_to_bare(kind, sessions)  # §8.5.3.2.2 / §3.1.3: handled for the bare JID
    if _find(sessions, resource) is not None:
        return Decision(Action.DELIVER, (resource,))
    return DROP  # §8.5.3.2.2: available/unavailable/error to a missing resource


# == IQ ==================================================================================================


def iq_to_bare(kind: str | None) -> Decision:
    """An IQ to ``user@domain`` is the server's to answer on the user's behalf (RFC 6121 §8.5.2.1.3)."""
    if kind in ("result", "error"):
        return DROP
    return Decision(Action.SERVER)


def iq_to_full(kind: str | None, resource: str, sessions: Sequence[Resource]) -> Decision:
    """An IQ to a full JID: that session, else `service-unavailable` (RFC 6121 §8.5.3.1, §8.5.3.2.3)."""
    if _find(sessions, resource) is not None:
        return Decision(Action.DELIVER, (resource,))
    if kind in ("result", "error"):
        return DROP
    return BOUNCE


# == no such account =====================================================================================


def to_unknown_account(stanza: str, kind: str | None) -> Decision:
    """RFC 6121 §8.5.1: no account at that address."""
    if stanza == "presence":
        return DROP  # §8.5.1: presence, of any type, is silently ignored
    if kind in ("error", "result"):
        return DROP
    return BOUNCE  # message and IQ get service-unavailable


def decide(stanza: str, kind: str | None, resource: str | None, sessions: Sequence[Resource]) -> Decision:
    """The decision for a stanza of an existing account (``stanza`` is message, presence or iq)."""
    if stanza == "message":
        return (
            message_to_bare(kind, sessions) if resource is None else message_to_full(kind, resource, sessions)
        )
    if stanza == "presence":
        return (
            presence_to_bare(kind, sessions)
            if resource is None
            else presence_to_full(kind, resource, sessions)
        )
    return iq_to_bare(kind) if resource is None else iq_to_full(kind, resource, sessions)
