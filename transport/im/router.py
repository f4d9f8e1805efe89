"""The stanza router: applies RFC 6121 to the database and the session registry, and says what goes where.

Specs: RFC 6121 §2 (roster get/set/remove and pushes), §3 (subscriptions, with the table of
``transport.xmpp.im.subscription``), §4 (presence: initial presence, broadcast, probes, unavailable), §8.5
(delivery, with ``transport.xmpp.im.delivery``); XEP-0160 (offline messages, stamped with XEP-0203 delay);
RFC 6120 §8.3 (stanza errors).

Everything here is synchronous Django code, run in a worker thread. A call returns a list of :data:`Out`:
``(channel name, channel-layer message)`` pairs that the caller sends (``transport.im.bridge`` on the
listener's
event loop, :class:`RouterConsumer` through ``async_to_sync``). Two modes:

- ``final=False`` (listener processes, :class:`~transport.im.bridge.SessionBridge`): a stanza for a
  live session
  goes straight to that session's channel; whatever needs storage (an offline message, a subscription
  request to an account with no available resource) is handed to the router channel instead.
- ``final=True`` (the router: ``manage.py runworker xmpp.router``, or in-process without Redis): the same
  decisions, re-taken against the registry as it is now, and what is left is stored.

Channel-layer messages: to a session ``xmpp.stanza`` {xml}, ``xmpp.close`` {condition, text},
``xmpp.presence_request`` {to, reply_channel} (answer with your presence); to the router ``xmpp.route``
{xml, step: "stanza" | "inbound"}.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from xml.etree.ElementTree import Element, SubElement, fromstring, tostring

from asgiref.sync import async_to_sync
from channels.consumer import SyncConsumer
from channels.exceptions import ChannelFull
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from accounts import domains
from accounts.models import Account, OfflineMessage, RosterItem
from certauth import selfservice
from transport.sessions import terminations as store
from transport.sessions.models import LiveSession
from transport.xmpp import errors, saslcert
from transport.xmpp import namespaces as ns
from transport.xmpp.im import delivery, roster
from transport.xmpp.im import subscription as subs
from transport.xmpp.im.delivery import Action, Resource
from transport.xmpp.jid import InvalidJid, Jid, parse_jid
from xmppauth import fastsql, limits
from xmppauth.outage import DATABASE_UNAVAILABLE, OutageLog

logger = logging.getLogger(__name__)

# `manage.py runworker xmpp.router`; XMPPAUTH_ROUTER_CHANNEL names another (several deployments on one Redis).
ROUTER_CHANNEL = os.environ.get("XMPPAUTH_ROUTER_CHANNEL", "xmpp.router")
DELAY = "urn:xmpp:delay"  # XEP-0203
BROADCAST_TYPES = (None, "unavailable")

Out = tuple[str, dict[str, Any]]


# == wire format on the channel layer ====================================================================


def dump(element: Element) -> str:
    return tostring(element, encoding="unicode")


def load(xml: str) -> Element:
    """A stanza we serialised ourselves (``dump``): no DTD, namespaces in Clark notation."""
    return fromstring(xml)


def stanza_message(element: Element) -> dict[str, Any]:
    return {"type": "xmpp.stanza", "xml": dump(element)}


def route_message(element: Element, step: str = "stanza") -> dict[str, Any]:
    return {"type": "xmpp.route", "xml": dump(element), "step": step}


def close_message(condition: str, text: str = "") -> dict[str, Any]:
    return {"type": "xmpp.close", "condition": condition, "text": text}


def presence_request(to: str, reply_channel: str) -> dict[str, Any]:
    return {"type": "xmpp.presence_request", "to": to, "reply_channel": reply_channel}


# == the registry as the router sees it ==================================================================


@dataclass(frozen=True)
class Live:
    """A live session of the registry (``transport.sessions.models.LiveSession``) with a channel to reach
    it."""

    full_jid: str
    resource: str
    channel: str
    priority: int
    available: bool
    session_id: Any = None

    @property
    def as_resource(self) -> Resource:
        return Resource(self.resource, self.priority, self.available)


def live_sessions(bare_jid: str) -> list[Live]:
    """The account's sessions whose lease has not run out (a dead process's rows are ignored at once)."""
    return live_sessions_of([bare_jid])[bare_jid.lower()]


def live_sessions_of(bare_jids: Iterable[str]) -> dict[str, list[Live]]:
    """:func:`live_sessions` of several accounts in one query, by lower-case bare JID (every one present)."""
    found: dict[str, list[Live]] = {bare.lower(): [] for bare in bare_jids}
    if not found:
        return found
    rows = LiveSession.objects.filter(bare_jid__in=list(found), lease_expires_at__gte=timezone.now()).exclude(
        channel_name=""
    )
    for r in rows:
        live = Live(r.full_jid, r.resource, r.channel_name, r.priority or 0, bool(r.presence), r.id)
        found.setdefault(r.bare_jid.lower(), []).append(live)
    return found


def older_sessions(full_jid: str, session_id: Any, started_at: datetime | None = None) -> list[Live]:
    """Live sessions of ``full_jid`` that started before ``session_id``'s (RFC 6120 §7.7.2.2: the older goes).

    Comparing start times (then ids, for a tie) keeps two logins that race from ending each other. It runs at
    every bind, so it is one lean statement (xmppauth.fastsql); ``started_at`` saves reading our own row.
    """
    if started_at is None:
        started_at = LiveSession.objects.filter(id=session_id).values_list("started_at", flat=True).first()
        if started_at is None:
            return []
    model = LiveSession

    def build() -> str:
        c = partial(fastsql.column, model)
        return (
            f"SELECT {c('id')}, {c('full_jid')}, {c('resource')}, {c('channel_name')}, {c('priority')},"
            f" {c('presence')} FROM {fastsql.table(model)}"
            f" WHERE {c('bare_jid')} = %s AND {c('full_jid')} = %s"  # bare_jid is indexed, full_jid is not
            f" AND {c('lease_expires_at')} >= %s AND {c('id')} <> %s"
            f" AND ({c('started_at')} < %s OR ({c('started_at')} = %s AND {c('id')} < %s))"
        )

    mine = fastsql.param(model, "id", session_id)
    when = fastsql.param(model, "started_at", started_at)
    rows = fastsql.fetch_all(
        fastsql.statement("router.older_sessions", build),
        [
            full_jid.split("/", 1)[0].lower(),
            full_jid,
            fastsql.param(model, "lease_expires_at", timezone.now()),
            mine,
            when,
            when,
            mine,
        ],
    )
    return [
        Live(full, resource, channel, priority or 0, bool(presence), uuid.UUID(str(row_id)))
        for row_id, full, resource, channel, priority, presence in rows
    ]


def set_presence(session_id: Any, priority: int, show: str | None) -> None:
    """Record the session's presence (``show`` None: unavailable) in its registry row (RFC 6121 §4.7.2)."""
    LiveSession.objects.filter(id=session_id).update(priority=priority, presence=show or "")


