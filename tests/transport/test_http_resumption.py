"""TLS session resumption on the HTTPS listener (issue 17 §4): WebSocket (RFC 7395) and BOSH (XEP-0206)
clients resume, and a certificate revoked since the full handshake is refused on the resumed connection.

Against our daphne server in its own process (tests/transport/xmpphttp.py, listener "peer":
``disconnect_on_failure = false``). The client offers the session of its previous connection
(``bench.clientcerts.ResumingContext``); every step asserts whether the connection resumed, so a
server that fell back to a full handshake could not pass the refusal. The TCP listener's cases are in
``test_tls_resumption.py``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from xml.etree.ElementTree import Element, fromstring, tostring

import pytest
from websockets.sync.client import connect

from bench.clientcerts import ResumingContext
from certauth import userstatus
from tests.certs import Issued, make_client
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.test_bosh_protocol import AUTH, Client
from tests.transport.test_http_user_reasons import WS_CLOSE, WS_OPEN, stream_error
from tests.transport.tlsclient import client_context
from tests.transport.xmpphttp import XmppHttpServer, start_server
from transport.xmpp import namespaces as ns

pytestmark = SAME_ON_BOTH_LEGS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("http-resumption"))


def registered(server: XmppHttpServer, directory: Path, serial: int) -> Issued:
    """A certificate of alice's that the server knows (imported), so that it can be revoked later."""
    issued = make_client(server.pki.ca, jids=["alice@localhost"], serial=serial)
    path = directory / f"alice-{serial}.pem"
    path.write_bytes(issued.pem)
    server.manage("pki", "import-cert", str(path))
    return issued


def revoke(server: XmppHttpServer, issued: Issued) -> None:
    server.manage("pki", "revoke", issued.facts.fingerprint_sha256, "--reason", "key_compromise")


def context(directory: Path, issued: Issued, version: ssl.TLSVersion) -> ResumingContext:
    ctx = client_context(directory, issued, maximum_version=version, context_class=ResumingContext)
    assert isinstance(ctx, ResumingContext)
    return ctx


# -- WebSocket --------------------------------------------------------------------------------------------


def ws_login(server: XmppHttpServer, ctx: ResumingContext) -> tuple[bool, str, str]:
    """One wss stream: (resumed, the features or stream error, the answer to EXTERNAL or ''). The session
    ends with ``<close/>``; the server then closes the connection with TLS close_notify, which keeps it."""
    # TLS 1.2 (tests.transport.tlsclient.websockets_context says why websockets.sync takes no TLS 1.3 here)
    with connect(server.url("peer", "wss"), ssl=ctx, subprotocols=["xmpp"], open_timeout=30) as ws:
        resumed = ws.socket.session_reused
        ctx.offered_session = ws.socket.session  # TLS 1.2: complete after the handshake (once closed, gone)
        ws.send(WS_OPEN)
        ws.recv(timeout=30)  # <open/>
        second = ws.recv(timeout=30)
        answer = ""
        if "EXTERNAL" in second:
            ws.send(AUTH)
            answer = ws.recv(timeout=30)
        if "stream:error" in second or ns.STREAM_ERROR in second:
            ws.recv(timeout=30)  # the server's <close/>
        else:
            ws.send(WS_CLOSE)
            ws.recv(timeout=30)
    return resumed, second, answer


def test_websocket_resumes_and_a_revoked_certificate_is_refused_on_resumption(server, tmp_path):
    issued = registered(server, tmp_path, serial=0x5E55101)
    ctx = context(tmp_path, issued, ssl.TLSVersion.TLSv1_2)
    resumed, features, answer = ws_login(server, ctx)
    assert not resumed and "<success" in answer, (features, answer)
    resumed, features, answer = ws_login(server, ctx)
    assert resumed and "<success" in answer, (features, answer)  # a returning client, checked again
    revoke(server, issued)
    resumed, second, answer = ws_login(server, ctx)
    assert resumed, second
    assert stream_error(fromstring(second)) == ("not-authorized", userstatus.TEXT_REVOKED), second
    assert answer == ""


# -- BOSH -------------------------------------------------------------------------------------------------


def bosh_login(
    server: XmppHttpServer, ctx: ResumingContext, rid: int
) -> tuple[bool, Element, Element | None]:
    """One BOSH session on one keep-alive connection: (resumed, the session creation body, the answer to
    EXTERNAL or None). The last request asks for ``Connection: close``, so the server closes the connection,
    with TLS close_notify."""
    client = Client(server, None, None, context=ctx)
    try:
        status, raw, created = client.post(
            rid=rid, to="localhost", wait=30, hold=1, ver="1.6", xmpp_version="1.0"
        )
        assert status == 200, raw
        resumed = client.connection.sock.session_reused
        ctx.offered_session = client.connection.sock.session  # TLS 1.3: the tickets came before the response
        answer = None
        if created.get("type") is None and b"EXTERNAL" in raw:
            sid = created.get("sid")
            _, _, answer = client.post(AUTH, rid=rid + 1, sid=sid)
            client.post(rid=rid + 2, sid=sid, type="terminate", headers={"Connection": "close"})
    finally:
        client.connection.close()
    return resumed, created, answer


def test_bosh_resumes_and_a_revoked_certificate_is_refused_on_resumption(server, tmp_path):
    issued = registered(server, tmp_path, serial=0x5E55102)
    ctx = context(tmp_path, issued, ssl.TLSVersion.TLSv1_3)
    resumed, created, answer = bosh_login(server, ctx, rid=5000)
    assert not resumed and answer is not None and answer[0].tag == ns.qname(ns.SASL, "success"), created
    resumed, created, answer = bosh_login(server, ctx, rid=6000)
    assert resumed and answer is not None and answer[0].tag == ns.qname(ns.SASL, "success"), created
    revoke(server, issued)
    resumed, created, answer = bosh_login(server, ctx, rid=7000)
    assert resumed, tostring(created)
    assert (created.get("type"), created.get("condition")) == ("terminate", "remote-stream-error")
    (error,) = [child for child in created if child.tag == ns.STREAM_ERROR]
    assert stream_error(error) == ("not-authorized", userstatus.TEXT_REVOKED)
    assert answer is None
