"""TLS 1.3 records handed over from OpenSSL after the handshake (transport/tls/records.py, issue 17 §5).

Specs: RFC 8446 §5 (records, nonces, limits), §4.6.3 and §7.2 (KeyUpdate), §6 (alerts), §7.1 and §7.3 (keys).

Interoperability is shown against real OpenSSL clients: Python's ``ssl`` over memory BIOs (every suite, data
both ways, our key updates, close_notify, resumption), and ``openssl s_client`` on a real listener for the
client's KeyUpdate. The refusals are driven by a second :class:`RecordLayer` with the two secrets swapped,
which speaks for the client and can send what no well-behaved client library would.
"""

from __future__ import annotations

import gc
import logging
import shutil
import ssl
import subprocess
import time
import weakref

import pytest
from OpenSSL._util import lib

from tests.transport.rawxmpp import STREAM_HEADER
from tests.transport.test_tcp_tls_pump import Client, handshake, server
from tests.transport.tlsclient import Pki, client_context, make_pki
from transport.tcp.tls import TlsFailure, TlsPump
from transport.tls import records as records_module
from transport.tls.context import ServerTls
from transport.tls.records import (
    ALERT,
    APPLICATION_DATA,
    HANDSHAKE,
    KEY_UPDATE,
    SUITES,
    RecordFailure,
    RecordLayer,
    count_records,
)

SUITE_NAMES = sorted(SUITES)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def connected(pki: Pki, tmp_path, *, suite: str | None = None, version=None) -> tuple[TlsPump, Client]:
    pump = server(pki) if suite is None else pump_with_suite(pki, suite)
    client = Client(client_context(tmp_path, pki.valid, maximum_version=version))
    handshake(pump, client)
    return pump, client


def pump_with_suite(pki: Pki, suite: str) -> TlsPump:
    """A server pump whose context allows one TLS 1.3 suite only (Python's ``ssl`` client cannot pick one)."""
    tls = ServerTls(pki.options(mode="tls"), [pki.ca.cert], transport="tls")
    assert lib.SSL_CTX_set_ciphersuites(tls.context._context, suite.encode()) == 1  # noqa: SLF001
    return TlsPump(tls.connection_for("127.0.0.1:1"))


def client_side(pump: TlsPump) -> RecordLayer:
    """A record layer speaking for the client: the server's secrets swapped, the sequence numbers matched."""
    records = pump.records
    assert records is not None
    suite = next(name for name, value in SUITES.items() if value is records._read.suite)
    peer = RecordLayer(suite, records._write.secret, records._read.secret)
    peer._read.sequence = records._write.sequence  # what the server has sent so far (its tickets)
    return peer


def test_a_tls13_connection_is_handed_over_and_openssls_connection_freed(pki, tmp_path):
    pump, client = connected(pki, tmp_path)
    assert pump.records is not None
    connection = weakref.ref(pump.connection)
    assert pump.release_handshake() is True
    gc.collect()
    assert pump.connection is None and connection() is None  # SSL_free: the ~27 KiB of an idle SSL
    client.tls.write(b"<presence/>")
    assert pump.receive(client.wire()).data == b"<presence/>"
    pump.send(b"<iq/>")
    client.take(pump.data_to_send())
    assert client.read() == b"<iq/>"


def test_a_tls12_connection_stays_with_openssl(pki, tmp_path):
    pump, client = connected(pki, tmp_path, version=ssl.TLSVersion.TLSv1_2)
    assert pump.records is None and pump.release_handshake() is False and pump.connection is not None
    client.tls.write(b"<presence/>")
    assert pump.receive(client.wire()).data == b"<presence/>"


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_every_suite_carries_data_both_ways_in_records_of_at_most_16_kib(pki, tmp_path, suite):
    pump, client = connected(pki, tmp_path, suite=suite)
    assert pump.records is not None and client.tls.cipher()[0] == suite
    pump.release_handshake()
    big = bytes(range(256)) * 400  # 102,400 bytes: seven records (RFC 8446 §5.1)
    pump.send(big)
    wire = pump.data_to_send()
    assert count_records(wire) == 7
    client.take(wire)
    assert client.read() == big
    client.tls.write(big)
    assert pump.receive(client.wire()).data == big