def element_kind(element: Element) -> str:
    return ns.split_qname(element.tag)[1]


def presence_priority(presence: Element) -> int:
    """RFC 6121 §4.7.2.3: an integer -128..127, 0 when absent or invalid."""
    text = presence.findtext(ns.qname(ns.CLIENT, "priority"))
    try:
        value = int((text or "0").strip())
    except ValueError:
        return 0
    return max(-128, min(127, value))


def presence_show(presence: Element) -> str:
    """``show`` for the registry: away/chat/dnd/xa, or 'available' (RFC 6121 §4.7.2.1)."""
    show = (presence.findtext(ns.qname(ns.CLIENT, "show")) or "").strip()
    return show if show in ("away", "chat", "dnd", "xa") else "available"


class Router:
    """One routing decision per call; see the module docstring for ``final``."""

    def __init__(self, *, final: bool, router_channel: str = ROUTER_CHANNEL, process: str = "") -> None:
        self.final = final
        self.router_channel = router_channel
        self.process = process or store.process_id()

    # -- entry points ------------------------------------------------------------------------------------

    def from_client(self, stanza: Element, sender_channel: str, session: Any = None) -> list[Out]:
        """A stanza a local client sent (``from`` stamped with its full JID by the core); ``session``: the
        sender's ``SessionFacts`` (which certificate it logged in with), when the caller holds them."""
        kind = element_kind(stanza)
        if kind == "presence":
            return self._presence(stanza, sender_channel)
        if kind == "message":
            return self._message(stanza, sender_channel)
        if kind == "iq":
            return self._iq(stanza, sender_channel, session)
        return []

    def routed(self, message: dict[str, Any]) -> list[Out]:
        """An ``xmpp.route`` message on the router channel."""
        stanza = load(message["xml"])
        if message.get("step") == "inbound":
            return self._inbound_subscription(stanza)
        return self.from_client(stanza, "")

    # -- helpers -------------------------------------------------------------------------------------------

    def _account(self, bare: str) -> Account | None:
        """The account, remembered for :data:`CACHE_SECONDS` (one query less per routed stanza)."""
        return _cached(
            ("account", bare),
            lambda: (
                Account.objects.select_related("domain")
                .filter(localpart=bare.partition("@")[0], domain__name=bare.partition("@")[2].lower())
                .first()
            ),
        )

    def _hosted(self, domain: str) -> bool:
        return domains.is_hosted(domain, settings.XMPP.hosts)  # config hosts minus disabled rows

    def _sender_channel(self, sender: str, given: str) -> str | None:
        if given:
            return given
        return next((s.channel for s in live_sessions(sender.split("/")[0]) if s.full_jid == sender), None)

    def _error(self, stanza: Element, condition: str, sender_channel: str, text: str = "") -> list[Out]:
        """Bounce ``condition`` to the sender (never for errors or results: RFC 6120 §8.3.1)."""
        if stanza.get("type") in ("error", "result") or not stanza.get("from"):
            return []
        channel = self._sender_channel(stanza.get("from", ""), sender_channel)
        if channel is None:
            return []
        return [(channel, stanza_message(errors.stanza_error_reply(stanza, condition, text)))]

    def _forward(self, stanza: Element, step: str = "stanza") -> list[Out]:
        return [(self.router_channel, route_message(stanza, step))]

    @staticmethod
    def _to_channels(sessions: Iterable[Live], resources: Iterable[str], stanza: Element) -> list[Out]:
        wanted = set(resources)
        message = stanza_message(stanza)
        return [(s.channel, message) for s in sessions if s.resource in wanted]

    # -- messages (RFC 6121 §5, §8.5) ----------------------------------------------------------------------

    def _message(self, stanza: Element, sender_channel: str) -> list[Out]:
        sender = parse_jid(stanza.get("from", ""))
        to = self._target(stanza, sender)
        if to is None:
            return []
        if not self._hosted(to.domain):
            return self._error(stanza, "remote-server-not-found", sender_channel, "no server-to-server")
        if self._account(to.bare) is None:
            decision = delivery.to_unknown_account("message", stanza.get("type"))  # RFC 6121 §8.5.1
            if decision.action is Action.ERROR:
                return self._error(stanza, decision.condition or "", sender_channel)
            return []
        sessions = live_sessions(to.bare)
        decision = delivery.decide(
            "message", stanza.get("type"), to.resource, [s.as_resource for s in sessions]
        )
        if decision.action is Action.DELIVER:
            return self._to_channels(sessions, decision.resources, stanza)
        if decision.action is Action.ERROR:
            return self._error(stanza, decision.condition or "", sender_channel)
        if decision.action is Action.STORE:
            if not self.final:
                return self._forward(stanza)
            if not self._store_offline(to.bare, stanza):
                # MongooseIM mod_offline access_max_user_messages; XEP-0160 §3: service-unavailable
                return self._error(stanza, "service-unavailable", sender_channel, "offline storage is full")
        return []

    def _target(self, stanza: Element, sender: Jid) -> Jid | None:
        to = stanza.get("to")
        if not to:
            return parse_jid(sender.bare)  # RFC 6120 §8.1.1.1: no `to` is the sender's own account
        try:
            return parse_jid(to)
        except InvalidJid:
            return None  # the core already answered jid-malformed

    def _store_offline(self, bare: str, stanza: Element) -> bool:
        """XEP-0160 §3: keep it, stamped with when it arrived (XEP-0203); False when the account already has
        ``[xmppauth] max_offline_messages`` stored (the caller bounces it)."""
        account = self._account(bare)
        if account is None:
            return True
        limit = limits.option("max_offline_messages")
        if OfflineMessage.objects.filter(account=account).count() >= limit:
            logger.warning("router %s: offline storage of %s full (%d): bounced", self.process, bare, limit)
            return False
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        SubElement(stanza, f"{{{DELAY}}}delay", {"from": account.domain.name, "stamp": stamp})
        OfflineMessage.objects.create(
            account=account, stanza=dump(stanza), sender=stanza.get("from", ""), stored_by=self.process
        )
        logger.info("router %s: stored an offline message for %s", self.process, bare)
        return True

    def offline_messages(self, full_jid: str, channel: str) -> list[Out]:
        """XEP-0160 §3: the stored messages, for the session that just became available.

        They stay in the store: each carries its ``offline_id``, and the session deletes it only once its
        stream has taken the stanza (:func:`offline_delivered`), so a crash in between loses nothing (two
        resources becoming available at the same moment may both get a message: a duplicate, never a loss).
        """
        account = self._account(full_jid.split("/")[0])
        if account is None:
            return []
        rows = list(OfflineMessage.objects.filter(account=account).order_by("id").values_list("id", "stanza"))
        if rows:
            logger.info("delivering %d offline message(s) to %s", len(rows), full_jid)
        return [(channel, {"type": "xmpp.stanza", "xml": xml, "offline_id": pk}) for pk, xml in rows]

    # -- IQs (RFC 6121 §2, §8.5) ---------------------------------------------------------------------------

    def _iq(self, stanza: Element, sender_channel: str, session: Any = None) -> list[Out]:
        sender = parse_jid(stanza.get("from", ""))
        to = self._target(stanza, sender)
        if to is None:
            return []
        payload = list(stanza)
        own_server = to.local is None and to.resource is None and to.domain == sender.domain
        if len(payload) == 1 and saslcert.is_request(payload[0]) and (own_server or to.bare == sender.bare):
            return self._saslcert_iq(stanza, payload[0], sender, sender_channel, session)  # XEP-0257
        if to.bare == sender.bare and to.resource is None:
            if len(payload) == 1 and payload[0].tag == roster.QUERY:
                return self._roster_iq(stanza, payload[0], sender, sender_channel)
            decision = delivery.iq_to_bare(stanza.get("type"))
            return (
                self._error(stanza, "service-unavailable", sender_channel)
                if decision.action is not Action.DROP
                else []
            )
        if not self._hosted(to.domain):
            return self._error(stanza, "remote-server-not-found", sender_channel, "no server-to-server")
        if self._account(to.bare) is None:
            return self._error(stanza, "service-unavailable", sender_channel)  # RFC 6121 §8.5.1
        sessions = live_sessions(to.bare)
        if to.resource is None:
            decision = delivery.iq_to_bare(stanza.get("type"))
        else:
            decision = delivery.iq_to_full(stanza.get("type"), to.resource, [s.as_resource for s in sessions])
        if decision.action is Action.DELIVER:
            return self._to_channels(sessions, decision.resources, stanza)
        if decision.action in (Action.ERROR, Action.SERVER):
            return self._error(stanza, "service-unavailable", sender_channel)  # §8.5.2.1.3, §8.5.3.2.3
        return []

    def _saslcert_iq(
        self, iq: Element, payload: Element, sender: Jid, sender_channel: str, session: Any
    ) -> list[Out]:
        """XEP-0257: the user's own certificates (``certauth.selfservice`` decides; we add who uses which)."""
        try:
            request = saslcert.parse_request(iq.get("type"), payload)
        except saslcert.SaslCertRequestError as exc:
            return self._error(iq, exc.condition, sender_channel, str(exc))
        session = session or LiveSession.objects.filter(full_jid=str(sender)).first()
        if session is None and not isinstance(request, saslcert.ListCertificates):
            # Fail closed: without the session's facts we cannot tell a no-cert-management login.
            return self._error(iq, "internal-server-error", sender_channel, "this session is not registered")
        requester = selfservice.Requester(
            sender.bare,
            sender.resource or "",
            session.cert_fingerprint if session else "",
            session.transport if session else "",
            session.peer if session else "",
        )
        try:
            answer = selfservice.handle(requester, request)
        except selfservice.SelfServiceRefused as refused:
            return self._error(iq, refused.condition, sender_channel, str(refused))
        reply = self._result(iq)
        if isinstance(answer, list):
            in_use: dict[str, list[str]] = {}
            for fingerprint, resource in LiveSession.objects.filter(bare_jid=sender.bare).values_list(
                "cert_fingerprint", "resource"
            ):
                in_use.setdefault(fingerprint, []).append(resource)
            items = [
                dataclasses.replace(
                    item, resources=in_use.get(hashlib.sha256(item.certificate_der).hexdigest(), [])
                )
                for item in answer
            ]
            reply.append(saslcert.items_element(items))  # §2.2
        elif answer is not None:
            reply.append(saslcert.item_element(answer))
        return [(sender_channel, stanza_message(reply))]

    def _roster_iq(self, iq: Element, query: Element, sender: Jid, sender_channel: str) -> list[Out]:
        account = self._account(sender.bare)
        if account is None:
            return self._error(iq, "internal-server-error", sender_channel)
        if iq.get("type") == "get":
            reply = self._result(iq)
            items = RosterItem.objects.filter(account=account, on_roster=True).order_by("jid")
            reply.append(roster.query_element([_item(row) for row in items]))  # RFC 6121 §2.1.3
            return [(sender_channel, stanza_message(reply))]
        if iq.get("type") != "set":
            return []
        try:
            request = roster.parse_set(query, sender.bare)
        except roster.RosterSetError as exc:
            return self._error(iq, exc.condition, sender_channel, str(exc))
        if request.remove:
            outs = self._roster_remove(account, sender, request.jid, iq, sender_channel)
        else:
            with transaction.atomic():
                row, _ = RosterItem.objects.select_for_update().get_or_create(
                    account=account, jid=request.jid
                )
                row.name = request.name or ""
                row.groups = list(request.groups)
                row.on_roster = True
                row.save()
            outs = self._push(sender.bare, _item(row))  # RFC 6121 §2.3.2
        return [*outs, (sender_channel, stanza_message(self._result(iq)))]

    def _roster_remove(
        self, account: Account, sender: Jid, contact: str, iq: Element, sender_channel: str
    ) -> list[Out]:
        """RFC 6121 §2.5.2: cancel both directions, remove the item, push subscription='remove'."""
        row = RosterItem.objects.filter(account=account, jid=contact, on_roster=True).first()
        if row is None:
            return self._error(iq, "item-not-found", sender_channel)  # §2.5.3
        outs: list[Out] = []
        state = _state(row)
        for kind, needed in (
            ("unsubscribe", state.sub in (subs.Sub.TO, subs.Sub.BOTH) or state.pending_out),
            ("unsubscribed", state.sub in (subs.Sub.FROM, subs.Sub.BOTH) or state.pending_in),
        ):
            if needed:
                presence = Element(ns.PRESENCE, {"type": kind, "from": sender.bare, "to": contact})
                outs += self._inbound_subscription(presence)
        row.delete()
        outs += self._push(sender.bare, roster.item_element(contact, subscription="remove"))
        return outs

    def _result(self, iq: Element) -> Element:
        return Element(ns.IQ, {"type": "result", "id": iq.get("id", ""), "to": iq.get("from", "")})

    def _push(self, owner: str, item: Element) -> list[Out]:
        """A roster push to every live session of ``owner`` (RFC 6121 §2.1.6)."""
        outs = []
        for session in live_sessions(owner):
            push = Element(
                ns.IQ, {"type": "set", "id": f"push-{secrets.token_hex(6)}", "to": session.full_jid}
            )
            push.append(roster.query_element([item]))
            outs.append((session.channel, stanza_message(push)))
        return outs

    # -- presence (RFC 6121 §3, §4) ------------------------------------------------------------------------

    def _presence(self, stanza: Element, sender_channel: str) -> list[Out]:
        kind = stanza.get("type")
        to = stanza.get("to")
        if kind in subs.KINDS:
            if not to:
                return []
            return self._outbound_subscription(stanza, sender_channel)
        if kind == "probe":
            return []  # clients do not probe (RFC 6121 §4.3: the server does)
        if not to:
            return []  # broadcasts come through :meth:`broadcast`
        return self._directed(stanza)

    def _directed(self, stanza: Element) -> list[Out]:
        """Directed presence (RFC 6121 §4.6): to the live sessions §8.5 picks, else dropped."""
        try:
            to = parse_jid(stanza.get("to", ""))
        except InvalidJid:
            return []
        if not self._hosted(to.domain) or self._account(to.bare) is None:
            return []
        sessions = live_sessions(to.bare)
        decision = delivery.decide(
            "presence", stanza.get("type"), to.resource, [s.as_resource for s in sessions]
        )
        if decision.action is Action.DELIVER:
            return self._to_channels(sessions, decision.resources, stanza)
        return []

    def _outbound_subscription(self, stanza: Element, sender_channel: str) -> list[Out]:
        """The user sends subscribe/subscribed/unsubscribe/unsubscribed (RFC 6121 §3, Appendix A.2)."""
        kind = stanza.get("type", "")
        sender = parse_jid(stanza.get("from", ""))
        try:
            contact = parse_jid(stanza.get("to", ""))
        except InvalidJid:
            return []
        if contact.bare == sender.bare:
            return []
        if not self._hosted(contact.domain):
            return self._error(stanza, "remote-server-not-found", sender_channel, "no server-to-server")
        account = self._account(sender.bare)
        if account is None:
            return []
        with transaction.atomic():
            row = RosterItem.objects.select_for_update().filter(account=account, jid=contact.bare).first()
            before = _state(row)
            outcome = subs.outbound(before, kind)
            joins = kind in ("subscribe", "subscribed") and (row is None or not row.on_roster)
            if outcome.changed(before) or (joins and kind == "subscribe"):
                if row is None:
                    row = RosterItem(account=account, jid=contact.bare)
                _apply(row, outcome.state)
                if joins:
                    row.on_roster = True  # RFC 6121 §3.1.2, §3.1.5: the contact joins the user's roster
                if not outcome.state.pending_in:
                    row.pending_in_stanza = ""
                row.save()
        outs: list[Out] = []
        if row is not None and outcome.changed(before) and row.on_roster:
            outs += self._push(sender.bare, _item(row))  # RFC 6121 §3.1.2, §3.1.5 ...
        if outcome.forward:
            # RFC 6121 §3.1.2: subscription stanzas leave with the user's bare JID.
            routed = Element(ns.PRESENCE, {"type": kind, "from": sender.bare, "to": contact.bare})
            for child in stanza:
                routed.append(child)
            outs += self._inbound_subscription(routed)
        if kind == "subscribed" and outcome.forward:
            outs += self._presence_to(sender.bare, contact.bare)  # RFC 6121 §3.1.5: current presence
        if kind == "unsubscribed" and outcome.forward:
            outs += self._unavailable_to(sender.bare, contact.bare)  # RFC 6121 §3.2.2
        return outs

    def _inbound_subscription(self, stanza: Element) -> list[Out]:
        """A subscription stanza reaches the contact's account (RFC 6121 §3, Appendix A.3)."""
        kind = stanza.get("type", "")
        sender = stanza.get("from", "")
        contact = parse_jid(stanza.get("to", ""))
        account = self._account(contact.bare)
        if account is None:
            return []  # RFC 6121 §8.5.1: presence to an unknown account is ignored
        sessions = live_sessions(contact.bare)
        available = [s for s in sessions if s.available]
        if not available and not self.final:
            return self._forward(stanza, "inbound")  # the router keeps what must wait (§3.1.3)
        with transaction.atomic():
            row = RosterItem.objects.select_for_update().filter(account=account, jid=sender).first()
            before = _state(row)
            outcome = subs.inbound(before, kind)
            if outcome.changed(before):
                if row is None:
                    row = RosterItem(account=account, jid=sender, on_roster=False)
                _apply(row, outcome.state)
                row.pending_in_stanza = dump(stanza) if outcome.state.pending_in else ""
                row.save()
        outs: list[Out] = []
        if row is not None and outcome.changed(before) and row.on_roster:
            outs += self._push(contact.bare, _item(row))
        if outcome.forward:
            outs += self._to_channels(available, [s.resource for s in available], stanza)
            if not available:
                logger.info("router %s: %s from %s kept for %s", self.process, kind, sender, contact.bare)
        if outcome.auto_reply:
            reply = Element(ns.PRESENCE, {"type": outcome.auto_reply, "from": contact.bare, "to": sender})
            outs += self._inbound_subscription(reply)  # §3.1.3: already approved, the server says so
        return outs

    def _presence_to(self, user: str, contact: str) -> list[Out]:
        """Ask each of the user's available sessions to send its presence to each of the contact's."""
        targets = [s for s in live_sessions(contact) if s.available]
        return [
            (mine.channel, presence_request(theirs.full_jid, theirs.channel))
            for mine in live_sessions(user)
            if mine.available
            for theirs in targets
        ]

    def _unavailable_to(self, user: str, contact: str) -> list[Out]:
        outs: list[Out] = []
        targets = [s for s in live_sessions(contact) if s.available]
        for mine in live_sessions(user):
            if mine.available:
                gone = Element(ns.PRESENCE, {"type": "unavailable", "from": mine.full_jid, "to": contact})
                outs += [(t.channel, stanza_message(gone)) for t in targets]
        return outs

    def broadcast(self, presence: Element, session_id: Any, channel: str, initial: bool) -> list[Out]:
        """Presence without ``to`` from a session (RFC 6121 §4.2 initial, §4.4 update, §4.5 unavailable).

        Records it in the registry, sends it to the subscribers' and the user's other available sessions,
        and, on initial presence, probes (§4.3) and delivers what waited: subscription requests (§3.1.3)
        and offline messages (XEP-0160; only at a non-negative priority).
        """
        sender = presence.get("from", "")
        bare = sender.split("/")[0]
        unavailable = presence.get("type") == "unavailable"
        priority = presence_priority(presence)
        if session_id is not None:
            set_presence(session_id, priority, None if unavailable else presence_show(presence))
        account = self._account(bare)
        if account is None:
            return []
        items = list(RosterItem.objects.filter(account=account, on_roster=True))
        # One query for the user's and every contact's sessions (not one per contact, twice).
        sessions = live_sessions_of([bare, *(item.jid for item in items)])
        outs: list[Out] = []
        mine = [s for s in sessions[bare.lower()] if s.full_jid != sender and s.available]
        for session in mine:  # §4.2.2, §4.4.2: the user's other available resources
            outs.append((session.channel, stanza_message(_addressed(presence, session.full_jid))))
        for item in items:
            if subs.sends_presence_to_contact(_state(item)):  # §4.2.2: subscription from or both
                for session in sessions[item.jid.lower()]:
                    if session.available:
                        outs.append((session.channel, stanza_message(_addressed(presence, session.full_jid))))
        if not initial or unavailable:
            return outs
        for session in mine:  # §4.2.2: the other resources' presence to the new one
            outs.append((session.channel, presence_request(sender, channel)))
        for item in items:
            if subs.receives_presence_from_contact(_state(item)):  # §4.3: probe, answered by live sessions
                for session in sessions[item.jid.lower()]:
                    if session.available:
                        outs.append((session.channel, presence_request(sender, channel)))
        for row in RosterItem.objects.filter(account=account, pending_in=True).exclude(pending_in_stanza=""):
            outs.append((channel, {"type": "xmpp.stanza", "xml": row.pending_in_stanza}))  # §3.1.3
        if priority >= 0:
            outs += self.offline_messages(sender, channel)
        return outs


