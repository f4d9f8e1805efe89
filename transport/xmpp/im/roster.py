"""Roster IQ payloads (``jabber:iq:roster``): parse a roster set, build items for results and pushes.

Spec: RFC 6121 §2.1 (syntax), §2.1.2.2 (ask), §2.1.5 (roster push), §2.3.2 / §2.5 (set and remove errors).
Pure: ElementTree in, ElementTree or :class:`RosterSet` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement

from ..jid import InvalidJid, parse_jid

NS = "jabber:iq:roster"
QUERY = f"{{{NS}}}query"
ITEM = f"{{{NS}}}item"
GROUP = f"{{{NS}}}group"
MAX_NAME = 1023  # our limit on item names and group names (RFC 6121 §2.3.3: the server MAY limit)


@dataclass(frozen=True)
class RosterSet:
    """What a roster set asks for: update ``jid``'s name and groups, or remove it."""

    jid: str
    name: str | None
    groups: tuple[str, ...]
    remove: bool


class RosterSetError(ValueError):
    """A roster set the server refuses; ``condition`` is the stanza error (RFC 6121 §2.3.3)."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition


def parse_set(query: Element, owner: str) -> RosterSet:
    """The one item of a roster set from ``owner`` (a bare JID)."""
    items = query.findall(ITEM)
    if len(items) != 1:
        raise RosterSetError("bad-request", "a roster set carries exactly one item")  # §2.3.3
    item = items[0]
    try:
        jid = parse_jid(item.get("jid", ""))
    except InvalidJid as exc:
        raise RosterSetError("bad-request", f"item jid: {exc}") from None
    if jid.resource is not None:
        raise RosterSetError("bad-request", "roster items are bare JIDs")
    if jid.bare == owner:
        raise RosterSetError("not-allowed", "an account cannot be on its own roster")
    if item.get("subscription") == "remove":
        return RosterSet(jid.bare, None, (), True)  # §2.5.2
    name = item.get("name")
    groups = [(g.text or "").strip() for g in item.findall(GROUP)]
    if any(not g for g in groups):
        raise RosterSetError("not-acceptable", "an empty group name")  # §2.3.3
    if len(set(groups)) != len(groups):
        raise RosterSetError("bad-request", "a group is named twice")  # §2.3.3
    if (name and len(name) > MAX_NAME) or any(len(g) > MAX_NAME for g in groups):
        raise RosterSetError("not-acceptable", "a name is too long")
    # §2.1.2.5: any subscription value other than 'remove' in a set is ignored.
    return RosterSet(jid.bare, name, tuple(groups), False)


def item_element(
    jid: str,
    *,
    name: str | None = None,
    groups: tuple[str, ...] | list[str] = (),
    subscription: str = "none",
    ask: bool = False,
) -> Element:
    """One ``<item/>`` as results and pushes carry it (RFC 6121 §2.1.2)."""
    item = Element(ITEM, {"jid": jid, "subscription": subscription})
    if name:
        item.set("name", name)
    if ask:
        item.set("ask", "subscribe")  # §2.1.2.2: Pending Out
    for group in groups:
        SubElement(item, GROUP).text = group
    return item


def query_element(items: list[Element]) -> Element:
    query = Element(QUERY)
    query.extend(items)
    return query
