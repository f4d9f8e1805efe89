"""The c2s adapter's TLS record pump (transport/tcp/tls.py) against a Python ``ssl`` client over memory BIOs:
the handshake, application data both ways, close_notify (RFC 8446 §6.1), fatal alerts (RFC 8446 §6.2), and
what the application writes before the handshake is over. No socket, no event loop: bytes move by hand."""

from __future__ import annotations

import ssl

import pytest

from tests.transport.tlsclient import Pki, client_context, make_pki
from transport.tcp.tls import Received, TlsFailure, TlsPump
from transport.tls.context import ServerTls, peer_chain, verify_errors

ALERT = 21  # RFC 8446 §5.1: ContentType alert


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Client:
    """A Python ``ssl`` client over memory BIOs."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def wire(self) -> bytes:
        return self.outgoing.read()

    def take(self, data: bytes) -> None:
        self.incoming.write(data)

    def read(self) -> bytes:
        data = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return data
            if not chunk:
                return data
            data += chunk


def server(pki: Pki, **overrides) -> TlsPump:
    options = pki.options(mode="tls", **overrides)
    return TlsPump(ServerTls(options, [pki.ca.cert], transport="tls").serverConnectionForTLS(None))


def handshake(pump: TlsPump, client: Client) -> list[Received]:
    """Run the handshake to its end both ways; what each server step returned."""
    steps = []
    client_done = False
    for _ in range(10):
        client_done = client.handshake() or client_done
        steps.append(pump.receive(client.wire()))
        client.take(pump.data_to_send())
        if client_done and pump.handshake_done:
            client.handshake()  # TLS 1.3: the client reads the server's tickets with its first read
            return steps
    raise AssertionError("the handshake did not finish")


def connected(pki: Pki, tmp_path, client=None, **overrides) -> tuple[TlsPump, Client]:
    pump, peer = server(pki, **overrides), Client(client_context(tmp_path, client or pki.valid))
    handshake(pump, peer)
    return pump, peer


def test_a_handshake_completes_once_and_hands_over_the_client_chain(pki, tmp_path):
    pump, client = server(pki), Client(client_context(tmp_path, pki.valid))
    steps = handshake(pump, client)
    assert [step.handshake_done for step in steps].count(True) == 1
    assert peer_chain(pump.connection)[0] == pki.valid.cert
    assert verify_errors(pump.connection) == ()


def test_application_data_goes_both_ways(pki, tmp_path):
    pump, client = connected(pki, tmp_path)
    client.tls.write(b"<stream:stream>")
    assert pump.receive(client.wire()) == Received(b"<stream:stream>")
    pump.send(b"<stream:features/>")
    client.take(pump.data_to_send())
    assert client.read() == b"<stream:features/>"


def test_data_that_came_with_the_clients_finished_is_delivered_with_the_handshake(pki, tmp_path):
    pump, client = server(pki), Client(client_context(tmp_path, pki.valid))
    while not client.handshake():
        pump.receive(client.wire())
        client.take(pump.data_to_send())
    client.tls.write(b"<stream:stream>")  # TLS 1.3: the client's Finished and its first record in one read
    received = pump.receive(client.wire())
    assert received.handshake_done and received.data == b"<stream:stream>"


def test_what_is_written_before_the_handshake_is_over_goes_out_after_it(pki, tmp_path):
    pump, client = server(pki), Client(client_context(tmp_path, pki.valid))
    pump.send(b"early")
    handshake(pump, client)
    client.take(pump.data_to_send())
    assert client.read() == b"early"


def test_a_large_write_is_taken_whole(pki, tmp_path):
    pump, client = connected(pki, tmp_path)
    pump.send(b"x" * 100_000)  # more than six records (RFC 8446 §5.1: 16 KiB of plaintext each)
    client.take(pump.data_to_send())
    assert client.read() == b"x" * 100_000


def test_close_notify_from_the_client_is_seen_and_answered(pki, tmp_path):
    pump, client = connected(pki, tmp_path)
    client.tls.write(b"bye")
    with pytest.raises(ssl.SSLWantReadError):
        client.tls.unwrap()  # RFC 8446 §6.1: close_notify, then it waits for ours
    received = pump.receive(client.wire())
    assert received == Received(b"bye", closed=True)
    pump.close()
    client.take(pump.data_to_send())
    client.tls.unwrap()  # our close_notify arrived: a clean close both ways


def test_our_close_notify_follows_our_last_record_and_nothing_goes_after_it(pki, tmp_path):
    pump, client = connected(pki, tmp_path)
    pump.send(b"</stream:stream>")
    pump.close()
    pump.send(b"too late")
    client.take(pump.data_to_send())
    assert client.read() == b"</stream:stream>"  # up to the close_notify, and nothing after it
    client.tls.unwrap()  # our close_notify came: the client's own shutdown completes at once


def test_a_refused_client_certificate_is_a_failure_with_the_alert_to_send(pki, tmp_path):
    pump, client = server(pki, disconnect_on_failure=True), Client(client_context(tmp_path, pki.untrusted))
    with pytest.raises(TlsFailure, match="certificate verify failed"):
        for _ in range(10):
            client.handshake()
            pump.receive(client.wire())
            client.take(pump.data_to_send())
    client.take(pump.data_to_send())
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):  # RFC 8446 §6.2: unknown_ca reached the client
        client.handshake()
        client.read()


def test_a_fatal_alert_from_the_client_is_a_failure_with_its_reason(pki, tmp_path):
    pump = server(pki)
    hello = Client(client_context(tmp_path, pki.valid))
    hello.handshake()
    pump.receive(hello.wire())
    # RFC 8446 §6.2: a fatal (2) handshake_failure (40) alert, in the clear as during a handshake
    with pytest.raises(TlsFailure, match="handshake failure"):
        pump.receive(bytes([ALERT, 3, 3, 0, 2, 2, 40]))


def test_bytes_that_are_not_tls_are_a_failure_with_its_reason(pki):
    pump = server(pki)
    with pytest.raises(TlsFailure, match="wrong version number"):
        pump.receive(b"<stream:stream to='localhost'>")