def test_what_openssl_wrote_last_sets_our_first_sequence_number(pki, tmp_path):
    """OpenSSL's NewSessionTickets (RFC 8446 §4.6.1) went out under the server's first application secret:
    our first record takes the next number, or the client could not read it."""
    pump, client = connected(pki, tmp_path)
    assert pump.records is not None and pump.records._write.sequence == 2  # OpenSSL sends two tickets
    pump.release_handshake()
    pump.send(b"<iq/>")
    client.take(pump.data_to_send())
    assert client.read() == b"<iq/>"
    assert client.tls.session is not None and client.tls.session.has_ticket


def test_our_own_key_updates_are_read_by_openssl(pki, tmp_path, monkeypatch):
    """RFC 8446 §5.5, §4.6.3: after REKEY_AFTER records, our KeyUpdate, then records under the next secret."""
    monkeypatch.setattr(records_module, "REKEY_AFTER", 4)
    pump, client = connected(pki, tmp_path)
    first = pump.records._write.secret
    for number in range(10):
        pump.send(b"<message n='%d'/>" % number)
        client.take(pump.data_to_send())
        assert client.read() == b"<message n='%d'/>" % number
    assert pump.records._write.secret != first
    client.tls.write(b"<presence/>")  # the client's own keys did not move
    assert pump.receive(client.wire()).data == b"<presence/>"


def test_close_notify_both_ways(pki, tmp_path):
    pump, client = connected(pki, tmp_path)
    pump.close()
    client.take(pump.data_to_send())
    assert client.read() == b""  # RFC 8446 §6.1: a clean end of data, not an error
    pump.send(b"after close")
    assert pump.data_to_send() == b""
    other, peer = connected(pki, tmp_path)
    try:
        peer.tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    received = other.receive(peer.wire())
    assert received.closed and other.peer_closed


def test_the_clients_first_record_may_come_with_its_finished(pki, tmp_path):
    pump, client = server(pki), Client(client_context(tmp_path, pki.valid))
    while not client.handshake():
        pump.receive(client.wire())
        client.take(pump.data_to_send())
    client.tls.write(b"<stream:stream>")  # in the same read as the Finished: taken back out of OpenSSL
    received = pump.receive(client.wire())
    assert pump.records is not None
    assert received.handshake_done and received.data == b"<stream:stream>"


def test_a_record_may_arrive_a_byte_at_a_time(pki, tmp_path):
    pump, _ = connected(pki, tmp_path)
    peer = client_side(pump)
    peer.send(b"<presence/>")
    wire = peer.data_to_send()
    got = b"".join(pump.receive(wire[i : i + 1]).data for i in range(len(wire)))
    assert got == b"<presence/>"


def test_the_clients_key_update_is_followed_and_answered_once(pki, tmp_path):
    """RFC 8446 §4.6.3: the client's next records under its next secret; asked twice while we were silent,
    one KeyUpdate of ours (not requesting one back) before our next record."""
    pump, _ = connected(pki, tmp_path)
    peer = client_side(pump)
    key_update_requested = bytes((KEY_UPDATE, 0, 0, 1, 1))
    for _ in range(2):
        peer._protect(HANDSHAKE, key_update_requested)
        peer._write.update()
    peer.send(b"<presence/>")
    assert pump.receive(peer.data_to_send()).data == b"<presence/>"
    answer = pump.data_to_send()
    assert count_records(answer) == 1
    assert peer.receive(answer) == b""  # our KeyUpdate: the peer's read secret moves
    pump.send(b"<iq/>")
    assert peer.receive(pump.data_to_send()) == b"<iq/>"


def test_user_canceled_is_ignored(pki, tmp_path):
    pump, _ = connected(pki, tmp_path)
    peer = client_side(pump)
    peer._protect(ALERT, bytes((1, 90)))  # RFC 8446 §6.1 user_canceled
    peer.send(b"<presence/>")
    assert pump.receive(peer.data_to_send()).data == b"<presence/>"


