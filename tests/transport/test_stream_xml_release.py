"""transport.xmpp.xml: between stanzas the parser holds no expat parser, and what it parses is unchanged
(RFC 6120 §4.7 stream root and its namespaces, §4.6.1 whitespace keepalives, §13.12 stanza size limit)."""

from __future__ import annotations

import pytest

from transport.xmpp import namespaces as ns
from transport.xmpp.errors import StreamError
from transport.xmpp.xml import StanzaParsed, StreamEnd, StreamOpen, StreamParser, next_piece

ROOT = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" xmlns:x='urn:example:x' to='localhost' version='1.0'>"
)


def feed_all(parser: StreamParser, data: bytes) -> list:
    events, position = [], 0
    while position < len(data):
        end = next_piece(data, position)
        events += parser.feed(data[position:end])
        position = end
    return events


def test_expat_is_dropped_after_the_stream_header_and_after_each_stanza():
    parser = StreamParser()
    feed_all(parser, ROOT)
    assert parser._parser is None
    feed_all(parser, b"<presence/>")
    assert parser._parser is None
    feed_all(parser, b"<message><body>hi</body></message>")
    assert parser._parser is None


def test_expat_is_kept_while_a_stanza_is_incomplete():
    parser = StreamParser()
    feed_all(parser, ROOT)
    feed_all(parser, b"<message to='a>b'")  # a '>' inside an attribute value ends no element
    assert parser._parser is not None
    events = feed_all(parser, b"><body>x</body></message>")
    assert [event.element.get("to") for event in events] == ["a>b"]


def test_stanzas_after_a_release_keep_the_roots_namespaces():
    parser = StreamParser()
    opened = feed_all(parser, ROOT)
    assert len(opened) == 1 and isinstance(opened[0], StreamOpen)
    events = feed_all(parser, b"<message><x:data/></message> \n <iq type='get' id='1'/>")
    assert [type(event) for event in events] == [StanzaParsed, StanzaParsed]  # no second StreamOpen
    message, iq = (event.element for event in events)
    assert message.tag == f"{{{ns.CLIENT}}}message"
    assert message[0].tag == "{urn:example:x}data"
    assert iq.tag == f"{{{ns.CLIENT}}}iq"


def test_whitespace_keepalives_need_no_parser_and_the_stream_end_is_seen():
    parser = StreamParser()
    feed_all(parser, ROOT)
    assert parser.feed(b" ") == [] and parser.feed(b"\n") == []
    assert parser._parser is None
    events = feed_all(parser, b"</stream:stream>")
    assert [type(event) for event in events] == [StreamEnd]


def test_the_stanza_size_limit_holds_after_a_release():
    parser = StreamParser(max_stanza_size=300)  # the header counts too: it is about 150 bytes
    feed_all(parser, ROOT + b"<presence/>")
    assert parser._parser is None
    with pytest.raises(StreamError) as refused:
        feed_all(parser, b"<message><body>" + b"a" * 400 + b"</body></message>")
    assert refused.value.condition == "policy-violation"


def test_a_stanza_just_under_the_limit_after_a_release_is_accepted():
    parser = StreamParser(max_stanza_size=300)
    feed_all(parser, ROOT + b"<presence/>" + b" " * 500)
    stanza = b"<message><body>" + b"a" * 250 + b"</body></message>"
    assert len(stanza) < 300
    events = feed_all(parser, stanza)
    assert [type(event) for event in events] == [StanzaParsed]


def test_bad_xml_after_a_release_is_still_not_well_formed():
    parser = StreamParser()
    feed_all(parser, ROOT)
    with pytest.raises(StreamError) as refused:
        feed_all(parser, b"<message></presence>")
    assert refused.value.condition == "not-well-formed"


def test_a_restricted_construct_after_a_release_is_refused():
    parser = StreamParser()
    feed_all(parser, ROOT)
    with pytest.raises(StreamError) as refused:
        feed_all(parser, b"<!-- hello -->")
    assert refused.value.condition == "restricted-xml"


def test_a_root_written_with_the_default_namespace_reopens_the_same_way():
    parser = StreamParser()
    feed_all(parser, b"<stream xmlns='http://etherx.jabber.org/streams'>")
    assert parser._parser is None
    events = feed_all(parser, b"<features/></stream>")
    assert [type(event) for event in events] == [StanzaParsed, StreamEnd]


# -- negotiation keeps its parser (issue 17 §6); the session releases it --------------------------------


def test_a_parser_kept_between_stanzas_holds_expat_and_parses_the_same():
    parser = StreamParser()
    parser.keep_between_stanzas(True)
    feed_all(parser, ROOT)
    assert parser._parser is not None
    events = feed_all(parser, b"<message><x:data/></message>")
    assert parser._parser is not None
    assert [event.element[0].tag for event in events] == ["{urn:example:x}data"]


def test_releasing_drops_an_idle_parser_at_once_and_later_stanzas_keep_the_namespaces():
    parser = StreamParser()
    parser.keep_between_stanzas(True)
    feed_all(parser, ROOT + b"<presence/>")
    parser.keep_between_stanzas(False)
    assert parser._parser is None  # nothing pending: dropped now, not at the next stanza
    events = feed_all(parser, b"<message><x:data/></message>")
    assert parser._parser is None and events[0].element[0].tag == "{urn:example:x}data"


def test_releasing_keeps_a_parser_in_the_middle_of_a_stanza():
    parser = StreamParser()
    parser.keep_between_stanzas(True)
    feed_all(parser, ROOT + b"<message to='a'>")
    parser.keep_between_stanzas(False)
    assert parser._parser is not None  # the message is not finished: expat holds it
    events = feed_all(parser, b"<body>x</body></message>")
    assert [event.element.findtext(f"{{{ns.CLIENT}}}body") for event in events] == ["x"]
    assert parser._parser is None


def test_a_stream_keeps_its_parser_until_bound_and_an_idle_session_holds_none():
    from .streamkit import authenticate, tls_client

    client = tls_client()
    assert client.conn._parser._parser is not None  # negotiating: kept between stanzas
    authenticate(client)
    client.open()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert client.conn._parser._parser is not None  # the bind request waits for the adapter
    client.events.extend(client.conn.bind_result(None))
    assert client.conn._parser._parser is None  # bound and idle: no expat parser (issue 17 §5)
    client.send("<presence/>")
    assert client.conn._parser._parser is None
