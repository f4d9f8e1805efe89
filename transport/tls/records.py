"""TLS 1.3 record protection after the handshake, without OpenSSL's per-connection state (issue 17 §5).

Specs: RFC 8446 §5.1-§5.5 (records, the per-record nonce, limits), §7.1 and §7.3 (HKDF-Expand-Label, traffic
keys), §4.6.3 and §7.2 (KeyUpdate), §6 (alerts: close_notify, user_canceled, everything else fatal).

OpenSSL does the handshake; once it is over, a TLS 1.3 connection needs nothing from it but the two
application traffic secrets, the cipher suite and the sequence numbers. An idle OpenSSL ``SSL`` keeps about
27 KiB (bench/RESULTS.md, "What OpenSSL keeps per idle connection"); a :class:`RecordLayer` keeps two
secrets, two keys, two IVs and two counters. ``transport.tcp.tls.TlsPump`` hands a connection over to one
after the handshake and frees the ``SSL``.

What a client may send after the handshake, and what happens otherwise (each refusal is a fatal alert, sent
protected, then :class:`RecordFailure` naming it):

- protected records only (outer type application_data); anything else is ``unexpected_message`` (§5: a
  change_cipher_spec is allowed only before the peer's Finished);
- inside, application data, an alert, or a KeyUpdate handshake message (§4.6.3); any other handshake
  message (a client never sends one after Finished unless asked, and we never ask) is ``unexpected_message``;
- a record that does not decrypt is ``bad_record_mac``; one too long is ``record_overflow``; an alert record
  that is not two bytes is ``decode_error``; a KeyUpdate with a bad length ``decode_error``, with a bad value
  ``illegal_parameter``; handshake bytes that do not end at a record boundary before a key change, or that
  another content type interrupts, are ``unexpected_message`` (§5.1);
- close_notify ends the input (nothing after it is read); user_canceled is ignored (§6.1); any other alert
  ends the connection (§6.2: all others are fatal in TLS 1.3) without an alert of ours.

Keys are updated on the client's KeyUpdate, and ours when asked (one answer for any number of requests in one
read, §4.6.3) and after :data:`REKEY_AFTER` records, well within AES-GCM's limit (§5.5).

Nothing here is logged: the secrets never leave this object, and the reasons carry no key material.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

# RFC 8446 §5.1 / §B.1: content types.
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
KEY_UPDATE = 24  # RFC 8446 §4: HandshakeType key_update
UPDATE_NOT_REQUESTED, UPDATE_REQUESTED = 0, 1  # §4.6.3 KeyUpdateRequest
# §6: alert levels and the descriptions we send or treat apart.
WARNING, FATAL = 1, 2
CLOSE_NOTIFY, UNEXPECTED_MESSAGE, BAD_RECORD_MAC, RECORD_OVERFLOW = 0, 10, 20, 22
ILLEGAL_PARAMETER, DECODE_ERROR, USER_CANCELED = 47, 50, 90
ALERT_NAMES = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 115: "unknown_psk_identity", 116: "certificate_required",
    120: "no_application_protocol",
}  # fmt: skip

HEADER = 5  # §5.1: type (1), legacy_record_version (2), length (2)
MAX_PLAINTEXT = 2**14  # §5.1
MAX_CIPHERTEXT = 2**14 + 256  # §5.2
OUTER_HEADER = bytes((APPLICATION_DATA, 3, 3))  # §5.2: opaque_type, legacy_record_version 0x0303
TAG = 16  # every suite below has a 16-byte tag
IV_LENGTH = 12  # §5.3: every suite below has a 12-byte nonce
# Our own key update after this many records (§5.5: AES-GCM may protect 2^24.5 full records under one key).
REKEY_AFTER = 2**24
SEQUENCE_LIMIT = 2**64  # §5.3: a sequence number never wraps
# KeyUpdates the client may send with no application data between them (each costs a key derivation;
# draft-ietf-tls-rfc8446bis asks implementations to limit them).
MAX_KEY_UPDATES_IN_A_ROW = 32


@dataclass(frozen=True)
class CipherSuite:
    """A TLS 1.3 suite (RFC 8446 §B.4) by OpenSSL's name."""

    aead: Callable[[bytes], AESGCM | ChaCha20Poly1305]
    key_length: int
    hash: Callable[[], hashes.HashAlgorithm]


SUITES: dict[str, CipherSuite] = {
    "TLS_AES_128_GCM_SHA256": CipherSuite(AESGCM, 16, hashes.SHA256),
    "TLS_AES_256_GCM_SHA384": CipherSuite(AESGCM, 32, hashes.SHA384),
    "TLS_CHACHA20_POLY1305_SHA256": CipherSuite(ChaCha20Poly1305, 32, hashes.SHA256),
}


class RecordFailure(Exception):
    """The connection cannot go on (RFC 8446 §6.2); our fatal alert, if any, is in ``data_to_send``."""


