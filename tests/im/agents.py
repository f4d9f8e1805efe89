"""Scripted slixmpp clients for the messaging tests: each runs in its own thread and event loop.

A :class:`SlixAgent` logs in with SASL EXTERNAL over direct TLS, records every stanza it receives (as
ElementTree elements, through slixmpp's incoming filter) and sends raw XML. ``wait_for`` blocks until a
received stanza matches; its timeout only bounds a hung server, no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, tostring

import slixmpp

from tests.certs import Issued
from tests.transport.tlsclient import client_context

CLIENT = "{jabber:client}"
ROSTER = "{jabber:iq:roster}"
STREAM_ERRORS = "{urn:ietf:params:xml:ns:xmpp-streams}"
TIMEOUT = 30.0


class StanzaInbox:
    """What both scripted clients share: the stanzas received so far, waited for one at a time; and the
    exchanges built on ``send``. A subclass sets ``full_jid``, ``received``, ``_cond`` and ``send``."""

    full_jid: str
    received: list[Element]
    _cond: threading.Condition

    def send(self, xml: str) -> None:
        raise NotImplementedError

    def wait_for(self, predicate: Callable[[Element], bool], what: str = "a stanza") -> Element:
        """The first received stanza (since the start) matching ``predicate``; consumed so it matches once."""
        with self._cond:
            found = self._cond.wait_for(lambda: self._take(predicate), TIMEOUT)
            if not found:
                raise AssertionError(f"{self.full_jid} never received {what}; got {self.dump()}")
            return found[0]

    def _take(self, predicate: Callable[[Element], bool]) -> list[Element]:
        """A one-item list (an Element without children is false, so it is never returned bare)."""
        for index, element in enumerate(self.received):
            if predicate(element):
                return [self.received.pop(index)]
        return []

    def dump(self) -> str:
        return "\n".join(tostring(e, encoding="unicode") for e in self.received)

    def iq(self, xml_inside: str, kind: str = "get", iq_id: str = "q1") -> Element:
        self.send(f"<iq type='{kind}' id='{iq_id}'>{xml_inside}</iq>")
        return self.wait_for(lambda e: e.tag == f"{CLIENT}iq" and e.get("id") == iq_id, f"iq {iq_id}")

    def roster(self, iq_id: str = "roster") -> dict[str, Element]:
        reply = self.iq("<query xmlns='jabber:iq:roster'/>", iq_id=iq_id)
        return {item.get("jid"): item for item in reply.iter(f"{ROSTER}item")}


class SlixAgent(StanzaInbox):
    def __init__(self, port: int, directory: Path, cert: Issued, jid: str, *, resource: str = "tcp") -> None:
        self.port = port
        self.jid = jid
        self.full_jid = f"{jid}/{resource}"
        self.received: list[Element] = []
        self.stream_errors: list[str] = []
        self.disconnected = threading.Event()
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        xmpp = slixmpp.ClientXMPP(self.full_jid, "", loop=self.loop)
        xmpp.plugin["feature_mechanisms"].use_mech = "EXTERNAL"
        xmpp.ssl_context = client_context(directory, cert)
        xmpp.enable_direct_tls = True
        xmpp.enable_starttls = False
        xmpp.enable_plaintext = False
        xmpp.roster.auto_authorize = None  # the test answers subscription requests itself
        xmpp.roster.auto_subscribe = False
        xmpp.add_filter("in", self._record)
        xmpp.add_event_handler("session_bind", lambda _: self._ready.set())
        xmpp.add_event_handler("disconnected", lambda _: self.disconnected.set())
        xmpp.add_event_handler("connection_failed", lambda _: self.disconnected.set())
        xmpp.add_event_handler("stream_error", self._on_stream_error)
        self.xmpp = xmpp
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"slixmpp {jid}")

    # -- life -----------------------------------------------------------------------------------------

    def start(self) -> SlixAgent:
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            raise AssertionError(f"{self.full_jid} never bound a session")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.xmpp.connect("127.0.0.1", self.port)
        self.loop.run_forever()

    def stop(self) -> None:
        """Close the stream (the server sees the client leave) and end the thread."""
        if self._thread.is_alive():

            async def leave() -> None:
                await self.xmpp.disconnect(wait=2)

            async def cancel_the_rest() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(leave(), self.loop).result(TIMEOUT)
            self.disconnected.wait(TIMEOUT)
            asyncio.run_coroutine_threadsafe(cancel_the_rest(), self.loop).result(TIMEOUT)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TIMEOUT)

    # -- I/O --------------------------------------------------------------------------------------------

    def _record(self, stanza: Any) -> Any:
        with self._cond:
            self.received.append(stanza.xml)
            self._cond.notify_all()
        return stanza

    def _on_stream_error(self, error: Any) -> None:
        with self._cond:
            self.stream_errors.append(error["condition"])
            self._cond.notify_all()

    def send(self, xml: str) -> None:
        self.loop.call_soon_threadsafe(self.xmpp.send_raw, xml)

    def wait_for_stream_error(self) -> str:
        with self._cond:
            if not self._cond.wait_for(lambda: self.stream_errors, TIMEOUT):
                raise AssertionError(f"{self.full_jid} got no stream error")
            return self.stream_errors[0]


def is_message(sender_bare: str, body: str | None = None) -> Callable[[Element], bool]:
    def match(e: Element) -> bool:
        return (
            e.tag == f"{CLIENT}message"
            and (e.get("from") or "").split("/")[0] == sender_bare
            and (body is None or e.findtext(f"{CLIENT}body") == body)
        )

    return match


def is_presence(sender_bare: str, kind: str | None = None) -> Callable[[Element], bool]:
    def match(e: Element) -> bool:
        return (
            e.tag == f"{CLIENT}presence"
            and (e.get("from") or "").split("/")[0] == sender_bare
            and e.get("type") == kind
        )

    return match


def is_push(contact: str, subscription: str | None = None) -> Callable[[Element], bool]:
    def match(e: Element) -> bool:
        if e.tag != f"{CLIENT}iq" or e.get("type") != "set":
            return False
        item = e.find(f"{ROSTER}query/{ROSTER}item")
        return (
            item is not None
            and item.get("jid") == contact
            and (subscription is None or item.get("subscription") == subscription)
        )

    return match
