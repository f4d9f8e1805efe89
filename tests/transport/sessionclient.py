"""A blocking raw-XML client that logs in with SASL EXTERNAL over direct TLS (XEP-0368), binds a resource and
then waits for what ends its session (the stream error that RFC 6120 §4.9 puts before the close)."""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)
AUTH = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"  # RFC 6120 §6.4.2
BIND = (
    b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>live</resource>"
    b"</bind></iq>"
)


class Refused(Exception):
    """The login did not reach a bound session; the message says where it stopped."""


@dataclass
class StreamEnd:
    condition: str | None  # the stream error's condition, None when the stream ended without one
    text: str
    raw: bytes


class Session:
    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def read_until(self, *markers: bytes) -> bytes:
        """Everything up to the first marker; Refused when the server closes first."""
        while True:
            for marker in markers:
                at = self.buffer.find(marker)
                if at >= 0:
                    found, self.buffer = self.buffer[: at + len(marker)], self.buffer[at + len(marker) :]
                    return found
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Refused(f"closed by the server after {self.buffer[-300:]!r}")
            self.buffer += chunk

    def wait_for_end(self) -> StreamEnd:
        """Read until the server closes the stream; the stream error it sent, if any."""
        raw = self.buffer
        while b"</stream:stream>" not in raw:
            try:
                chunk = self.sock.recv(65536)
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            raw += chunk
        error = re.search(rb"<stream:error>(.*?)</stream:error>", raw, re.S)
        if error is None:
            return StreamEnd(None, "", raw)
        condition = re.search(rb"<([a-z-]+) xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]", error[1])
        text = re.search(rb"<text[^>]*>(.*?)</text>", error[1], re.S)
        return StreamEnd(condition[1].decode() if condition else None, text[1].decode() if text else "", raw)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def login(port: int, context: ssl.SSLContext, *, timeout: float = 30) -> Session:
    """A bound session on 127.0.0.1:``port`` (``timeout`` only bounds a hung server)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    session = Session(context.wrap_socket(raw, server_hostname="localhost"))
    try:
        session.sock.sendall(HEADER)
        features = session.read_until(b"</stream:features>", b"<stream:features/>")
        if b"EXTERNAL" not in features:
            raise Refused("EXTERNAL not offered: the certificate was not accepted")
        session.sock.sendall(AUTH)
        if session.read_until(b"<success", b"<failure").endswith(b"<failure"):
            raise Refused("SASL failure")
        session.read_until(b"/>", b"</success>")
        session.sock.sendall(HEADER)  # RFC 6120 §6.4.6
        session.read_until(b"</stream:features>", b"<stream:features/>")
        session.sock.sendall(BIND)
        if b"<jid>" not in session.read_until(b"</iq>"):
            raise Refused("no bind result")
    except BaseException:
        session.close()
        raise
    return session