def count_records(data: bytes) -> int:
    """How many whole records ``data`` holds (§5.1 headers; OpenSSL's NewSessionTickets at the hand-over)."""
    count, position = 0, 0
    while len(data) - position >= HEADER:
        position += HEADER + int.from_bytes(data[position + 3 : position + 5], "big")
        count += 1
    return count


def expand_label(algorithm: hashes.HashAlgorithm, secret: bytes, label: bytes, length: int) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label(secret, label, "", length)."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + b"\x00"
    return HKDFExpand(algorithm, length, info).derive(secret)


class _Direction:
    """One direction's traffic secret, key, IV and sequence number (RFC 8446 §5.3, §7.3)."""

    # The key, not an AEAD object: cryptography's keeps about 2.4 KiB of cipher state, so one is made when
    # records move (under a microsecond) and let go of after (:meth:`rest`): an idle session holds none.
    __slots__ = ("suite", "secret", "key", "iv", "sequence", "_aead")

    def __init__(self, suite: CipherSuite, secret: bytes, sequence: int = 0) -> None:
        self.suite = suite
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        self._use(secret)
        self.sequence = sequence

    def _use(self, secret: bytes) -> None:
        algorithm = self.suite.hash()
        self.secret = secret
        self.key = expand_label(algorithm, secret, b"key", self.suite.key_length)
        self.iv = int.from_bytes(expand_label(algorithm, secret, b"iv", IV_LENGTH), "big")
        self.sequence = 0
        self._aead = None

    def update(self) -> None:
        """§7.2: the next secret is HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)."""
        algorithm = self.suite.hash()
        self._use(expand_label(algorithm, self.secret, b"traffic upd", algorithm.digest_size))

    def aead(self) -> AESGCM | ChaCha20Poly1305:
        aead = self._aead
        if aead is None:
            aead = self._aead = self.suite.aead(self.key)
        return aead

    def rest(self) -> None:
        self._aead = None

    def nonce(self) -> bytes:
        """§5.3: the IV XORed with the sequence number, left-padded to the IV's length; then one more."""
        sequence = self.sequence
        if sequence >= SEQUENCE_LIMIT - 1:
            raise OverflowError("TLS record sequence number exhausted")
        self.sequence = sequence + 1
        return (self.iv ^ sequence).to_bytes(IV_LENGTH, "big")


