"""Hand-driven XMPP over raw sockets: read the server's exact bytes where a library would hide them.

Specs: RFC 6120 §5 (STARTTLS), §6 (SASL), §7 (resource binding), XEP-0199 (ping).
"""

from __future__ import annotations

import re
import socket
import ssl

STREAM_HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
FEATURES_END = (b"</stream:features>", b"<stream:features/>")
STREAM_END = b"</stream:stream>"
SUCCESS = b'<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>'  # RFC 6120 §6.4.6, no additional data
# RFC 6120 §6.4.1: SASL offered with no mechanism in it: what the core sends when none is usable.
NO_MECHANISMS = b'<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>'
CHALLENGE = b'<challenge xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>'  # RFC 6120 §6.4.2, empty challenge


def read_until(sock: socket.socket, *markers: bytes) -> bytes:
    """Read until one of ``markers`` arrived or the peer closed."""
    data = b""
    while not any(marker in data for marker in markers):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after what it sent counts as closing)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionError, ssl.SSLEOFError):
        pass
    return data


def open_tls(
    port: int, context: ssl.SSLContext, *, starttls: bool, session: ssl.SSLSession | None = None
) -> ssl.SSLSocket:
    """A TLS connection, direct (XEP-0368) or after STARTTLS (RFC 6120 §5.4.3.3), offering ``session`` for
    resumption (RFC 8446 §2.2)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if starttls:
        raw.sendall(STREAM_HEADER)
        assert b"<starttls" in read_until(raw, *FEATURES_END)
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"<proceed" in read_until(raw, b"/>")
    return context.wrap_socket(raw, server_hostname="localhost", session=session)


def starttls(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSocket, bytes]:
    """Open a stream, upgrade with STARTTLS (RFC 6120 §5.4.3.3), restart; the socket and the new features."""
    return _opened(open_tls(port, context, starttls=True, session=session))


def direct_tls(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSocket, bytes]:
    """Open a stream over direct TLS (XEP-0368); the socket and the features."""
    return _opened(open_tls(port, context, starttls=False, session=session))


def _opened(sock: ssl.SSLSocket) -> tuple[ssl.SSLSocket, bytes]:
    sock.sendall(STREAM_HEADER)
    return sock, read_until(sock, *FEATURES_END)


def sasl(sock: ssl.SSLSocket, element: bytes) -> bytes:
    """Send one SASL element; the server's answer (one SASL element, possibly with a stream error)."""
    sock.sendall(element)
    return read_until(sock, b"</failure>", SUCCESS, b"</success>", CHALLENGE, b"</challenge>", STREAM_END)


def auth_external(initial: str | None) -> bytes:
    """``<auth mechanism='EXTERNAL'>``: ``initial`` None sends no initial response (an empty element)."""
    open_tag = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'"
    return open_tag + b"/>" if initial is None else open_tag + b">" + initial.encode() + b"</auth>"


def response(text: str) -> bytes:
    base = b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'"
    return base + b"/>" if not text else base + b">" + text.encode() + b"</response>"


def sasl_failure_condition(data: bytes) -> str | None:
    """The condition of the first SASL ``<failure/>`` in ``data`` (RFC 6120 §6.5)."""
    match = re.search(rb"<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><([a-z-]+)/>", data)
    return match.group(1).decode() if match else None


def stream_error_condition(data: bytes) -> str | None:
    """The condition of a ``<stream:error/>`` in ``data`` (RFC 6120 §4.9.3)."""
    match = re.search(rb"<stream:error><([a-z-]+) xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>", data)
    return match.group(1).decode() if match else None


def text_of(data: bytes) -> str:
    """The ``<text/>`` of the first SASL failure or stream error in ``data`` (RFC 6120 §6.4.5, §4.9.2)."""
    start = data.index(b"<text")
    return data[data.index(b">", start) + 1 : data.index(b"</text>")].decode()


def bind(sock: ssl.SSLSocket, resource: str | None = None) -> bytes:
    """Restart after ``<success/>`` and bind (RFC 6120 §7); the bound full JID."""
    sock.sendall(STREAM_HEADER)
    read_until(sock, *FEATURES_END)
    inner = f"<resource>{resource}</resource>".encode() if resource else b""
    sock.sendall(
        b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>" + inner + b"</bind></iq>"
    )
    reply = read_until(sock, b"</iq>")
    match = re.search(rb"<jid>([^<]+)</jid>", reply)
    assert match, reply
    return match.group(1)


def raw_session(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A hand-driven login as alice: STARTTLS, SASL EXTERNAL with '=', resource binding."""
    sock, features = starttls(port, context)
    assert b"EXTERNAL" in features, features
    assert SUCCESS in sasl(sock, auth_external("="))
    assert bind(sock).startswith(b"alice@localhost/")
    return sock


def ping(sock: ssl.SSLSocket, stanza_id: str) -> bytes:
    """XEP-0199 ping to the server; the reply stanza."""
    ping_iq = f"<iq type='get' id='{stanza_id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    sock.sendall(ping_iq.encode())
    data = read_until(sock, stanza_id.encode())
    while not data.rstrip().endswith(b">"):  # the rest of the reply's start tag, should it come split
        data += sock.recv(4096)
    return data
