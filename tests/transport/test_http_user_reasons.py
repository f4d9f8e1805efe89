"""Over WebSocket (RFC 7395) and BOSH (XEP-0206): every attempt in the auth events (issue 18 §3) and the
reason a user's client can show (§5), against our daphne server in its own process
(tests/transport/xmpphttp.py, listener "peer": ``disconnect_on_failure = false``).

Specs: RFC 6120 §4.9.3.12 and §4.9.2 (a ``not-authorized`` stream error with ``<text/>``), §6.4.5
(``<failure/>`` with ``<text/>``), §6.5.10; XEP-0206 §8 (a stream error in a ``remote-stream-error``
terminate body). A revoked, expired or untrusted certificate offered nothing (EXTERNAL only) reads its own
status in the stream error, in Strophe.js too; with password mechanisms offered it gets the features and
reads its status when it tries EXTERNAL; no certificate reads the generic text. A connection without a
certificate that leaves without trying is one ``AuthEvent``; a flood from one address stops being stored at
``[xmppauth] auth_events_per_minute``.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from xml.etree.ElementTree import Element, fromstring

import pytest
from websockets.sync.client import connect

from certauth import userstatus
from tests.certs import Issued, make_client
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.test_bosh_protocol import AUTH, Client
from tests.transport.tlsclient import client_context, websockets_context
from tests.transport.xmpphttp import XmppHttpServer, start_server, strophe_login
from transport.xmpp import namespaces as ns
from transport.xmpp.errors import SASL_FAILURE_TEXT

pytestmark = SAME_ON_BOTH_LEGS

WS_OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
WS_CLOSE = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
GENERIC = SASL_FAILURE_TEXT["not-authorized"]
TEXTS = {
    "revoked": userstatus.TEXT_REVOKED,
    "expired": userstatus.TEXT_EXPIRED,
    "untrusted": userstatus.TEXT_UNTRUSTED,
    "none": GENERIC,  # no certificate: no status of its own to tell
}
REFUSED = [kind for kind in TEXTS if kind != "none"]
PASSWORDS = """
[auth]
  methods = ["rdbms", "pki"]
  sasl_mechanisms = ["plain", "external"]
  [auth.password]
    hash = ["sha256"]
    scram_iterations = 4096
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("user-reasons"))


@pytest.fixture(scope="module")
def passwords(tmp_path_factory):
    """A server that also offers PLAIN: a refused certificate gets the features (no stream error)."""
    yield from start_server(tmp_path_factory.mktemp("user-reasons-passwords"), extra_toml=PASSWORDS)


def revoke(server: XmppHttpServer, directory: Path) -> Issued:
    issued = make_client(server.pki.ca, jids=["alice@localhost"])
    path = directory / "alice.pem"
    path.write_bytes(issued.pem)
    server.manage("pki", "import-cert", str(path))
    server.manage("pki", "revoke", issued.facts.fingerprint_sha256, "--reason", "key_compromise")
    return issued


@pytest.fixture(scope="module")
def revoked(server: XmppHttpServer, tmp_path_factory) -> Issued:
    return revoke(server, tmp_path_factory.mktemp("revoked"))


@pytest.fixture(scope="module")
def revoked_with_passwords(passwords: XmppHttpServer, tmp_path_factory) -> Issued:
    return revoke(passwords, tmp_path_factory.mktemp("revoked-passwords"))


def certificate(server: XmppHttpServer, request, kind: str, revoked: str = "revoked") -> Issued | None:
    if kind == "none":
        return None
    return request.getfixturevalue(revoked) if kind == "revoked" else getattr(server.pki, kind)


def events(server: XmppHttpServer, since: int = 0) -> list[tuple]:
    """(id, transport, outcome, condition, cert_fingerprint, reason) of the auth events after ``since``."""
    with closing(sqlite3.connect(server.directory / "db.sqlite3")) as db:
        return db.execute(
            "SELECT id, transport, outcome, condition, cert_fingerprint, reason FROM certauth_authevent"
            " WHERE id > ? ORDER BY id",
            [since],
        ).fetchall()


def last_id(server: XmppHttpServer) -> int:
    """The latest event's id once no more arrive: an earlier test's refusals are recorded in a thread, after
    its client already read the answer."""
    rows = events(server)
    while True:
        time.sleep(0.5)
        again = events(server)
        if len(again) == len(rows):
            return rows[-1][0] if rows else 0
        rows = again


