"""RFC 6120 §11 XML restrictions and the per-stanza size limit, through the c2s core with bytes."""

from __future__ import annotations

import pytest

from transport.xmpp import C2SConnection, State
from transport.xmpp import namespaces as ns
from transport.xmpp.errors import StreamError
from transport.xmpp.xml import PIECE, StanzaParsed, StreamParser, next_piece, serialize

from .streamkit import DOMAIN, HEADER, Client, condition_of, session_client, stream_settings


def opened(**overrides) -> Client:
    client = Client(C2SConnection(stream_settings(**overrides)))
    client.open()
    return client


def stream_error(client: Client) -> str | None:
    errors = [e for e in client.read() if e.tag == ns.STREAM_ERROR]
    assert client.server_closed, "the server must close its stream after a stream error"
    assert client.conn.closed
    return condition_of(errors[-1], ns.STREAM_ERRORS) if errors else None


# --- restricted XML ----------------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    "to='example.org' version='1.0'>&lol3;"
)


def test_billion_laughs_dtd_is_restricted_xml():
    client = Client(C2SConnection(stream_settings()))
    client.send(BILLION_LAUGHS)
    assert stream_error(client) == "restricted-xml"


def test_stream_error_before_our_header_sends_a_header_first():
    client2 = Client(C2SConnection(stream_settings()))
    client2.send("<!DOCTYPE x>")
    raw = client2.conn.data_to_send()
    assert raw.startswith(b"<?xml version='1.0'?><stream:stream ")  # RFC 6120 §4.9.1.2
    assert raw.endswith(b"</stream:stream>")
    assert b'<restricted-xml xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>' in raw


def test_comment_inside_the_stream_is_restricted_xml():
    client = opened()
    client.send("<!-- hello -->")
    assert stream_error(client) == "restricted-xml"


def test_comment_inside_a_stanza_is_restricted_xml():
    client = session_client()
    client.send("<message to='romeo@example.org'><!-- x --></message>")
    assert stream_error(client) == "restricted-xml"


def test_processing_instruction_is_restricted_xml():
    client = opened()
    client.send("<?php echo 1; ?>")
    assert stream_error(client) == "restricted-xml"


def test_xml_declaration_is_not_a_processing_instruction():
    client = opened()
    assert not client.conn.closed
    assert client.header is not None


def test_undeclared_entity_reference_is_restricted_xml():
    client = session_client()
    client.send("<message to='romeo@example.org'><body>&foo;</body></message>")
    assert stream_error(client) == "restricted-xml"


def test_predefined_entities_and_character_references_are_allowed():
    client = session_client()
    events = client.send(
        "<message to='romeo@example.org'><body>&lt;&amp;&gt;&quot;&apos;&#65;&#x42;</body></message>"
    )
    assert events[0].element.findtext(ns.qname(ns.CLIENT, "body")) == "<&>\"'AB"


def test_malformed_xml_is_not_well_formed():
    client = session_client()
    client.send("<message><body></message>")
    assert stream_error(client) == "not-well-formed"


def test_invalid_utf8_is_not_well_formed():
    client = session_client()
    client.send(b"<message><body>\xff\xfe</body></message>")
    assert stream_error(client) == "not-well-formed"


def test_declared_encoding_other_than_utf8_is_unsupported_encoding():
    client = Client(C2SConnection(stream_settings()))
    client.send(HEADER.format(to=DOMAIN).replace("version='1.0'?>", "version='1.0' encoding='ISO-8859-1'?>"))
    assert stream_error(client) == "unsupported-encoding"


def test_text_between_stanzas_is_bad_format():
    client = opened()
    client.send("hello")
    assert stream_error(client) == "bad-format"


def test_whitespace_keepalive_between_stanzas_is_fine():
    client = session_client()
    client.send(" \n \t ")
    assert not client.conn.closed


# --- size limit ----------------------------------------------------------------------------------------


def test_stanza_over_the_limit_is_policy_violation():
    client = session_client()
    client.send("<message to='romeo@example.org'><body>" + "x" * 70000 + "</body></message>")
    assert stream_error(client) == "policy-violation"


