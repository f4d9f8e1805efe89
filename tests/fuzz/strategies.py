"""Hypothesis strategies for the fuzz targets: XML-ish byte streams built from pieces XMPP clients (and
attackers) send, arbitrary bytes, and ways to cut a byte string into the chunks a socket delivers."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.fuzz import harness

# Pieces of XMPP and of XML that RFC 6120 §11 forbids, so the generated streams reach deep states.
TOKENS: tuple[bytes, ...] = (
    harness.HEADER,
    harness.WS_OPEN,
    harness.AUTH,
    harness.BIND,
    harness.STARTTLS,
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'/>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>YWxpY2VAbG9jYWxob3N0</auth>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
    b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>",
    b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Ym9iQGxvY2FsaG9zdA==</response>",
    b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<message to='bob@localhost' type='chat'><body>hi</body></message>",
    b"<message xmlns='jabber:client' to='bob@localhost/x' from='alice@localhost/r'>"
    b"<body>&lt;&amp;</body></message>",
    b"<message to='bad@@jid'/>",
    b"<presence/>",
    b"<presence type='unavailable' from='mallory@localhost'/>",
    b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    b"<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    b"<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
    b"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    b"<iq type='bogus'/>",
    b"<iq xmlns='jabber:client' type='get' id='x'><a/><b/></iq>",
    b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    b"</stream:stream>",
    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' to='localhost'>",
    b"<stream xmlns='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
    b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"<!ENTITY lol 'lol'>",
    b"<!-- comment -->",
    b"<?pi data?>",
    b"<?xml version='1.0' encoding='UTF-16'?>",
    b"<?xml version='1.0' encoding='ISO-8859-1'?>",
    b"&amp;",
    b"&lol;",
    b"&#0;",
    b"&#x1F600;",
    b"<![CDATA[x]]>",
    b"<a xmlns:p='urn:x' p:attr='v' xml:lang='en'>",
    b"</a>",
    b"<a>",
    b"<a/>",
    b"<p:x xmlns:p='urn:y'/>",
    b"<x xmlns='urn:z' attr='&#9;&#10;&#13;'>&#13;</x>",
    b" ",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\xff\xfe",
    b"\xc3",
    b"\xe2\x82\xac",
    b"\xf0\x9f\x98\x80",
    b">",
    b"<",
    b"'",
    b'"',
    b"=",
    b"x" * 1000,
    b"<a>" * 70,
)


def xml_streams(max_tokens: int = 40) -> st.SearchStrategy[bytes]:
    """A byte string of XMPP/XML tokens with random bytes between some of them."""
    piece = st.one_of(
        st.sampled_from(TOKENS),
        st.sampled_from(TOKENS),
        st.binary(max_size=20),
        st.text(max_size=20).map(lambda text: text.encode("utf-8", "surrogatepass")),
    )
    return st.lists(piece, max_size=max_tokens).map(b"".join)


def anything() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or the XML-ish streams above."""
    return st.one_of(st.binary(max_size=2000), xml_streams())


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary places, as TCP may deliver it (empty reads included)."""
    if not data:
        return [b""]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
