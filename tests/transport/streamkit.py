"""A scripted XMPP client for driving the sans-I/O c2s core with bytes in unit tests."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

from certauth.identity import resolve_identity
from transport.xmpp import (
    AuthenticateRequest,
    BindRequest,
    C2SConnection,
    Close,
    IdentityDecision,
    StreamSettings,
)
from transport.xmpp import namespaces as ns
from transport.xmpp.xml import StanzaParsed, StreamEnd, StreamOpen, StreamParser

DOMAIN = "example.org"
JULIET = "juliet@example.org"

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
)
STARTTLS = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
AUTH_EXTERNAL = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{}</auth>"
RESPONSE = "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>"
BIND = "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{}</bind></iq>"


@dataclass(frozen=True)
class Facts:
    """Certificate facts as certauth.pki would give them."""

    xmpp_addrs: tuple[str, ...] = (JULIET,)
    common_name: str | None = "juliet"
    fingerprint_sha256: str = "cd" * 32
    subject: str = "CN=juliet"


class IdentityAuthenticator:
    """Only the XEP-0178 identity rules, no database: what the ``pki`` method decides; drives the core."""

    def __init__(
        self,
        hosted_domains: Iterable[str],
        verifiers: Sequence[str] = ("standard",),
        cn_prefix: str = "",
        cn_suffix: str = "",
    ) -> None:
        self.hosted_domains = tuple(hosted_domains)
        self.verifiers = tuple(verifiers)
        self.cn_prefix = cn_prefix
        self.cn_suffix = cn_suffix

    @classmethod
    def from_settings(cls, settings: Any) -> IdentityAuthenticator:
        """From a :class:`~transport.xmpp.connection.StreamSettings`."""
        return cls(settings.hosted_domains, settings.sasl_external, settings.cn_prefix, settings.cn_suffix)

    def authenticate_external(self, facts: Any, authzid: str | None, domain: str) -> IdentityDecision:
        return resolve_identity(
            facts, authzid, domain, self.hosted_domains, self.verifiers, self.cn_prefix, self.cn_suffix
        )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Client:
    """Sends bytes to a C2SConnection and reads back what the server wrote, as elements."""

    def __init__(self, conn: C2SConnection) -> None:
        self.conn = conn
        self.events: list[object] = []
        self.header: dict[str, str] | None = None
        self.server_closed = False
        self._reader = StreamParser(10**7)

    def send(self, text: str | bytes) -> list[object]:
        events = self.conn.receive_data(text.encode() if isinstance(text, str) else text)
        self.events.extend(events)
        return events

    def open(self, to: str = DOMAIN) -> list[Element]:
        """Open (or restart) the stream; returns what the server sent, the features included."""
        self._reader = StreamParser(10**7)
        self.header = None
        self.send(HEADER.format(to=to))
        return self.read()

    def read(self) -> list[Element]:
        """The elements the server wrote since the last read."""
        elements = []
        for event in self._reader.feed(self.conn.data_to_send()):
            if isinstance(event, StreamOpen):
                self.header = event.attrs
            elif isinstance(event, StanzaParsed):
                elements.append(event.element)
            elif isinstance(event, StreamEnd):
                self.server_closed = True
        return elements

    def read_one(self) -> Element:
        elements = self.read()
        assert len(elements) == 1, [e.tag for e in elements]
        return elements[0]

    def closes(self) -> list[Close]:
        return [event for event in self.events if isinstance(event, Close)]

    def auth_requests(self) -> list[AuthenticateRequest]:
        return [event for event in self.events if isinstance(event, AuthenticateRequest)]

    def bind(self, inner: str = "", condition: str | None = None, text: str = "") -> list[object]:
        """Send a bind request and answer the core's BindRequest as the adapter would (``condition`` None:
        the credentials still hold); returns the events of both steps."""
        events = self.send(BIND.format(inner))
        if any(isinstance(event, BindRequest) for event in events):
            answer = self.conn.bind_result(condition, text)
            self.events.extend(answer)
            events = events + answer
        return events


def stream_settings(**overrides: object) -> StreamSettings:
    values: dict[str, object] = {"hosted_domains": (DOMAIN, "other.example")}
    values.update(overrides)
    return StreamSettings(**values)  # type: ignore[arg-type]


def tls_client(facts: Facts | None = Facts(), verified: bool = True, **overrides: object) -> Client:
    """A client over direct TLS, certificate already checked, stream opened (features read)."""
    conn = C2SConnection(stream_settings(tls_mode="tls", **overrides))
    conn.tls_established(facts, verified, None if verified else "unknown issuer")
    client = Client(conn)
    client.features = client.open()  # type: ignore[attr-defined]
    return client


def authenticate(client: Client, authzid_b64: str = "=") -> Element:
    """Send <auth mechanism='EXTERNAL'>, let the XEP-0178 rules decide; returns the server's answer."""
    client.send(AUTH_EXTERNAL.format(authzid_b64))
    request = client.auth_requests()[-1]
    verdict = IdentityAuthenticator.from_settings(client.conn.settings).authenticate_external(
        request.facts, request.authzid, request.domain
    )
    client.events.extend(client.conn.auth_result(verdict))
    return client.read_one()


def session_client(resource: str = "balcony") -> Client:
    """A client with a bound resource: juliet@example.org/balcony."""
    client = tls_client()
    assert authenticate(client).tag == ns.qname(ns.SASL, "success")
    client.open()
    client.bind(f"<resource>{resource}</resource>")
    assert client.read_one().get("type") == "result"
    return client


def condition_of(element: Element, namespace: str) -> str | None:
    """The local name of the first child in ``namespace`` (a stream, SASL or stanza error condition)."""
    for child in element.iter():
        if child is element:
            continue
        child_ns, local = ns.split_qname(child.tag)
        if child_ns == namespace and local != "text":
            return local
    return None