def expiry_notice(
    full_jid: str, not_after: datetime | None, channel: str, now: datetime | None = None
) -> list[Out]:
    """A headline from the server domain when the session's certificate expires within
    ``[xmppauth] certificate_expiry_warning_days`` (the admins' window): sent once, at initial presence.

    RFC 6121 §5.2.2 (``headline``: shown, not stored offline, no reply expected). Says nothing but the
    user's own certificate's expiry.
    """
    now = now or timezone.now()
    days = limits.option("certificate_expiry_warning_days")
    if not_after is None or not now <= not_after < now + timedelta(days=days):
        return []
    message = Element(
        ns.qname(ns.CLIENT, "message"),
        {"type": "headline", "from": full_jid.split("@", 1)[1].split("/", 1)[0], "to": full_jid},
    )
    SubElement(message, ns.qname(ns.CLIENT, "subject")).text = "Your certificate expires soon"
    SubElement(message, ns.qname(ns.CLIENT, "body")).text = (
        f"The client certificate you logged in with expires on {not_after:%Y-%m-%d %H:%M} UTC "
        f"(in {(not_after - now).days} day(s)). Ask your administrator for a new one before then."
    )
    return [(channel, stanza_message(message))]


ROUTER_RETRY_SECONDS = 120.0  # how long the router waits for the database with one stanza before dropping it
database_outage = OutageLog(logger, "database (router)")


