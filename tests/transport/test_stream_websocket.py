"""RFC 7395 WebSocket framing of the c2s core: <open/>/<close/> and one element per message."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest

from transport.xmpp import (
    BindRequest,
    Bound,
    C2SConnection,
    IdentityDecision,
    LocalProtocolError,
    State,
    StreamOpened,
)
from transport.xmpp import namespaces as ns
from transport.xmpp.xml import StanzaParsed, parse_document

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


def ws_session(**overrides) -> C2SConnection:
    """A WebSocket stream with juliet's resource bound, its output read."""
    conn = ws_conn(**overrides)
    conn.receive_data(OPEN.format(to="example.org").encode())
    conn.receive_data(AUTH.encode())
    conn.auth_result(IdentityDecision.accept(JULIET))
    conn.receive_data(OPEN.format(to="example.org").encode())
    conn.receive_data(BIND.encode())
    conn.bind_result(None)
    frames(conn)
    return conn


def test_stanza_without_the_client_namespace_is_refused():
    conn = ws_session()
    (event,) = conn.receive_data(b"<message to='romeo@example.org'/>")
    assert conn.closed and event.condition == "unsupported-stanza-type"


# --- RFC 7395 §3.3.3: each message is one element, a document of its own; the core checks it (moved from the
# WebSocket adapter's pre-check, tests/transport/test_ws_bosh_units.py). A stanza before authentication is
# not-authorized and an unknown element unsupported-stanza-type: those messages passed the check.


@pytest.mark.parametrize(
    ("message", "condition"),
    [
        (b"<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", "not-authorized"),
        (b"<iq xmlns='jabber:client' type='get' id='1'/>", "not-authorized"),
        (b"<a>&lt;!DOCTYPE a&gt;</a>", "unsupported-stanza-type"),  # the text of a DTD, not a DTD
        (b"<a><![CDATA[<!DOCTYPE a>]]></a>", "unsupported-stanza-type"),
        (b"<?xml version='1.0'?><presence xmlns='jabber:client'/>", "not-well-formed"),  # as before
        (b"<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>", "not-well-formed"),
        (b"<presence xmlns='jabber:client'/> trailing text", "not-well-formed"),
        (b"", "not-well-formed"),
        (b"   ", "not-well-formed"),
        (b"<iq xmlns='jabber:client'>", "not-well-formed"),  # unfinished
        (b"<a></b>", "not-well-formed"),
        (b"<a/><!DOCTYPE a>", "not-well-formed"),  # misplaced: not a prolog
        (b"<!DOCTYPE iq>", "restricted-xml"),  # RFC 6120 §11.1
        (b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", "restricted-xml"),
        (b"<?xml version='1.0'?>\n<!DOCTYPE iq SYSTEM 'http://example.com/x.dtd'><iq/>", "restricted-xml"),
        (b"<!DOCTYPE a [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]><a/>", "restricted-xml"),
        (b"<a>&unknown;</a>", "restricted-xml"),
        (b"<!-- hi --><iq xmlns='jabber:client' type='get' id='p'/>", "restricted-xml"),
        (b"<?pi x?><iq xmlns='jabber:client' type='get' id='p'/>", "restricted-xml"),
    ],
)
def test_each_message_must_be_one_element(message, condition):
    conn = ws_conn()
    conn.receive_data(OPEN.format(to="example.org").encode())
    frames(conn)
    (event,) = conn.receive_data(message)
    assert conn.closed and event.condition == condition
    *_, error, closing = frames(conn)
    assert condition_of(error, ns.STREAM_ERRORS) == condition and closing.tag == ns.WS_CLOSE


def test_a_message_over_the_stanza_limit_is_a_policy_violation():
    conn = ws_conn(max_stanza_size=1024)
    conn.receive_data(OPEN.format(to="example.org").encode())
    (event,) = conn.receive_data(
        b"<message xmlns='jabber:client'><body>" + b"x" * 1024 + b"</body></message>"
    )
    assert event.condition == "policy-violation"  # RFC 6120 §13.12
    assert b"message larger than 1024 bytes" in b"".join(conn.frames_to_send())


def test_a_message_at_the_stanza_limit_is_read():
    conn = ws_conn(max_stanza_size=1024)
    conn.receive_data(OPEN.format(to="example.org").encode())
    stanza = b"<message xmlns='jabber:client'><body>" + b"x" * 900 + b"</body></message>"
    message = stanza.ljust(1024)  # whitespace after the root is allowed in a document
    assert len(message) == 1024
    (event,) = conn.receive_data(message)
    assert event.condition == "not-authorized"  # the message passed; the stanza comes before authentication


# --- elements an adapter already parsed (BOSH: the body's children, XEP-0206), fed without a second parse


def parsed(text: bytes) -> StanzaParsed:
    (event,) = parse_document(text, 1 << 20)
    return event


def test_an_element_the_adapter_parsed_is_read_as_is():
    conn = ws_session(max_stanza_size=1024)
    ping = parsed(b"<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert conn.receive_element(ping) == []
    (reply,) = frames(conn)
    assert reply.tag == ns.IQ and reply.get("type") == "result" and reply.get("id") == "p"


def test_an_element_the_adapter_parsed_over_the_stanza_limit_is_a_policy_violation():
    conn = ws_session(max_stanza_size=1024)
    big = parsed(b"<message xmlns='jabber:client'><body>" + b"x" * 1024 + b"</body></message>")
    assert big.size > 1024
    (event,) = conn.receive_element(big)
    assert conn.closed and event.condition == "policy-violation"  # RFC 6120 §13.12


def test_elements_wait_with_the_bytes_while_the_adapter_decides():
    conn = ws_conn()
    conn.receive_data(OPEN.format(to="example.org").encode())
    conn.receive_data(AUTH.encode())
    assert conn.state is State.SASL_PENDING
    assert conn.receive_element(parsed(OPEN.format(to="example.org").encode())) == []  # held
    events = conn.auth_result(IdentityDecision.accept(JULIET))
    assert conn.state is State.WAIT_BIND and any(isinstance(e, StreamOpened) for e in events)


def test_receive_element_needs_framed_input():
    conn = C2SConnection(stream_settings(tls_mode="tls"))
    with pytest.raises(LocalProtocolError):
        conn.receive_element(parsed(b"<presence xmlns='jabber:client'/>"))
