"""Fuzzing the BOSH body parser (transport/http/bosh.py, XEP-0124 §7, §9; XEP-0206): the request ``<body/>``
read
by the core's restricted parser, its integer attributes (rid, wait, hold), and its children as the session
hands them to the c2s core (each as the core's parser read it, in RFC 7395 framing).

Properties: a request is one ``<body/>`` or a ``BoshError`` with ``bad-request`` and HTTP 400, never another
exception (which the app answers with HTTP 500 and a traceback); an integer attribute is an int or
``bad-request``; every child as the core gets it serialises to exactly one element, and the core answers
whatever the children are with a stream error or a clean close, never an exception.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.strategies import TOKENS, anything
from transport.http.bosh import BODY, Body, BoshError, _as_client_stanza, _int_attr, parse_body
from transport.xmpp.xml import StanzaParsed, parse_document, serialize

BODY_OPEN = b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' sid='s'>"
INTEGERS = st.one_of(
    st.integers(0, 10**20).map(str),
    st.text(max_size=24),
    st.sampled_from(["", "-1", "+1", " 1", "1 ", "0x10", "1e3", "\u00b2", "\u0663", "\uff11", "9" * 5000]),
)


def bodies() -> st.SearchStrategy[bytes]:
    """Bodies with fuzzed attributes and children, and arbitrary bytes."""
    attribute = st.tuples(
        st.sampled_from(["rid", "sid", "wait", "hold", "to", "type", "xmpp:restart", "xmlns:xmpp", "ver"]),
        st.text(max_size=12),
    )
    children = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12)), max_size=8).map(b"".join)

    def render(attrs: list[tuple[str, str]], inner: bytes) -> bytes:
        from xml.sax.saxutils import quoteattr

        written = "".join(f" {name}={quoteattr(value)}" for name, value in dict(attrs).items())
        namespaces = (
            " xmlns:xmpp='urn:xmpp:xbosh'" if "xmpp:" in written and "xmlns:xmpp" not in written else ""
        )
        return (
            f"<body xmlns='http://jabber.org/protocol/httpbind'{namespaces}{written}>".encode()
            + inner
            + b"</body>"
        )

    return st.one_of(st.builds(render, st.lists(attribute, max_size=6), children), anything())


def check_request(data: bytes) -> None:
    with harness.bounded():
        try:
            body = parse_body(data, 4 * 4096 + 4096)
        except BoshError as exc:
            assert (exc.condition, exc.status) == ("bad-request", 400)
            return
        assert body.tag == BODY
        for name in ("rid", "wait", "hold"):
            try:
                value = _int_attr(body, name, 0)
            except BoshError as exc:
                assert (exc.condition, exc.status) == ("bad-request", 400)
            else:
                assert isinstance(value, int) and 0 <= value < 10**16
        children = []
        for child in body.children:
            child = _as_client_stanza(child)
            # What the core gets can be written (routers serialise it) and read back as one element.
            frame = serialize(child.element, default_ns=None, declare_stream=True)
            events = parse_document(frame, 1 << 20)
            assert len(events) == 1 and isinstance(events[0], StanzaParsed), (frame, events)
            children.append(child)
        # The session's core, after a BOSH login (XEP-0206: <open/> per restart, each child as parsed).
        settings = harness.settings_for("tls", framing="websocket")
        conn, transcript = harness.drive(settings, [*harness.login_prefix(framed=True), *children])
        harness.check_transcript(conn, transcript)


@given(bodies())
@example(BODY_OPEN.replace(b"rid='1'", "rid='\u00b2'".encode()) + b"</body>")  # crasher: int('²') ValueError
@example(BODY_OPEN.replace(b"rid='1'", b"rid='" + b"9" * 5000 + b"'") + b"</body>")  # crasher: int limit
@example(BODY_OPEN + b"<message to='bob@localhost'><body>hi</body></message></body>")
@example(BODY_OPEN + b"<presence xmlns='jabber:client' a='&#9;'/></body>")
@example(  # crasher (atheris): a '}' in a namespace broke the element name the child was written with
    BODY_OPEN
    + b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping{http://jabber$org/protocol/httpbind}body'/>"
    b"</iq></body>"
)
def test_a_request_is_one_body_or_a_bad_request_and_its_children_reach_the_core_well_formed(data):
    check_request(data)


@given(INTEGERS)
@example("\u00b2")  # crasher: str.isdigit() is True, int() raises ValueError -> HTTP 500
@example("\u0663")  # crasher: an Arabic-Indic digit was read as 3
@example("9" * 5000)  # crasher: int() refuses more than 4300 digits -> HTTP 500
def test_an_integer_attribute_is_ascii_digits_or_a_bad_request(value):
    body = parse_body(BODY_OPEN + b"</body>", 4096)
    body = Body({**body.attrs, "rid": value})
    try:
        rid = _int_attr(body, "rid")
    except BoshError as exc:
        assert (exc.condition, exc.status) == ("bad-request", 400)
        assert not (value.isascii() and value.isdigit() and len(value) <= 16)
        return
    assert str(rid) == value.lstrip("0") or (rid == 0 and set(value) == {"0"})