def test_stanza_just_under_the_limit_passes():
    client = session_client()
    events = client.send("<message to='romeo@example.org'><body>" + "x" * 65000 + "</body></message>")
    assert len(events) == 1 and not client.conn.closed


def test_ten_megabyte_stanza_in_chunks_is_refused_without_buffering_it():
    client = session_client()
    client.send("<message to='romeo@example.org'><body>")
    chunk = b"x" * 65536
    sent = 0
    for _ in range(160):  # 10 MB
        client.send(chunk)
        sent += len(chunk)
        parser = client.conn._parser
        # while the stanza grows, the parser never holds more than the limit plus one piece
        assert parser is None or parser.buffered <= 65536 + PIECE
        assert len(client.conn._pending) <= len(chunk)
        if client.conn.closed:
            break
    assert client.conn.closed and sent <= 2 * len(chunk)
    assert client.conn._parser is None and client.conn._pending == b""
    assert stream_error(client) == "policy-violation"
    client.send(chunk)  # more bytes after the close are ignored, not parsed
    assert client.conn._pending == b""


def test_huge_start_tag_is_refused_before_it_ends():
    client = session_client()
    client.send("<message to='romeo@example.org' a='")
    for _ in range(5):
        client.send("y" * 30000)
    assert stream_error(client) == "policy-violation"


def test_limit_is_configurable():
    client = opened(max_stanza_size=2048)
    client.send("<message><body>" + "x" * 3000)
    assert stream_error(client) == "policy-violation"


def test_many_small_stanzas_do_not_add_up_to_the_limit():
    client = session_client()
    for _ in range(200):
        client.send(
            "<presence/>" + "<message to='romeo@example.org'><body>" + "x" * 500 + "</body></message>"
        )
    assert not client.conn.closed


# --- the parser on its own ------------------------------------------------------------------------------


def test_pieces_end_after_a_closing_angle_bracket():
    data = b"<a><b/>text</a>"
    assert next_piece(data, 0) == 3 and next_piece(data, 3) == 7 and next_piece(data, 7) == len(data)


def test_pieces_are_at_most_piece_bytes():
    assert next_piece(b"x" * (PIECE * 3), 0) == PIECE


def test_parser_builds_elements_with_namespaces_and_tails():
    parser = StreamParser()
    parser.feed(HEADER.format(to=DOMAIN).encode())
    (event,) = parser.feed(b"<message><body>a<b xmlns='urn:x'>c</b>d</body></message>")
    assert isinstance(event, StanzaParsed)
    body = event.element.find(ns.qname(ns.CLIENT, "body"))
    assert body.text == "a" and body[0].tag == "{urn:x}b" and body[0].tail == "d"


def test_dead_parser_refuses_more_input():
    parser = StreamParser()
    with pytest.raises(StreamError):
        parser.feed(b"<!-- no -->")
    with pytest.raises(RuntimeError):
        parser.feed(b"<a/>")


def test_serializer_declares_namespaces_and_escapes():
    parser = StreamParser()
    parser.feed(HEADER.format(to=DOMAIN).encode())
    (event,) = parser.feed(b"<message to='a&amp;b'><body>1 &lt; 2</body><x xmlns='urn:x'><y/></x></message>")
    out = serialize(event.element)
    assert out == b'<message to="a&amp;b"><body>1 &lt; 2</body><x xmlns="urn:x"><y/></x></message>'


def test_state_is_closed_after_a_stream_error():
    client = opened()
    client.send("<!-- x -->")
    assert client.conn.state is State.CLOSED and client.closes()[0].condition == "restricted-xml"


def test_deeply_nested_stanza_is_policy_violation():
    client = session_client()
    client.send("<message to='romeo@example.org'>" + "<a>" * 100 + "</a>" * 100 + "</message>")
    assert stream_error(client) == "policy-violation"


def test_reasonably_nested_stanza_passes():
    client = session_client()
    events = client.send("<message to='romeo@example.org'>" + "<a>" * 40 + "</a>" * 40 + "</message>")
    assert len(events) == 1 and not client.conn.closed