def routed_when_possible(
    router: Router, message: dict[str, Any], retry_seconds: float = ROUTER_RETRY_SECONDS
) -> list[Out]:
    """``router.routed(message)``; while the database is unavailable the stanza waits (retried every second,
    up to ``retry_seconds``), rather than being lost: what reaches the router must be stored or delivered
    (XEP-0160, RFC 6121 §8.5). Meanwhile the router channel fills and its senders bounce with
    ``resource-constraint``. Call from a worker thread."""
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            outs = router.routed(message)
        except DATABASE_UNAVAILABLE as exc:
            database_outage.failed(exc)
            if time.monotonic() >= deadline:
                raise
            close_old_connections()  # the broken connection goes; the next try opens a new one
            time.sleep(1)
            continue
        database_outage.ok()
        return outs


def offline_delivered(ids: list[int]) -> int:
    """The offline messages ``ids`` were written to their recipient's stream: out of the store now."""
    deleted, _ = OfflineMessage.objects.filter(id__in=ids).delete()
    return deleted


def bounce_refused(router: Router, message: dict[str, Any], sender_channel: str = "") -> list[Out]:
    """A stanza a full channel refused goes back to its sender as ``resource-constraint`` (RFC 6120
    §8.3.3.18; §8.3: never dropped in silence). Errors and results are not answered (§8.3.1)."""
    if message.get("type") != "xmpp.stanza" or message.get("offline_id") is not None:
        return []  # an offline message stays in the store for the next login
    stanza = load(message["xml"])
    logger.warning("a full channel refused a %s from %s: bounced", element_kind(stanza), stanza.get("from"))
    return router._error(stanza, RESOURCE_CONSTRAINT, sender_channel, "the recipient's queue is full")