class RecordLayer:
    """Protected records of one server-side TLS 1.3 connection whose handshake is over (see the module doc).

    ``written``: how many records OpenSSL already sent under the server's first application traffic secret
    (its NewSessionTickets), the sequence number our first record takes.
    """

    __slots__ = (
        "_read", "_write", "_pending", "_handshake", "_out", "_update_owed", "_updates_in_a_row", "closed",
        "peer_closed",
    )  # fmt: skip

    def __init__(self, suite: str, client_secret: bytes, server_secret: bytes, *, written: int = 0) -> None:
        cipher_suite = SUITES[suite]
        self._read = _Direction(cipher_suite, client_secret)
        self._write = _Direction(cipher_suite, server_secret)
        self._write.sequence = written
        self._pending = b""  # the start of a record not yet whole
        self._handshake = b""  # the start of a handshake message not yet whole (§5.1: it may span records)
        self._out = bytearray()
        self._update_owed = False  # the client asked for a KeyUpdate; ours goes before our next record
        self._updates_in_a_row = 0  # the client's KeyUpdates since its last application data
        self.closed = False  # our close_notify or fatal alert is out: nothing more is sent
        self.peer_closed = False  # the client's close_notify came, or its fatal alert: nothing more is read

    # -- input ----------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the wire; returns the application data they completed. :class:`RecordFailure`
        when the connection is over (our alert, if any, is queued)."""
        if self.peer_closed:
            return b""
        buffer = self._pending + data if self._pending else data
        plaintext = bytearray()
        position, end = 0, len(buffer)
        try:
            while end - position >= HEADER:
                length = int.from_bytes(buffer[position + 3 : position + 5], "big")
                if length > MAX_CIPHERTEXT:
                    self._fail(RECORD_OVERFLOW, "record too long")
                if end - position - HEADER < length:
                    break
                header = buffer[position : position + HEADER]
                body = buffer[position + HEADER : position + HEADER + length]
                position += HEADER + length
                if header[0] != APPLICATION_DATA:  # §5: nothing unprotected after the handshake
                    self._fail(UNEXPECTED_MESSAGE, f"unprotected record (content type {header[0]})")
                self._record(self._open(header, body), plaintext)
                if self.peer_closed:
                    position = end  # §6.1: nothing after close_notify is read
        finally:
            self._pending = buffer[position:] if position < end else b""
            if self._update_owed and not self.closed:
                self._send_key_update()
            self._read.rest()
            self._write.rest()
        return bytes(plaintext)

    def _open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        """§5.2, §5.4: decrypt, then the real content type is the last non-zero byte."""
        try:
            inner = self._read.aead().decrypt(self._read.nonce(), body, header)
        except InvalidTag:
            self._fail(BAD_RECORD_MAC, "bad record mac")
        except OverflowError:
            self._fail(UNEXPECTED_MESSAGE, "record sequence number exhausted")
        if len(inner) > MAX_PLAINTEXT + 1:  # §5.4: padding included
            self._fail(RECORD_OVERFLOW, "record plaintext too long")
        content = inner.rstrip(b"\x00")
        if not content:
            self._fail(UNEXPECTED_MESSAGE, "record without a content type")
        return content[-1], content[:-1]

    def _record(self, opened: tuple[int, bytes], plaintext: bytearray) -> None:
        content_type, content = opened
        if self._handshake and content_type != HANDSHAKE:  # §5.1: no interleaving within a message
            self._fail(UNEXPECTED_MESSAGE, "handshake message interrupted")
        if content_type == APPLICATION_DATA:
            plaintext += content
            self._updates_in_a_row = 0
        elif content_type == ALERT:
            self._alert(content)
        elif content_type == HANDSHAKE:
            self._handshake_messages(content)
        else:
            self._fail(UNEXPECTED_MESSAGE, f"unexpected content type {content_type}")

    def _alert(self, content: bytes) -> None:
        """§6: close_notify ends the input, user_canceled is a warning, anything else is fatal."""
        if len(content) != 2:
            self._fail(DECODE_ERROR, "malformed alert")
        description = content[1]
        if description == USER_CANCELED:
            return
        self.peer_closed = True
        if description != CLOSE_NOTIFY:
            self.closed = True  # §6.2: after a fatal alert, no answer
            raise RecordFailure(f"the client sent alert {ALERT_NAMES.get(description, description)}")

    def _handshake_messages(self, content: bytes) -> None:
        """§4.6.3: KeyUpdate is the one handshake message a client sends after Finished unasked."""
        if not content:
            self._fail(UNEXPECTED_MESSAGE, "empty handshake record")  # §5.1: no zero-length fragments
        messages = self._handshake + content
        self._handshake = b""
        while len(messages) >= 4:
            message_type, length = messages[0], int.from_bytes(messages[1:4], "big")
            if message_type != KEY_UPDATE:
                self._fail(UNEXPECTED_MESSAGE, f"handshake message {message_type} after the handshake")
            if length != 1:
                self._fail(DECODE_ERROR, "malformed KeyUpdate")
            if len(messages) < 5:
                break
            request, messages = messages[4], messages[5:]
            if request not in (UPDATE_NOT_REQUESTED, UPDATE_REQUESTED):
                self._fail(ILLEGAL_PARAMETER, "KeyUpdate request_update out of range")
            if messages:  # §5.1: a key change must come at the end of its record
                self._fail(UNEXPECTED_MESSAGE, "KeyUpdate not at the end of its record")
            self._updates_in_a_row += 1
            if self._updates_in_a_row > MAX_KEY_UPDATES_IN_A_ROW:
                self._fail(UNEXPECTED_MESSAGE, "too many KeyUpdates without application data")
            self._read.update()
            self._update_owed = self._update_owed or request == UPDATE_REQUESTED
        self._handshake = messages

    # -- output ---------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Protect ``data`` in records of at most 16 KiB (§5.1)."""
        if self.closed or not data:
            return
        if self._update_owed:
            self._send_key_update()
        for start in range(0, len(data), MAX_PLAINTEXT):
            self._protect(APPLICATION_DATA, data[start : start + MAX_PLAINTEXT])
        if self._write.sequence >= REKEY_AFTER:
            self._send_key_update()
        self._write.rest()

    def close(self) -> None:
        """Queue our close_notify (§6.1); nothing more is sent after it."""
        if not self.closed:
            self._protect(ALERT, bytes((WARNING, CLOSE_NOTIFY)))
            self.closed = True
            self._write.rest()

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def _send_key_update(self) -> None:
        """§4.6.3: our KeyUpdate (never asking back), then our next records under the next secret."""
        self._update_owed = False
        self._protect(HANDSHAKE, bytes((KEY_UPDATE, 0, 0, 1, UPDATE_NOT_REQUESTED)))
        self._write.update()

    def _protect(self, content_type: int, content: bytes) -> None:
        """§5.2: TLSInnerPlaintext without padding, the header as additional data."""
        header = OUTER_HEADER + (len(content) + 1 + TAG).to_bytes(2, "big")
        try:
            nonce = self._write.nonce()
        except OverflowError as error:
            self.closed = True
            raise RecordFailure("record sequence number exhausted") from error
        self._out += header
        self._out += self._write.aead().encrypt(nonce, content + bytes((content_type,)), header)

    def _fail(self, alert: int, reason: str) -> NoReturn:
        """§6.2: our fatal alert, protected, then the connection is over."""
        if not self.closed:
            self._protect(ALERT, bytes((FATAL, alert)))
            self.closed = True
        self.peer_closed = True
        self._read.rest()
        self._write.rest()
        raise RecordFailure(reason)
