"""Fuzzing the sans-I/O c2s core (transport/xmpp/): the XML parser with its RFC 6120 §11 limits and the
state machine, fed arbitrary bytes in arbitrary chunkings, from the first byte and after a valid stream
opening or a complete login (issue 16 §5).

Properties: no exception leaves the core, no input hangs it, every refusal is a stream error (RFC 6120 §4.9)
or a clean close (§4.4) followed by nothing, the output stays well-formed XML, and how TCP cuts the bytes
does not change what the server says or does.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.strategies import anything, chunkings
from transport.xmpp import StanzaReceived, errors
from transport.xmpp.namespaces import split_qname
from transport.xmpp.xml import (
    StanzaParsed,
    StreamEnd,
    StreamOpen,
    StreamParser,
    next_piece,
    parse_document,
    serialize,
)

MODES = st.sampled_from(["tls", "starttls", "starttls_required", "none"])


def run(settings, chunks):
    with harness.bounded():
        conn, transcript = harness.drive(settings, chunks)
        harness.check_transcript(conn, transcript)
    return conn, transcript


@given(st.data(), anything(), MODES)
def test_arbitrary_bytes_in_arbitrary_chunks_end_in_a_stream_error_or_a_clean_close(data, stream, mode):
    run(harness.settings_for(mode), data.draw(chunkings(stream)))


def test_crasher_a_stream_header_that_undeclares_the_default_namespace_is_invalid_namespace():
    # Found by atheris: xmlns='' reaches the parser as None, and writing the root start tag again (to prime
    # the next stanza's parser) raised AttributeError out of receive_data, before authentication.
    header = (
        b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='' "
        b"to='localhost' version='1.0'>"
    )
    conn, transcript = run(harness.settings_for("tls"), [header, b"<presence/>"])
    assert transcript.summary()[-1] == ("close", "invalid-namespace")  # RFC 6120 §4.8.2: not jabber:client


@given(st.data(), anything(), st.sampled_from(["tls", "starttls"]))
def test_arbitrary_bytes_after_a_valid_stream_opening(data, tail, mode):
    run(harness.settings_for(mode), [harness.HEADER, *data.draw(chunkings(tail))])


@given(st.data(), anything())
def test_arbitrary_bytes_after_a_complete_login(data, tail):
    conn, transcript = run(
        harness.settings_for("tls"), [*harness.login_prefix(), *data.draw(chunkings(tail))]
    )
    assert any(type(event).__name__ == "Bound" for event in transcript.events)


@given(st.data(), anything())
def test_arbitrary_websocket_messages_after_a_login(data, tail):
    settings = harness.settings_for("tls", framing="websocket")
    run(settings, [*harness.login_prefix(framed=True), *data.draw(chunkings(tail))])


@given(anything().flatmap(chunkings))
@example([b"\xfb", b"\x00\x00\x00", b"\x00"])  # atheris: expat's error column depends on the cut, not more
@example([b"n", b"\x00\x00"])  # atheris: whole, expat holds it as a partial token, silent
def test_how_the_bytes_are_cut_changes_nothing_the_server_says_or_does(chunks):
    settings = harness.settings_for("tls")
    _, whole = run(settings, [b"".join(chunks)])
    _, cut = run(settings, chunks)
    harness.assert_cut_changes_nothing(whole, cut)


# -- the parser alone ---------------------------------------------------------------------------------


def parse_all(data: bytes, framed: bool, limit: int = 4096) -> list[object]:
    """Events of ``data`` read as the core reads it: a stream in pieces from next_piece, or (``framed``) one
    RFC 7395 message read whole; StreamError ends the list."""
    parser = StreamParser(limit)
    events: list[object] = []
    position = 0
    try:
        if framed:
            events += parse_document(data, limit)
        while position < len(data) and not framed:
            end = next_piece(data, position)
            events += parser.feed(data[position:end])
            position = end
    except errors.StreamError as exc:
        assert exc.condition in errors.STREAM_CONDITIONS, exc.condition
        assert framed or parser.dead
        events.append(exc)
    return events


@given(anything(), st.booleans())
@example(b"<a>" * 70, True)  # deeper than MAX_DEPTH: policy-violation, not a RecursionError
@example(
    b"<_ A='' _='&#9;'></_>", True
)  # crasher: a tab in an attribute was written raw, read back as a space
@example(b"<x xmlns='jabber:client'>&#13;</x>", True)  # same for a CR in text (XML 1.0 §2.11)
@example(b"<x xmlns='jabber:client'><y xmlns=''/></x>", True)  # atheris: xmlns='' gives no URI (None)
def test_parser_yields_only_its_events_or_a_stream_error_and_stanzas_serialise_back(data, framed):
    with harness.bounded():
        events = parse_all(data, framed)
    for event in events:
        assert isinstance(event, StreamOpen | StanzaParsed | StreamEnd | errors.StreamError)
        if isinstance(event, StanzaParsed):
            # What we parsed we can write, and reading that back gives the same element (outputs stay
            # well-formed: routers and BOSH serialise what the parser produced).
            written = serialize(event.element, default_ns=None, declare_stream=True)
            again = parse_all(written, framed=True, limit=1 << 20)
            parsed = [e for e in again if isinstance(e, StanzaParsed)]
            assert len(parsed) == 1 and len(again) == 1, (written, again)
            assert serialize(parsed[0].element, default_ns=None, declare_stream=True) == written


def test_crasher_a_namespace_with_a_brace_ends_the_stream_with_bad_format_and_routes_nothing():
    # Found by atheris (BOSH target): names were split at the first '}' of '{namespace}local', so a namespace
    # holding '}' put its rest, unescaped, into the element name the router wrote to the recipient: here a
    # message with a forged 'from' inside alice's stanza. Such a namespace cannot be kept in '{ns}local'
    # form (nor parsed by ElementTree-based clients such as slixmpp): it is refused as it arrives.
    evil = (
        b"<message to='bob@localhost'><x xmlns=\"a}message&#9;from='admin@localhost'&gt;&lt;body&gt;spoof"
        b'&lt;/body&gt;&lt;/message&gt;&lt;y"/></message>'
    )
    conn, transcript = run(harness.settings_for("tls"), [*harness.login_prefix(), evil])
    assert not [event for event in transcript.events if isinstance(event, StanzaReceived)]
    assert transcript.summary()[-1] == ("close", "bad-format")
    assert b"is not a URI" in transcript.output[-1]


def test_a_brace_in_a_namespace_name_is_not_taken_for_the_end_of_it():
    # The rule split_qname keeps: the last '}' ends the namespace (an NCName holds none).
    assert split_qname("{a}b}c") == ("a}b", "c")
