"""RFC 7395 WebSocket framing of the c2s core: <open/>/<close/> and one element per message."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

from transport.xmpp import BindRequest, Bound, C2SConnection, IdentityDecision, State
from transport.xmpp import namespaces as ns

from .streamkit import JULIET, Facts, condition_of, stream_settings

OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{to}' version='1.0'/>"
CLOSE = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"
BIND = "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"


def ws_conn(**overrides) -> C2SConnection:
    conn = C2SConnection(stream_settings(tls_mode="tls", framing="websocket", **overrides))
    conn.tls_established(Facts(), True)
    return conn


def frames(conn: C2SConnection) -> list:
    """Each frame must be a complete XML document on its own."""
    return [fromstring(frame) for frame in conn.frames_to_send()]


def test_open_is_answered_with_open_and_features_in_separate_frames():
    conn = ws_conn()
    conn.receive_data(OPEN.format(to="example.org").encode())
    opened, features = frames(conn)
    assert opened.tag == ns.WS_OPEN and opened.get("from") == "example.org" and opened.get("version") == "1.0"
    assert features.tag == ns.FEATURES
    assert (
        features.find(f"{ns.qname(ns.SASL, 'mechanisms')}/{ns.qname(ns.SASL, 'mechanism')}").text
        == "EXTERNAL"
    )


def test_starttls_is_never_offered_over_websocket():
    conn = C2SConnection(stream_settings(tls_mode="starttls", framing="websocket"))
    conn.receive_data(OPEN.format(to="example.org").encode())
    _, features = frames(conn)
    assert features.find(ns.STARTTLS) is None


def test_login_bind_and_stanzas_over_websocket():
    conn = ws_conn()
    conn.receive_data(OPEN.format(to="example.org").encode())
    conn.receive_data(AUTH.encode())
    conn.auth_result(IdentityDecision.accept(JULIET))
    conn.receive_data(OPEN.format(to="example.org").encode())  # RFC 7395 §3.5: restart with a new <open/>
    assert conn.state is State.WAIT_BIND
    frames(conn)
    (request,) = conn.receive_data(BIND.encode())
    assert isinstance(request, BindRequest) and frames(conn) == []  # no result before the adapter's check
    (bound,) = conn.bind_result(None)
    assert isinstance(bound, Bound)
    frames(conn)
    conn.receive_data(b"<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    (reply,) = frames(conn)
    assert reply.tag == ns.IQ and reply.get("type") == "result"


def test_close_is_answered_with_close():
    conn = ws_conn()
    conn.receive_data(OPEN.format(to="example.org").encode())
    frames(conn)
    (event,) = conn.receive_data(CLOSE.encode())
    (closing,) = frames(conn)
    assert closing.tag == ns.WS_CLOSE and conn.closed and event.condition is None


def test_unknown_host_gets_open_error_and_close():
    conn = ws_conn()
    conn.receive_data(OPEN.format(to="elsewhere.example").encode())
    opened, error, closing = frames(conn)
    assert opened.tag == ns.WS_OPEN and closing.tag == ns.WS_CLOSE
    assert error.tag == ns.STREAM_ERROR and condition_of(error, ns.STREAM_ERRORS) == "host-unknown"


def test_stream_header_instead_of_open_is_refused():
    conn = ws_conn()
    conn.receive_data(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='example.org'/>")
    assert conn.closed


def test_stanza_without_the_client_namespace_is_refused():
    conn = ws_conn()
    conn.receive_data(OPEN.format(to="example.org").encode())
    conn.receive_data(AUTH.encode())
    conn.auth_result(IdentityDecision.accept(JULIET))
    conn.receive_data(OPEN.format(to="example.org").encode())
    conn.receive_data(BIND.encode())
    conn.bind_result(None)
    (event,) = conn.receive_data(b"<message to='romeo@example.org'/>")
    assert conn.closed and event.condition == "unsupported-stanza-type"