RESOURCE_CONSTRAINT = "resource-constraint"
CACHE_SECONDS = 5.0  # how long an account's existence is remembered by a process
_cache: dict[tuple[str, str], tuple[float, Any]] = {}


def _cached(key: tuple[str, str], load: Any) -> Any:
    """``load()``, remembered for CACHE_SECONDS; an account created meanwhile is seen within that time."""
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = load()
    if value is None:
        return None  # an account created at its first login must be found at once
    if len(_cache) > 10000:
        _cache.clear()
    _cache[key] = (now + CACHE_SECONDS, value)
    return value


def _addressed(presence: Element, to: str) -> Element:
    copy = Element(presence.tag, dict(presence.attrib))
    copy.extend(list(presence))
    copy.set("to", to)
    return copy


def _state(row: RosterItem | None) -> subs.State:
    if row is None:
        return subs.NONE
    return subs.State(subs.Sub(row.subscription), pending_out=row.ask, pending_in=row.pending_in)


def _apply(row: RosterItem, state: subs.State) -> None:
    row.subscription = state.sub.value
    row.ask = state.pending_out
    row.pending_in = state.pending_in


def _item(row: RosterItem) -> Element:
    return roster.item_element(
        row.jid, name=row.name or None, groups=row.groups or (), subscription=row.subscription, ask=row.ask
    )


