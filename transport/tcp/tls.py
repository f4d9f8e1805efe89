"""TLS records over pyOpenSSL memory BIOs, without a socket: bytes from the wire in, plaintext out, and back.

Specs: RFC 8446 §4 (the handshake, driven by whatever arrives), RFC 8446 §6.1 (close_notify), RFC 8446 §6.2
(a fatal alert ends the connection), RFC 6120 §5.4.3.3 (STARTTLS: TLS starts on the socket after
``<proceed/>``). Issue 17 §3: the c2s adapter (``transport.tcp.protocol``) drives this from an
``asyncio.Protocol``, in place of Twisted's ``TLSMemoryBIOProtocol``.

This module knows nothing of sockets, event loops or XMPP: :class:`TlsPump` takes the bytes the peer sent
(:meth:`TlsPump.receive`) and gives back what arrived in plaintext and whether the handshake finished or the
peer closed; what the application writes goes in with :meth:`TlsPump.send`; whatever OpenSSL has to put on
the wire (handshake flights, records, alerts, close_notify) comes out of :meth:`TlsPump.data_to_send`. Every
fatal error (a bad record, an alert the peer sent, a handshake OpenSSL refused, with the alert it wrote for
it) is one :class:`TlsFailure` whose message is OpenSSL's reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL

# Bytes taken from OpenSSL per call (one TLS record is at most 16 KiB of plaintext, RFC 8446 §5.1).
READ_SIZE = 65536


class TlsFailure(Exception):
    """The TLS connection cannot go on (RFC 8446 §6.2): a fatal alert received or sent, a bad record."""


@dataclass(frozen=True)
class Received:
    """What one :meth:`TlsPump.receive` call brought."""

    data: bytes = b""  # application data, decrypted
    handshake_done: bool = False  # the handshake completed during this call
    closed: bool = False  # the peer sent close_notify (RFC 8446 §6.1): nothing more will come


def failure_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons for ``error``, e.g. ``tlsv1 alert unknown ca``, or its class name without any."""
    reasons: list[str] = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else ():
        if isinstance(item, tuple) and len(item) == 3 and item[2]:
            reasons.append(str(item[2]))
    if reasons:
        return "; ".join(reasons)
    return str(error) or type(error).__name__


class TlsPump:
    """One server-side TLS connection over memory BIOs (``SSL.Connection(context, None)``)."""

    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection
        self.handshake_done = False
        self.closed = False  # we sent close_notify: nothing more goes out
        self.peer_closed = False  # the peer sent close_notify: nothing more comes in
        self._early = bytearray()  # written before the handshake completed: sent once it has
        connection.set_accept_state()

    def receive(self, data: bytes) -> Received:
        """Feed bytes from the wire; TlsFailure when the connection is over (what to send, an alert, stays
        in :meth:`data_to_send`)."""
        connection = self.connection
        if data:
            connection.bio_write(data)
        done_now = False
        try:
            if not self.handshake_done:
                try:
                    connection.do_handshake()
                except SSL.WantReadError:
                    return Received()
                self.handshake_done = done_now = True
                if self._early:
                    early, self._early = bytes(self._early), bytearray()
                    connection.sendall(early)
            plaintext = bytearray()
            while True:
                try:
                    plaintext += connection.recv(READ_SIZE)
                except SSL.WantReadError:
                    return Received(bytes(plaintext), done_now)
                except SSL.ZeroReturnError:  # RFC 8446 §6.1: close_notify
                    self.peer_closed = True
                    return Received(bytes(plaintext), done_now, closed=True)
        except SSL.Error as error:
            raise TlsFailure(failure_reason(error)) from error

    def send(self, data: bytes) -> None:
        """Encrypt ``data`` (without partial writes a memory BIO takes every record of it at once)."""
        if self.closed or not data:
            return
        if not self.handshake_done:
            self._early += data
            return
        try:
            self.connection.sendall(data)
        except SSL.Error as error:
            raise TlsFailure(failure_reason(error)) from error

    def close(self) -> None:
        """Queue our close_notify (RFC 8446 §6.1); nothing more is sent after it."""
        if self.closed:
            return
        self.closed = True
        try:
            self.connection.shutdown()
        except SSL.Error:  # the connection broke earlier: there is nothing to close cleanly
            pass

    def data_to_send(self) -> bytes:
        """Everything OpenSSL wrote for the wire since the last call."""
        out = bytearray()
        while True:
            try:
                out += self.connection.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return bytes(out)
