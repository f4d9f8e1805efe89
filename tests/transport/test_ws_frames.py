"""XMPP over WebSocket (RFC 7395) frame by frame, with the Python ``websockets`` client against our server.

RFC 7395 §3.2: the ``xmpp`` subprotocol is required. §3.3.3: every message is one complete element; a message
that is not (two elements, broken XML) ends the stream with ``not-well-formed``; a DTD or a comment with
``restricted-xml``, as on TCP (RFC 6120 §11.1). RFC 6120 §13.12: a message over the stanza limit ends it with
``policy-violation``; one over the WebSocket cap gets close code 1009 (RFC 6455 §7.4.1), never a bare TCP
drop. A binary message: ``unsupported-encoding``.
"""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.sync.client import connect

from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.streamkit import condition_of
from tests.transport.tlsclient import websockets_context
from tests.transport.xmpphttp import start_server
from transport.http.server import WEBSOCKET_MAX_MESSAGE
from transport.xmpp import namespaces as ns

pytestmark = SAME_ON_BOTH_LEGS

OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
PING = "<iq xmlns='jabber:client' type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("ws-frames"))


@pytest.fixture
def ws(server, tmp_path):
    """A connection with a good certificate on the peer listener, its stream opened and features read."""
    context = websockets_context(tmp_path, server.pki.valid)
    with connect(server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=10) as conn:
        conn.send(OPEN)
        opened, features = fromstring(conn.recv(timeout=10)), fromstring(conn.recv(timeout=10))
        assert opened.tag == ns.WS_OPEN and features.tag == ns.FEATURES
        yield conn


def stream_error_and_close(conn) -> tuple[str, int]:
    """Read to the end: the stream error's condition, then ``<close/>``, then the WebSocket close code."""
    error = fromstring(conn.recv(timeout=10))
    assert error.tag == ns.STREAM_ERROR
    condition = condition_of(error, ns.STREAM_ERRORS)
    assert fromstring(conn.recv(timeout=10)).tag == ns.WS_CLOSE
    with pytest.raises(ConnectionClosed):
        conn.recv(timeout=10)
    return condition, conn.close_code


def test_handshake_selects_the_xmpp_subprotocol(ws):
    assert ws.subprotocol == "xmpp"


def test_handshake_without_the_xmpp_subprotocol_is_refused(server, tmp_path):
    context = websockets_context(tmp_path, server.pki.valid)
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url("peer", "wss"), ssl=context, subprotocols=["chat"], open_timeout=10)
    assert refused.value.response.status_code == 403


def test_handshake_without_any_subprotocol_is_refused(server, tmp_path):
    context = websockets_context(tmp_path, server.pki.valid)
    with pytest.raises(InvalidStatus):
        connect(server.url("peer", "wss"), ssl=context, open_timeout=10)


def test_other_websocket_paths_are_refused(server, tmp_path):
    context = websockets_context(tmp_path, server.pki.valid)
    url = server.url("peer", "wss").replace("/ws-xmpp", "/elsewhere")
    with pytest.raises(InvalidStatus):
        connect(url, ssl=context, subprotocols=["xmpp"], open_timeout=10)


def test_one_element_per_message_is_answered(ws):
    ws.send(PING.format(n=1))
    # before authentication a stanza is refused with not-authorized: the message itself was accepted
    assert stream_error_and_close(ws)[0] == "not-authorized"


def test_two_elements_in_one_message_is_not_well_formed(ws):
    ws.send(PING.format(n=1) + PING.format(n=2))
    assert stream_error_and_close(ws) == ("not-well-formed", 1000)


def test_an_unfinished_element_is_not_well_formed(ws):
    ws.send("<iq xmlns='jabber:client' type='get' id='p'>")
    assert stream_error_and_close(ws)[0] == "not-well-formed"


def test_malformed_xml_is_not_well_formed(ws):
    ws.send("<iq xmlns='jabber:client' type='get' id='p'></query>")
    assert stream_error_and_close(ws)[0] == "not-well-formed"


def test_a_comment_keeps_the_cores_restricted_xml(ws):
    ws.send("<!-- hi --><iq xmlns='jabber:client' type='get' id='p'/>")
    assert stream_error_and_close(ws)[0] == "restricted-xml"  # RFC 6120 §11.1


def test_message_over_the_stanza_limit_is_a_policy_violation(ws):
    body = "x" * 70_000  # the listener's limit is the default 65536 bytes
    ws.send(f"<message xmlns='jabber:client' to='bob@localhost'><body>{body}</body></message>")
    assert stream_error_and_close(ws)[0] == "policy-violation"


def test_binary_message_ends_the_stream_with_unsupported_encoding(ws):
    ws.send(OPEN.encode())
    assert stream_error_and_close(ws) == ("unsupported-encoding", 1000)


def test_close_is_answered_with_close(ws):
    ws.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
    assert fromstring(ws.recv(timeout=10)).tag == ns.WS_CLOSE
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    assert ws.close_code == 1000


def test_disconnect_on_failure_drops_a_certificate_of_an_unknown_ca(server, tmp_path):
    context = websockets_context(tmp_path, server.pki.untrusted)
    # The TLS handshake ends it (transport.tls.context); under TLS 1.3 the client may see that only on its
    # first read.
    with pytest.raises((InvalidMessage, ConnectionClosed, OSError)):
        connect(server.url("strict", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=10)


def test_disconnect_on_failure_lets_a_trusted_certificate_in(server, tmp_path):
    context = websockets_context(tmp_path, server.pki.valid)
    with connect(server.url("strict", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=10) as conn:
        conn.send(OPEN)
        assert fromstring(conn.recv(timeout=10)).tag == ns.WS_OPEN


def test_a_dtd_is_restricted_xml_as_on_tcp(ws):
    ws.send("<!DOCTYPE iq [<!ENTITY x 'y'>]><iq xmlns='jabber:client' type='get' id='p'/>")
    assert stream_error_and_close(ws) == ("restricted-xml", 1000)  # RFC 6120 §11.1


def test_a_bare_dtd_is_restricted_xml(ws):
    ws.send("<!DOCTYPE iq>")
    assert stream_error_and_close(ws) == ("restricted-xml", 1000)  # RFC 6120 §11.1


def test_message_over_the_websocket_cap_is_closed_with_1009(ws):
    ws.send("<message xmlns='jabber:client'><body>" + "x" * (WEBSOCKET_MAX_MESSAGE + 1) + "</body></message>")
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    assert ws.close_code == 1009  # RFC 6455 §7.4.1 "message too big": a close frame, not a dropped connection


# --- the Origin of the handshake (transport.http.origin; the browser side is test_browser_origin.py)
# -----------


def handshake(server, tmp_path, origin: str):
    context = websockets_context(tmp_path, server.pki.valid)
    return connect(
        server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], origin=origin, open_timeout=10
    )


def test_handshake_from_our_own_origin_is_accepted(server, tmp_path):
    with handshake(server, tmp_path, f"https://127.0.0.1:{server.ports['peer']}") as conn:
        conn.send(OPEN)
        assert fromstring(conn.recv(timeout=10)).tag == ns.WS_OPEN


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://127.0.0.1:{port}",  # our host and port, another scheme
        "https://127.0.0.1:{other}",  # our host, another port
        "https://127.0.0.1.evil.example:{port}",
    ],
)
def test_handshake_from_another_origin_is_refused_with_403(server, tmp_path, origin):
    origin = origin.format(port=server.ports["peer"], other=server.ports["strict"])
    with pytest.raises(InvalidStatus) as refused:
        handshake(server, tmp_path, origin)
    assert refused.value.response.status_code == 403
