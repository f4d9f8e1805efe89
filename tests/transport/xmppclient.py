"""A slixmpp client that logs in with SASL EXTERNAL, or with a password mechanism, and reports what happened
(bound JID or the failure)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import slixmpp

from tests.certs import Issued
from tests.transport.tlsclient import client_context


@dataclass
class LoginOutcome:
    bound_jid: str | None = None
    sasl_failures: list[str] = field(default_factory=list)
    sasl_texts: list[str] = field(default_factory=list)  # each failure's <text/> (RFC 6120 §6.4.5)
    no_usable_mechanism: bool = False
    stream_errors: list[tuple[str, str]] = field(default_factory=list)  # (condition, text), RFC 6120 §4.9
    disconnected: bool = False
    events: list[str] = field(default_factory=list)


def slixmpp_login(
    port: int,
    directory: Path,
    client: Issued | None,
    *,
    jid: str = "alice@localhost",
    authzid: str | None = None,
    direct_tls: bool = False,
    timeout: float = 30,
    mechanism: str = "EXTERNAL",
    password: str = "",
    maximum_version=None,
    external_anyway: bool = False,
) -> LoginOutcome:
    """Connect to 127.0.0.1:``port``, log in with ``mechanism`` (EXTERNAL, or PLAIN / SCRAM-* with
    ``password``) and stop at the first decisive event.

    ``timeout`` bounds a hung server; no assertion depends on timing. ``external_anyway``: a client that has a
    certificate configured and tries EXTERNAL even when the features do not list it (the mechanism is added
    to the features it reads).
    """
    loop = asyncio.new_event_loop()
    outcome = LoginOutcome()
    xmpp = slixmpp.ClientXMPP(jid, password, loop=loop)
    xmpp.register_plugin("xep_0030")
    xmpp.plugin["feature_mechanisms"].use_mech = mechanism
    xmpp.ssl_context = client_context(directory, client, maximum_version=maximum_version)
    if authzid is not None:
        xmpp.credentials["authzid"] = authzid
    xmpp.enable_direct_tls = direct_tls
    xmpp.enable_starttls = not direct_tls
    xmpp.enable_plaintext = False
    finished: asyncio.Future = loop.create_future()

    def finish(_=None) -> None:
        if not finished.done():
            finished.set_result(None)

    def on_bind(bound) -> None:
        outcome.bound_jid = str(bound)
        outcome.events.append("session_bind")
        xmpp.disconnect()

    def on_failed_auth(stanza) -> None:
        outcome.sasl_failures.append(stanza["condition"] if hasattr(stanza, "__getitem__") else str(stanza))
        outcome.sasl_texts.append(stanza["text"] if hasattr(stanza, "__getitem__") else "")
        outcome.events.append("failed_auth")

    def on_no_auth(_=None) -> None:
        outcome.no_usable_mechanism = True
        outcome.events.append("failed_all_auth")

    def on_negotiated(_=None) -> None:
        # Features processed without any SASL step: the server offered no mechanism we can use.
        if outcome.bound_jid is None and not getattr(xmpp, "authenticated", False):
            outcome.no_usable_mechanism = True
            outcome.events.append("negotiated_without_auth")
            xmpp.disconnect()

    def on_stream_error(error) -> None:
        outcome.stream_errors.append((error["condition"], error["text"]))
        outcome.events.append("stream_error")

    def on_disconnected(_=None) -> None:
        outcome.disconnected = True
        outcome.events.append("disconnected")
        finish()

    if external_anyway:
        xmpp.add_filter("in", _with_external)
    xmpp.add_event_handler("session_bind", on_bind)
    xmpp.add_event_handler("failed_auth", on_failed_auth)
    xmpp.add_event_handler("failed_all_auth", on_no_auth)
    xmpp.add_event_handler("stream_negotiated", on_negotiated)
    xmpp.add_event_handler("stream_error", on_stream_error)
    xmpp.add_event_handler("disconnected", on_disconnected)
    xmpp.add_event_handler("connection_failed", on_disconnected)
    if not run_until_finished(xmpp, loop, finished, port, timeout):
        outcome.events.append("timeout")
        logging.getLogger(__name__).warning("slixmpp login did not finish: %s", outcome)
    return outcome


def run_until_finished(
    xmpp: slixmpp.ClientXMPP,
    loop: asyncio.AbstractEventLoop,
    finished: asyncio.Future,
    port: int,
    timeout: float,
) -> bool:
    """Connect ``xmpp`` to 127.0.0.1:``port`` and run ``loop`` until ``finished`` (False: ``timeout`` first);
    then abort the stream, cancel what is left and close the loop."""
    try:
        xmpp.connect("127.0.0.1", port)
        loop.run_until_complete(asyncio.wait_for(finished, timeout))
        return True
    except TimeoutError:
        return False
    finally:
        xmpp.abort()
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def _with_external(stanza: Any) -> Any:
    """Stream features as a client that tries EXTERNAL regardless reads them: with EXTERNAL listed."""
    xml = getattr(stanza, "xml", None)
    if xml is None or xml.tag != "{http://etherx.jabber.org/streams}features":
        return stanza
    sasl = "{urn:ietf:params:xml:ns:xmpp-sasl}"
    mechanisms = xml.find(f"{sasl}mechanisms")
    if mechanisms is None:
        mechanisms = ElementTree.SubElement(xml, f"{sasl}mechanisms")
    if not any(item.text == "EXTERNAL" for item in mechanisms):
        ElementTree.SubElement(mechanisms, f"{sasl}mechanism").text = "EXTERNAL"
    return stanza