def wait_for(server: XmppHttpServer, since: int, count: int) -> list[tuple]:
    deadline = time.monotonic() + 15
    while len(rows := events(server, since)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return rows


def failure(element: Element) -> tuple[str, str]:
    """(condition, text) of a SASL ``<failure/>``."""
    assert element.tag == ns.qname(ns.SASL, "failure"), element
    condition = next(child.tag.split("}")[1] for child in element if not child.tag.endswith("}text"))
    text = element.find(ns.qname(ns.SASL, "text"))
    return condition, text.text if text is not None else ""


def stream_error(element: Element) -> tuple[str, str]:
    """(condition, text) of a ``<stream:error/>``."""
    assert element.tag == ns.STREAM_ERROR, element
    condition = next(child.tag.split("}")[1] for child in element if not child.tag.endswith("}text"))
    text = element.find(ns.qname(ns.STREAM_ERRORS, "text"))
    return condition, text.text if text is not None else ""


def ws_features(server: XmppHttpServer, directory: Path, issued: Issued | None) -> tuple[str, str | None]:
    """Open a stream over wss: the server's second frame (features or stream error) and the one after it
    (``<close/>``, or None: the connection stays open and the client closes)."""
    context = websockets_context(directory, issued)  # TLS 1.2: see websockets_context
    with connect(server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=30) as ws:
        ws.send(WS_OPEN)
        ws.recv(timeout=30)  # <open/>
        second = ws.recv(timeout=30)
        if "stream:error" not in second and ns.STREAM_ERROR not in second:
            ws.send(WS_CLOSE)
            return second, None
        return second, ws.recv(timeout=30)


def ws_external(server: XmppHttpServer, directory: Path, issued: Issued | None) -> str:
    context = websockets_context(directory, issued)  # TLS 1.2: see websockets_context
    with connect(server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=30) as ws:
        ws.send(WS_OPEN)
        frames = [ws.recv(timeout=30), ws.recv(timeout=30)]
        assert "EXTERNAL" not in frames[1], frames  # DESIGN §4: not offered
        assert "error" not in frames[1], frames
        ws.send(AUTH)
        answer = ws.recv(timeout=30)
        ws.send(WS_CLOSE)
    return answer


@pytest.mark.parametrize("kind", REFUSED)
def test_websocket_refused_certificate_reads_its_status_in_a_stream_error(server, request, tmp_path, kind):
    second, after = ws_features(server, tmp_path, certificate(server, request, kind))
    assert stream_error(fromstring(second)) == ("not-authorized", TEXTS[kind]), second
    assert after is not None and fromstring(after).tag == "{urn:ietf:params:xml:ns:xmpp-framing}close"


def test_websocket_without_certificate_gets_the_empty_mechanisms(server, tmp_path):
    second, after = ws_features(server, tmp_path, None)
    listing = fromstring(second).find(ns.qname(ns.SASL, "mechanisms"))
    assert listing is not None and len(listing) == 0 and after is None, second


@pytest.mark.parametrize("kind", REFUSED)
def test_bosh_refused_certificate_reads_its_status_in_a_stream_error(server, request, tmp_path, kind):
    client = Client(server, tmp_path, certificate(server, request, kind))
    status, raw, body = client.post(rid=100, to="localhost", wait=30, hold=1, ver="1.6", xmpp_version="1.0")
    assert status == 200, raw
    assert (body.get("type"), body.get("condition")) == ("terminate", "remote-stream-error"), raw
    (error,) = [child for child in body if child.tag == ns.STREAM_ERROR]
    assert stream_error(error) == ("not-authorized", TEXTS[kind])


@pytest.mark.parametrize("scheme", ["wss", "https"], ids=["wss", "bosh"])
@pytest.mark.parametrize("kind", REFUSED)
def test_strophe_shows_the_status_of_a_refused_certificate(server, request, scheme, kind):
    verdict = strophe_login(server, server.url("peer", scheme), certificate(server, request, kind))
    assert verdict["status"] == "connfail", verdict  # not "no-external": the stream ended with a reason
    assert verdict["stream_error"] == {"condition": "not-authorized", "text": TEXTS[kind]}, verdict
    if scheme == "wss":  # Strophe's status callback: the stream condition, and the text on its console
        assert verdict["condition"] == "not-authorized", verdict
        assert f"WebSocket stream error: not-authorized - {TEXTS[kind]}" in verdict["strophe_errors"]
    else:  # XEP-0206 §8: the terminate body's condition; the stream error is in the body
        assert verdict["condition"] == "remote-stream-error", verdict


@pytest.mark.parametrize("scheme", ["wss", "https"], ids=["wss", "bosh"])
def test_strophe_without_a_certificate_sees_no_stream_error(server, scheme):
    verdict = strophe_login(server, server.url("peer", scheme), None)
    assert verdict["status"] == "no-external" and verdict["mechanisms"] == [], verdict
    assert verdict["stream_error"] is None, verdict


@pytest.mark.parametrize("kind", list(TEXTS))
def test_websocket_external_attempt_reads_the_certificate_status(passwords, request, tmp_path, kind):
    issued = certificate(passwords, request, kind, "revoked_with_passwords")
    answer = ws_external(passwords, tmp_path, issued)
    assert failure(fromstring(answer)) == ("not-authorized", TEXTS[kind]), answer


@pytest.mark.parametrize("kind", list(TEXTS))
def test_bosh_external_attempt_reads_the_certificate_status(passwords, request, tmp_path, kind):
    client = Client(passwords, tmp_path, certificate(passwords, request, kind, "revoked_with_passwords"))
    sid, body = client.create(rid=100)
    offered = [child.text for child in body.iter(ns.qname(ns.SASL, "mechanism"))]
    assert offered == ["PLAIN"] and body.get("type") != "terminate", offered
    status, raw, body = client.post(AUTH, rid=101, sid=sid)
    assert status == 200 and len(body) == 1, raw
    assert failure(body[0]) == ("not-authorized", TEXTS[kind]), raw


def test_revoked_certificate_ended_by_the_stream_error_is_recorded_once_and_the_detail_stays_there(
    server, revoked, tmp_path
):
    since = last_id(server)
    second, _ = ws_features(server, tmp_path, revoked)
    assert "keyCompromise" not in second and "alice" not in second
    fingerprint = revoked.facts.fingerprint_sha256
    wait_for(server, since, 1)
    time.sleep(0.5)
    rows = events(server, since)
    (refused,) = rows  # the check's record; the stream error adds none
    assert refused[1:5] == ("ws", "failure", "", fingerprint) and "keyCompromise" in refused[5], rows


def test_revoked_attempt_is_recorded_with_the_certificate_and_the_detail_stays_there(
    passwords, revoked_with_passwords, tmp_path
):
    since = last_id(passwords)
    answer = ws_external(passwords, tmp_path, revoked_with_passwords)
    assert "keyCompromise" not in answer and "alice" not in answer
    fingerprint = revoked_with_passwords.facts.fingerprint_sha256
    rows = [row for row in wait_for(passwords, since, 2) if row[4] == fingerprint]
    refused, attempt = rows
    assert refused[1:5] == ("ws", "failure", "", fingerprint) and "keyCompromise" in refused[5], rows
    assert attempt[1:5] == ("ws", "failure", "not-authorized", fingerprint), rows
    assert attempt[5].startswith("SASL EXTERNAL: SASL EXTERNAL needs a verified client certificate"), rows


def test_websocket_without_certificate_and_without_attempt_is_one_auth_event(server, tmp_path):
    since = last_id(server)
    context = websockets_context(tmp_path, None)
    with connect(server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=30) as ws:
        ws.send(WS_OPEN)
        frames = [ws.recv(timeout=30), ws.recv(timeout=30)]
        assert "EXTERNAL" not in frames[1]
        ws.send(WS_CLOSE)  # the client gives up
    rows = wait_for(server, since, 1)
    time.sleep(0.5)
    rows = events(server, since)
    assert [row[1:] for row in rows] == [
        ("ws", "failure", "", "", "no client certificate presented; the connection ended without a login")
    ]


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    extra = "\n[xmppauth]\n  auth_failures_per_minute = 0\n  auth_events_per_minute = 3\n"
    yield from start_server(tmp_path_factory.mktemp("user-reasons-capped"), extra_toml=extra)


def test_a_flood_from_one_address_is_capped_over_websocket_and_bosh(capped, tmp_path):
    for _ in range(3):
        ws_external(capped, tmp_path, None)
    for rid in range(3):
        client = Client(capped, tmp_path, None)
        sid, _ = client.create(rid=100 + rid * 10)
        client.post(AUTH, rid=101 + rid * 10, sid=sid)
    wait_for(capped, 0, 3)  # recorded in threads, after each client read its answer
    last_id(capped)  # returns once nothing more lands
    assert len(events(capped)) == 3
    assert (
        "more than 3 refusals from 127.0.0.1 within a minute" in (capped.directory / "server.log").read_text()
    )


@pytest.mark.websockets_tls13  # certificate_required is TLS 1.3's alert; no upgrade request is ever answered
@pytest.mark.parametrize(("kind", "alert"), [("none", "certificate_required"), ("untrusted", "unknown_ca")])
def test_handshake_refused_on_the_strict_listener_is_one_auth_event(server, request, tmp_path, kind, alert):
    """``disconnect_on_failure = true``: OpenSSL refuses before any HTTP, so the client reads no text."""
    since = last_id(server)
    client = certificate(server, request, kind)
    with pytest.raises(Exception):  # noqa: B017, PT011 (the alert or the cut, as the TLS stack reports it)
        with connect(
            server.url("strict", "wss"), ssl=client_context(tmp_path, client), subprotocols=["xmpp"]
        ) as ws:
            ws.send(WS_OPEN)
            ws.recv(timeout=30)
    rows = wait_for(server, since, 1)
    time.sleep(0.5)
    rows = events(server, since)
    assert len(rows) == 1, rows
    assert rows[0][1:4] == ("https", "failure", ""), rows
    assert rows[0][4] == (client.facts.fingerprint_sha256 if client else ""), rows
    assert rows[0][5].startswith(f"TLS handshake refused: {alert}"), rows
