"""Routing between the sessions of one process while the database or Redis is unavailable (issue 16 point 4).

Specs: RFC 6121 §8.5 (where a stanza to a local account goes, ``transport.xmpp.im.delivery``), RFC 6120 §8.3
(a stanza that cannot be routed goes back to its sender with an error, never dropped in silence) and
§8.3.3.16 (``remote-server-timeout``: a service "needed to fulfill a request" could not be reached; its type
``wait`` tells the client to retry later).

Normally every routing decision reads the session registry in the database (``transport.im.router``); a
stanza for a session of this process is handed to it directly (``SessionBridge._send``, through this
module's table), one for another process's session or the router crosses the channel layer (Redis in
production). When one of them fails:

- the database: the decision is taken here against this process's own sessions (their resources and last
  broadcast presence); a stanza for anyone else is bounced with ``remote-server-timeout``;
- the channel layer: a session of this process still gets its stanzas directly; one for the router
  channel (offline storage) is routed by this process (``transport.im.bridge``); one for a session of
  another process is bounced with ``remote-server-timeout``.

Roster, subscriptions and presence broadcasts need the database: they wait for it (a roster IQ is bounced, a
broadcast is not sent). Everything here runs on the event loop's thread.
"""

from __future__ import annotations

import logging
from typing import Any
from xml.etree.ElementTree import Element

from transport.im.router import Out, element_kind, presence_priority, stanza_message
from transport.xmpp import errors
from transport.xmpp.im import delivery
from transport.xmpp.im.delivery import Action, Resource
from transport.xmpp.jid import InvalidJid, parse_jid

logger = logging.getLogger(__name__)

UNREACHABLE = "remote-server-timeout"  # RFC 6120 §8.3.3.16
UNREACHABLE_TYPE = "wait"  # RFC 6120 §8.3.2: retry after waiting
TEXT_NO_DATABASE = "the session registry (database) is unavailable; try again later"
TEXT_NO_LAYER = "the recipient's server process cannot be reached (channel layer down); try again later"

_bridges: dict[str, Any] = {}  # channel name -> the SessionBridge of this process that reads it


def register(bridge: Any) -> None:
    _bridges[bridge.channel_name] = bridge


def unregister(bridge: Any) -> None:
    if _bridges.get(bridge.channel_name) is bridge:
        del _bridges[bridge.channel_name]


def by_channel(channel: str) -> Any:
    """The session of this process that reads ``channel`` (None: another process's, or the router's)."""
    return _bridges.get(channel)


def bounce(element: Element, text: str) -> dict[str, Any] | None:
    """The ``remote-server-timeout`` error for ``element``'s sender, as a channel message; None for what is
    never answered (errors and results, RFC 6120 §8.3.1; broadcast and unavailable presence, RFC 6121 §4)."""
    kind, kind_type = element_kind(element), element.get("type")
    if not element.get("from") or kind_type in ("error", "result"):
        return None
    if kind == "presence" and kind_type in (None, "unavailable", "probe"):
        return None
    reply = errors.stanza_error_reply(element, UNREACHABLE, text, UNREACHABLE_TYPE)
    return stanza_message(reply)


def route_without_database(element: Element, sender: Any) -> list[Out]:
    """Where ``element`` from ``sender`` (a SessionBridge) goes when the registry cannot be read: RFC 6121
    §8.5 against this process's sessions only; what they cannot take is bounced to the sender."""
    to = element.get("to")
    kind = element_kind(element)
    if kind == "presence" and not to:
        logger.warning("%s: presence not broadcast: the database is unavailable", sender.full_jid)
        return []
    try:
        target = parse_jid(to or sender.bare_jid)
    except InvalidJid:
        return []  # the core already answered jid-malformed
    local = [b for b in _bridges.values() if b.bare_jid.lower() == target.bare.lower()]
    resources = [
        Resource(
            b.full_jid.split("/", 1)[1],
            presence_priority(b.presence) if b.presence is not None else 0,
            b.presence is not None,
        )
        for b in local
    ]
    decision = delivery.decide(kind, element.get("type"), target.resource, resources)
    if decision.action is Action.DELIVER:
        wanted = set(decision.resources)
        message = stanza_message(element)
        return [(b.channel_name, message) for b in local if b.full_jid.split("/", 1)[1] in wanted]
    answer = bounce(element, TEXT_NO_DATABASE)
    if answer is None:
        return []
    logger.info("%s: a %s to %s bounced: the database is unavailable", sender.full_jid, kind, to or "itself")
    return [(sender.channel_name, answer)]