def test_nothing_after_close_notify_is_read(pki, tmp_path):
    pump, _ = connected(pki, tmp_path)
    peer = client_side(pump)
    peer.close()
    peer.closed = False
    peer.send(b"<presence/>")  # after its close_notify: RFC 8446 §6.1 says to ignore it
    received = pump.receive(peer.data_to_send())
    assert received.closed and received.data == b""
    assert pump.receive(b"\x17\x03\x03\x00\x01x").data == b""


def tampered(wire: bytes) -> bytes:
    return wire[:-1] + bytes((wire[-1] ^ 1,))


REFUSALS = {
    # name: (what the client sends, the alert we answer with or None, the reason)
    "tampered record": (lambda peer: tampered(sent(peer, APPLICATION_DATA, b"<x/>")), "bad_record_mac",
                        "bad record mac"),
    "unprotected record": (lambda peer: b"\x15\x03\x03\x00\x02\x02\x28", "unexpected_message",
                           "unprotected record (content type 21)"),
    "change_cipher_spec after Finished": (lambda peer: b"\x14\x03\x03\x00\x01\x01", "unexpected_message",
                                          "unprotected record (content type 20)"),
    "record too long": (lambda peer: b"\x17\x03\x03\x41\x01", "record_overflow", "record too long"),
    "plaintext too long": (lambda peer: sent(peer, APPLICATION_DATA, b"x" * (2**14 + 1)), "record_overflow",
                           "record plaintext too long"),
    "plaintext and padding too long": (lambda peer: sent_inner(peer, b"x\x17" + bytes(2**14)),
                                       "record_overflow", "record plaintext too long"),
    "no content type": (lambda peer: sent_inner(peer, b"\x00\x00\x00"), "unexpected_message",
                        "record without a content type"),
    "unknown content type": (lambda peer: sent(peer, 99, b"x"), "unexpected_message",
                             "unexpected content type 99"),
    "malformed alert": (lambda peer: sent(peer, ALERT, b"\x02"), "decode_error", "malformed alert"),
    "empty handshake record": (lambda peer: sent(peer, HANDSHAKE, b""), "unexpected_message",
                               "empty handshake record"),
    "a handshake message other than KeyUpdate": (
        lambda peer: sent(peer, HANDSHAKE, b"\x04\x00\x00\x01\x00"), "unexpected_message",
        "handshake message 4 after the handshake"),
    "KeyUpdate with a bad length": (lambda peer: sent(peer, HANDSHAKE, b"\x18\x00\x00\x02\x00\x00"),
                                    "decode_error", "malformed KeyUpdate"),
    "KeyUpdate with a bad value": (lambda peer: sent(peer, HANDSHAKE, b"\x18\x00\x00\x01\x02"),
                                   "illegal_parameter", "KeyUpdate request_update out of range"),
    "KeyUpdate not at the end of its record": (
        lambda peer: sent(peer, HANDSHAKE, b"\x18\x00\x00\x01\x00\x18"), "unexpected_message",
        "KeyUpdate not at the end of its record"),
    "handshake message interrupted": (
        lambda peer: sent(peer, HANDSHAKE, b"\x18\x00") + sent(peer, APPLICATION_DATA, b"x"),
        "unexpected_message", "handshake message interrupted"),
    "a fatal alert from the client": (lambda peer: sent(peer, ALERT, b"\x02\x28"), None,
                                      "the client sent alert handshake_failure"),
}  # fmt: skip


def sent(peer: RecordLayer, content_type: int, content: bytes) -> bytes:
    peer._protect(content_type, content)
    return peer.data_to_send()


