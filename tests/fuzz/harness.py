"""What the fuzz targets share: a bound on the time one input may take, an adapter that drives the sans-I/O
c2s core as TCP, WebSocket and BOSH do, and the checks every transcript must pass.

Used by the hypothesis tests (``tests/fuzz/test_fuzz_*.py``) and by the atheris targets
(``tests/fuzz/atheris_targets.py``). The properties (issue 16 §5): no unhandled exception, no hang, every
refusal a stream error (RFC 6120 §4.9) or a clean close (§4.4), output that stays well-formed XML.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from certauth.pki import CertFacts
from tests.transport.streamkit import IdentityAuthenticator
from transport.xmpp import (
    AuthenticateRequest,
    BindRequest,
    C2SConnection,
    Close,
    StanzaReceived,
    StartTls,
    StreamSettings,
    errors,
)
from transport.xmpp import namespaces as ns
from transport.xmpp.xml import StanzaParsed, serialize, stream_footer

# Far beyond what one input takes (microseconds to milliseconds): only a hang reaches it.
HANG_SECONDS = 10.0
USE_ALARM = True  # False under atheris, whose libFuzzer -timeout uses SIGALRM itself
DOMAIN = "localhost"
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
WS_OPEN = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
AUTH = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"
BIND = (
    b"<iq type='set' id='b1'>"
    b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>"
)
STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
_XML_DECL = b"<?xml version='1.0'?>"
_STREAM_ERROR_TEXT = re.compile(rb'<text xmlns="urn:ietf:params:xml:ns:xmpp-streams"[^>]*>[^<]*</text>')


class Hang(Exception):
    """One input ran longer than HANG_SECONDS."""


@contextlib.contextmanager
def bounded(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread if the block runs longer than ``seconds`` (SIGALRM)."""

    if not USE_ALARM:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise Hang(f"one input took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@functools.cache
def alice_facts() -> CertFacts:
    """The facts of a real client certificate asserting the xmppAddr alice@localhost (RFC 6120 §13.7.1.4)."""
    from tests.certs import make_ca, make_client  # key generation: only when needed

    return make_client(make_ca("fuzz CA"), jids=["alice@localhost"]).facts


def settings_for(
    tls_mode: str = "tls", framing: str = "stream", max_stanza_size: int = 4096
) -> StreamSettings:
    return StreamSettings(
        hosted_domains=(DOMAIN,), tls_mode=tls_mode, framing=framing, max_stanza_size=max_stanza_size
    )


@dataclass
class Transcript:
    """What one connection said and did: output as the adapter got it, events in order."""

    framed: bool
    output: list[bytes] = field(default_factory=list)  # data_to_send() per call, or one frame per item
    events: list[object] = field(default_factory=list)
    closed: bool = False

    def comparable(self) -> tuple[bytes, list[tuple[str, ...]]]:
        """Output and events, less the human text of a stream error: expat names the line and column where it
        noticed bad bytes, which depends on where a chunk ended. The condition is kept."""
        output = _STREAM_ERROR_TEXT.sub(b"<text/>", b"".join(self.output))
        return output, self.summary()

    def summary(self) -> list[tuple[str, ...]]:
        """The events as comparable tuples (stanzas serialised, a Close by its condition)."""
        rows: list[tuple[str, ...]] = []
        for event in self.events:
            if isinstance(event, Close):
                rows.append(("close", str(event.condition)))
            elif isinstance(event, StanzaReceived):
                rows.append(("stanza", serialize(event.element).decode()))
            elif isinstance(event, AuthenticateRequest):
                rows.append(("auth", str(event.authzid), event.domain))
            else:
                rows.append((type(event).__name__, repr(event)))
        return rows


def drive(
    settings: StreamSettings, chunks: Sequence[bytes | StanzaParsed], *, facts: CertFacts | None = None
) -> tuple[C2SConnection, Transcript]:
    """Feed ``chunks`` to a new connection as an adapter would (an element BOSH parsed goes in as is,
    ``receive_element``): STARTTLS is answered with ``facts``
    (verified), an EXTERNAL request with the XEP-0178 identity rules (certauth.identity, no database), a
    bind request with a passing re-check."""
    facts = alice_facts() if facts is None else facts
    counter = itertools.count()
    direct = settings.tls_mode == "tls" or settings.framing == "websocket"
    conn = C2SConnection(
        settings,
        tls_active=direct,
        peer_facts=facts if direct else None,
        peer_verified=direct,
        log_id="fuzz",
        token=lambda n: f"{next(counter):0{n * 2}x}",  # deterministic stream ids and resources
    )
    authenticator = IdentityAuthenticator.from_settings(settings)
    transcript = Transcript(framed=conn.settings.framing == "websocket")

    def take(events: list[object]) -> None:
        if transcript.framed:
            transcript.output.extend(conn.frames_to_send())
        else:
            transcript.output.append(conn.data_to_send())
        for event in events:
            transcript.events.append(event)
            if isinstance(event, StartTls):
                take(conn.tls_established(facts, verified=True))
            elif isinstance(event, AuthenticateRequest):
                take(
                    conn.auth_result(authenticator.authenticate_external(event.facts, event.authzid, DOMAIN))
                )
            elif isinstance(event, BindRequest):
                take(conn.bind_result(None))  # the adapter's re-check at bind passes (no database here)

    for chunk in chunks:
        take(conn.receive_element(chunk) if isinstance(chunk, StanzaParsed) else conn.receive_data(chunk))
    transcript.closed = conn.closed
    return conn, transcript


def stream_segments(output: bytes) -> list[bytes]:
    """The server's streams in a TCP transcript: each restart begins with a new XML declaration."""
    return [_XML_DECL + part for part in output.split(_XML_DECL) if part] if output else []


def _parse_events(document: bytes, complete: bool) -> list[Element]:
    """The elements of ``document`` (well-formed XML, or a well-formed prefix), children before parents."""
    parser = XMLPullParser(events=("end",))
    parser.feed(document)
    if complete:
        parser.close()
    return [element for _, element in parser.read_events()]


def stream_error_of(elements: Sequence[Element]) -> str | None:
    """The condition of the ``<stream:error/>`` among ``elements`` (RFC 6120 §4.9.2), if any."""
    for element in elements:
        if element.tag == ns.STREAM_ERROR:
            conditions = [c.tag for c in element if c.tag.startswith(f"{{{ns.STREAM_ERRORS}}}")]
            names = [ns.split_qname(tag)[1] for tag in conditions if ns.split_qname(tag)[1] != "text"]
            assert len(names) == 1, f"a stream error carries exactly one condition: {names}"
            return names[0]
    return None


def check_transcript(conn: C2SConnection, transcript: Transcript) -> None:
    """The properties every input must keep (issue 16 §5); AssertionError names the one broken."""
    closes = [event for event in transcript.events if isinstance(event, Close)]
    assert len(closes) <= 1, f"closed more than once: {closes}"
    assert conn.closed == bool(closes), "the state says closed but no Close event was given, or the reverse"
    elements: list[Element] = []
    try:
        if transcript.framed:
            for frame in transcript.output:  # RFC 7395 §3.3.3: every message one complete element
                assert frame, "an empty WebSocket frame"
                elements += _parse_events(frame, complete=True)
        else:
            segments = stream_segments(b"".join(transcript.output))
            for index, segment in enumerate(segments):
                last = index == len(segments) - 1
                elements += _parse_events(segment, complete=last and conn.closed)
    except ParseError as exc:
        raise AssertionError(f"the server's output is not well-formed XML: {exc}") from None
    condition = stream_error_of(elements)
    if closes:
        close = closes[0]
        if close.condition is not None:
            assert close.condition in errors.STREAM_CONDITIONS, close.condition
            assert condition == close.condition, f"Close({close.condition}) but the output says {condition}"
        else:
            assert condition is None, "a clean close that sent a stream error"
        last = transcript.output[-1] if transcript.framed else b"".join(transcript.output)
        footer = stream_footer(transcript.framed)  # RFC 6120 §4.4, RFC 7395 §3.6
        assert last.rstrip().endswith(footer), f"the stream was not closed in the output: {last[-200:]!r}"
        # After the end nothing more is read or written (RFC 6120 §4.4).
        assert conn.receive_data(b"<presence/>") == []
        assert conn.data_to_send() == b""
    else:
        assert condition is None, f"a stream error ({condition}) without a Close event"
    for event in transcript.events:
        if isinstance(event, StanzaReceived):  # RFC 6120 §8.1.2.1
            assert event.element.get("from") == conn.full_jid, "a routed stanza not stamped with the full JID"


def assert_cut_changes_nothing(whole: Transcript, cut: Transcript) -> None:
    """The same bytes, whole or cut, make the server say and do the same (stream error texts aside).

    One latitude, expat's: at the start of a document it may hold a few bytes it cannot tokenise yet (a
    partial token, e.g. ``n\\x00\\x00`` in one piece) and report them only with the next bytes, where the same
    bytes cut report at once. Then the side still open has said a prefix of what the closed side said.
    """
    (whole_output, whole_events), (cut_output, cut_events) = whole.comparable(), cut.comparable()
    if whole.closed == cut.closed:
        assert (cut_output, cut_events) == (whole_output, whole_events)
        return
    (open_output, open_events), (closed_output, closed_events) = (
        ((whole_output, whole_events), (cut_output, cut_events))
        if cut.closed
        else ((cut_output, cut_events), (whole_output, whole_events))
    )
    assert closed_output.startswith(open_output), (open_output, closed_output)
    assert closed_events[: len(open_events)] == open_events
    assert closed_events[-1] == ("close", "not-well-formed"), closed_events


def login_prefix(framed: bool = False) -> list[bytes]:
    """A complete direct-TLS login as alice (RFC 6120 §6, §7), for fuzzing what follows it."""
    if framed:  # RFC 7395 §3.3.1: every message declares its namespace
        return [WS_OPEN, AUTH, WS_OPEN, BIND.replace(b"<iq ", b"<iq xmlns='jabber:client' ", 1)]
    return [HEADER, AUTH, HEADER, BIND]
