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

After a TLS 1.3 handshake with one of RFC 8446's AEAD suites, the pump hands the connection's records over
to :class:`transport.tls.records.RecordLayer` (issue 17 §5: an idle OpenSSL ``SSL`` keeps about 27 KiB):
OpenSSL's key log gave it the application traffic secrets, what the client sent after its Finished is taken
back out of OpenSSL's input, and OpenSSL's NewSessionTickets, the last thing it wrote, set our first sequence
number. The adapter reads the handshake's facts (chain, bindings, resumption) from :attr:`TlsPump.connection`
and then calls :meth:`TlsPump.release_handshake`, which frees the ``SSL`` (marked shut down first, so that a
context with a session cache would keep the session; ours keep it in the client's ticket).
TLS 1.2, and a suite the record layer does not have, stay with OpenSSL to the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL

from transport.tls.context import let_go_keeping_session, record_keys, unread_input
from transport.tls.records import RecordFailure, RecordLayer, count_records

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
        self.connection: SSL.Connection | None = connection  # None once released (records handed over)
        self.records: RecordLayer | None = None  # the record layer, once the connection is handed over
        self.handshake_done = False
        self.closed = False  # we sent close_notify: nothing more goes out
        self.peer_closed = False  # the peer sent close_notify: nothing more comes in
        self._early = bytearray()  # written before the handshake completed: sent once it has
        self._out = bytearray()  # OpenSSL's output taken out before the hand-over
        connection.set_accept_state()

    def receive(self, data: bytes) -> Received:
        """Feed bytes from the wire; TlsFailure when the connection is over (what to send, an alert, stays
        in :meth:`data_to_send`)."""
        if self.records is not None:
            return self._records_received(data, False)
        connection = self.connection
        assert connection is not None
        if data:
            connection.bio_write(data)
        done_now = False
        try:
            if not self.handshake_done:
                self._take_output()  # so that what the finishing step writes can be told apart
                try:
                    connection.do_handshake()
                except SSL.WantReadError:
                    return Received()
                self.handshake_done = done_now = True
                if self._hand_over(connection):
                    return self._records_received(unread_input(connection), True)
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

    def _hand_over(self, connection: SSL.Connection) -> bool:
        """After the handshake: give the records to a :class:`RecordLayer` when the connection allows it."""
        keys = record_keys(connection)
        if keys is None:
            return False
        tickets = self._openssl_output()  # written under the server's application secret: §4.6.1 tickets
        self.records = RecordLayer(
            keys.suite, keys.client_secret, keys.server_secret, written=count_records(tickets)
        )
        self._out += tickets
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.records.send(early)
        return True

    def _records_received(self, data: bytes, done_now: bool) -> Received:
        records = self.records
        assert records is not None
        try:
            plaintext = records.receive(data)
        except RecordFailure as failure:
            self.peer_closed = True
            raise TlsFailure(str(failure)) from failure
        self.peer_closed = records.peer_closed
        return Received(plaintext, done_now, closed=records.peer_closed)

    def release_handshake(self) -> bool:
        """The adapter has read the handshake's facts: free OpenSSL's connection if its records are handed
        over. False when OpenSSL keeps the connection."""
        if self.records is None or self.connection is None:
            return False
        let_go_keeping_session(self.connection)
        self.connection = None
        return True

    def send(self, data: bytes) -> None:
        """Encrypt ``data`` (without partial writes a memory BIO takes every record of it at once)."""
        if self.closed or not data:
            return
        if not self.handshake_done:
            self._early += data
            return
        try:
            if self.records is not None:
                self.records.send(data)
            else:
                assert self.connection is not None
                self.connection.sendall(data)
        except RecordFailure as failure:
            raise TlsFailure(str(failure)) from failure
        except SSL.Error as error:
            raise TlsFailure(failure_reason(error)) from error

    def close(self) -> None:
        """Queue our close_notify (RFC 8446 §6.1); nothing more is sent after it."""
        if self.closed:
            return
        self.closed = True
        if self.records is not None:
            self.records.close()
            return
        try:
            assert self.connection is not None
            self.connection.shutdown()
        except SSL.Error:  # the connection broke earlier: there is nothing to close cleanly
            pass

    def data_to_send(self) -> bytes:
        """Everything for the wire since the last call: OpenSSL's, then the record layer's."""
        out = self._out
        if out:
            self._out = bytearray()
        if self.records is not None:
            return bytes(out) + self.records.data_to_send()
        return bytes(out) + self._openssl_output()

    def _take_output(self) -> None:
        self._out += self._openssl_output()

    def _openssl_output(self) -> bytes:
        out = bytearray()
        if self.connection is None:
            return b""
        while True:
            try:
                out += self.connection.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return bytes(out)