def sent_inner(peer: RecordLayer, inner: bytes) -> bytes:
    """A record whose inner plaintext is ``inner`` as given (no content type byte added)."""
    header = records_module.OUTER_HEADER + (len(inner) + records_module.TAG).to_bytes(2, "big")
    return header + peer._write.aead().encrypt(peer._write.nonce(), inner, header)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_client_that_breaks_the_record_rules_gets_a_fatal_alert(pki, tmp_path, case):
    make, alert, reason = REFUSALS[case]
    pump, _ = connected(pki, tmp_path)
    peer = client_side(pump)
    with pytest.raises(TlsFailure) as failure:
        pump.receive(make(peer))
    assert str(failure.value) == reason
    answer = pump.data_to_send()
    if alert is None:  # RFC 8446 §6.2: no answer to a fatal alert
        assert answer == b""
    else:
        with pytest.raises(RecordFailure, match=f"alert {alert}$"):
            peer.receive(answer)
    pump.send(b"after the failure")
    assert pump.data_to_send() == b"" and pump.receive(b"\x17\x03\x03\x00\x01x").data == b""


def test_a_storm_of_key_updates_is_cut(pki, tmp_path):
    """A client that only ever changes keys makes us derive keys for nothing: RFC 8446bis limits it."""
    pump, _ = connected(pki, tmp_path)
    peer = client_side(pump)
    wire = b""
    for _ in range(records_module.MAX_KEY_UPDATES_IN_A_ROW + 1):
        wire += sent(peer, HANDSHAKE, bytes((KEY_UPDATE, 0, 0, 1, 0)))
        peer._write.update()
    with pytest.raises(TlsFailure, match="too many KeyUpdates"):
        pump.receive(wire)


def test_key_updates_between_data_are_fine(pki, tmp_path):
    pump, _ = connected(pki, tmp_path)
    peer = client_side(pump)
    for number in range(records_module.MAX_KEY_UPDATES_IN_A_ROW * 2):
        wire = sent(peer, HANDSHAKE, bytes((KEY_UPDATE, 0, 0, 1, 0)))
        peer._write.update()
        wire += sent(peer, APPLICATION_DATA, b"%d" % number)
        assert pump.receive(wire).data == b"%d" % number


def test_the_traffic_secrets_are_never_logged(pki, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        pump, client = connected(pki, tmp_path)
        pump.release_handshake()
        client.tls.write(b"<presence/>")
        pump.receive(client.wire())
    secrets = (pump.records._read.secret, pump.records._write.secret)
    assert all(
        secret.hex() not in caplog.text and secret.hex().upper() not in caplog.text for secret in secrets
    )


# -- the client's KeyUpdate, from OpenSSL's own client (openssl s_client), on a real listener ---------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", ["k", "K"])
def test_openssl_s_client_key_update_then_login(c2s, pki, tmp_path, command):
    """``k``: s_client's KeyUpdate; ``K``: one that asks for ours back (RFC 8446 §4.6.3). Then SASL EXTERNAL
    still works both ways, and ours came only when asked."""
    port = c2s("tls", disconnect_on_failure=False)
    client_context(tmp_path, pki.valid)  # writes the certificate and key files
    name = pki.valid.cert.serial_number
    process = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-msg",
         "-cert", str(tmp_path / f"client-{name}.pem"), "-key", str(tmp_path / f"client-{name}.key")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        output = talk(process, STREAM_HEADER + b"\n", b"</stream:features>")
        output += talk(process, command.encode() + b"\n", b"KeyUpdate" if command == "K" else b"")
        auth = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>\n"
        output += talk(process, auth, b"<success")
    finally:
        process.kill()
        process.wait()
    received_updates = [line for line in output.split(b"\n") if b"<<<" in line and b"KeyUpdate" in line]
    sent_updates = [line for line in output.split(b"\n") if b">>>" in line and b"KeyUpdate" in line]
    assert len(sent_updates) == 1, output
    assert len(received_updates) == (1 if command == "K" else 0), output


def talk(process: subprocess.Popen, line: bytes, until: bytes, timeout: float = 10.0) -> bytes:
    """Write ``line`` to s_client; read what it prints until ``until`` shows (or a short pause when empty)."""
    import os
    import select

    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(line)
    process.stdin.flush()
    output = b""
    deadline = time.monotonic() + (timeout if until else 0.5)
    while time.monotonic() < deadline and (not until or until not in output):
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
    assert not until or until in output, output
    return output