class RouterConsumer(SyncConsumer):
    """The router channel's consumer: ``manage.py runworker xmpp.router`` (a ChannelNameRouter in asgi)."""

    def xmpp_route(self, message: dict[str, Any]) -> None:
        router = Router(final=True)
        try:
            outs = routed_when_possible(router, message)
        except Exception:
            logger.exception("router: failed on %s", message.get("xml", "")[:200])
            return
        send = async_to_sync(self.channel_layer.send)
        for channel, payload in outs:
            try:
                send(channel, payload)
            except ChannelFull:
                for bounce_channel, bounce in bounce_refused(router, payload):
                    try:
                        send(bounce_channel, bounce)
                    except Exception:
                        logger.exception("router: could not bounce to %s", bounce_channel)
            except Exception:
                logger.exception("router: could not send to %s", channel)


def router_application() -> Any:
    """The ASGI application of ``manage.py runworker xmpp.router``: :class:`RouterConsumer`, given a ``send``
    that is a coroutine function.

    runworker's server (asgiref's ``StatelessServer``) passes ``send`` as a plain lambda that returns a
    coroutine; a ``SyncConsumer`` wraps it in ``async_to_sync``, which warns ("async_to_sync was passed a
    non-async-marked callable") on the first message of every run. Same calls, marked as what they are.
    """
    consumer = RouterConsumer.as_asgi()

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        async def send_message(message: dict[str, Any]) -> None:
            await send(message)

        return await consumer(scope, receive, send_message)

    return application
