"""The c2s TCP adapter (transport/tcp/) and the session driver with a stand-in core: STARTTLS, direct TLS,
the certificate check in a thread, disconnect_on_failure after our own verification, held input, the timers
the core asks for, errors, teardown.

The stand-in core speaks lines: ``starttls`` -> ``proceed`` then StartTls; after TLS it writes
``tls verified=<bool>``; ``auth`` -> AuthenticateRequest; ``quit`` -> Close; ``boom`` raises; anything else
is echoed as ``echo <line>``. Like the real core it asks for an auth deadline when the connection is made
and cancels it once authenticated (the real core's keepalive is tested in ``test_driver.py`` and over TCP
in ``test_tcp_slixmpp.py``).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest
from twisted.internet.task import Clock

from tests.transport.tlsclient import Pki, client_context, make_pki
from transport import workers
from transport.tcp import listener as tcp
from transport.tls.context import TlsConfigError
from transport.tls.trust_refresh import refresh_trust_anchors
from transport.xmpp.connection import AUTH_TIMEOUT
from transport.xmpp.events import (
    AUTH_DEADLINE,
    AuthenticateRequest,
    Bound,
    CancelTimer,
    Close,
    StartTimer,
    StartTls,
)
from xmppauth.config import C2SListener, Config, TlsOptions


class LineCore:
    closed = False

    def __init__(self) -> None:
        self.out = bytearray()
        self.buffer = b""
        self.facts = None

    def connection_made(self):
        return [StartTimer(AUTH_DEADLINE, AUTH_TIMEOUT)]

    def timer_fired(self, name: str):
        return self.close_with_error("connection-timeout") if name == AUTH_DEADLINE else []

    def connection_lost(self) -> None:
        self.closed = True

    def receive_data(self, data: bytes):
        self.buffer += data
        events = []
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line == b"starttls":
                self.out += b"proceed\n"
                events.append(StartTls())
            elif line == b"auth":
                events.append(AuthenticateRequest(self.facts, None, "localhost"))
            elif line == b"quit":
                self.out += b"bye\n"
                self.closed = True
                events.append(Close("bye"))
            elif line == b"boom":
                raise RuntimeError("core bug")
            else:
                self.out += b"echo " + line + b"\n"
        return events

    def data_to_send(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data

    def tls_established(self, check, **_):  # channel_bindings (SCRAM -PLUS) are not used here
        self.facts = check.facts if check.verified else None
        self.out += f"tls verified={check.verified}\n".encode()
        return []

    def auth_result(self, result):
        self.out += f"auth {result.jid}\n".encode()
        return [CancelTimer(AUTH_DEADLINE), Bound(result.jid, "")]

    def close_with_error(self, condition: str, text: str = ""):
        if self.closed:
            return []
        self.closed = True
        self.out += f"error {condition}\n".encode()
        return [Close(condition, condition)]

    def send_stanza(self, element) -> bool:
        child = element[0].tag if len(element) else ""
        self.out += f"stanza {element.get('type')} {element.get('to')} {child}\n".encode()
        return True


@dataclass
class Check:
    facts: object
    verified: bool
    reason: str


@dataclass
class Result:
    jid: str | None
    condition: str | None = None
    reason: str = ""


class StubAuthenticator:
    """Verifies like the real one would for the test PKI: only leaves issued by the trusted CA, and never
    a leaf whose CN is in ``refused`` (standing in for revocation, which OpenSSL does not see)."""

    gate: threading.Event | None = None
    refused: set[str] = set()

    def __init__(self, pki: Pki) -> None:
        self.pki = pki

    def check_certificate(self, chain):
        if self.gate is not None:
            self.gate.wait(30)
        if not chain:
            return Check(None, False, "no client certificate presented")
        leaf = chain[0]
        cn = leaf.subject.rfc4514_string()
        ok = leaf.issuer == self.pki.ca.cert.subject and cn not in self.refused
        return Check({"subject": cn}, ok, "chain verified" if ok else "refused")

    def authenticate_external(self, facts, authzid, domain):
        return Result(f"alice@{domain}" if facts else None, None if facts else "not-authorized")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def listen(on_reactor, pki, monkeypatch):
    """Start a listener on 127.0.0.1:0 with the stand-in core; yields a function returning (port, factory)."""
    # The stand-ins use no database: skip the per-call connection housekeeping (pytest-django blocks it).
    monkeypatch.setattr(workers, "with_fresh_connections", lambda function, *args: function(*args))
    ports = []
    StubAuthenticator.gate = None
    StubAuthenticator.refused = set()

    def start(mode="starttls", *, tls=True, clock=None, anchors=None, backlog=1024, **tls_overrides):
        options = pki.options(mode=mode, **tls_overrides) if tls else None
        listener = C2SListener(port=0, ip_address="127.0.0.1", tls=options, backlog=backlog)
        from twisted.internet import reactor

        port = on_reactor(
            tcp.listen_c2s,
            listener,
            options,
            [pki.ca.cert] if anchors is None else anchors,
            reactor,
            core_factory=lambda _listener: LineCore(),
            authenticator_factory=lambda _tls, _peer: StubAuthenticator(pki),
            clock=clock,
        )
        ports.append(port)
        factory = tcp.port_factory(port)
        record_connections(factory)
        return port.getHost().port, factory

    yield start
    for port in ports:
        on_reactor(port.stopListening)


def record_connections(factory) -> None:
    """Keep every protocol the factory builds in ``factory.built`` (what these tests look at)."""
    factory.built = []
    build = factory.buildProtocol

    def recording(addr):
        connection = build(addr)
        factory.built.append(connection)
        return connection

    factory.buildProtocol = recording


def live_connections(factory) -> list:
    """The connections whose driver has not seen the transport go (call on the reactor thread)."""
    return [c for c in factory.built if c.driver is not None and not c.driver.lost]


def read_line(sock) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return data
        data += chunk
    return data


def read_to_eof(sock) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    return data


def direct_tls(tmp_path, port: int, client) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client_context(tmp_path, client).wrap_socket(raw, server_hostname="localhost")


def starttls(tmp_path, port: int, client) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(b"starttls\n")
    assert read_line(raw) == b"proceed\n"
    return client_context(tmp_path, client).wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("connect", [direct_tls, starttls], ids=["direct_tls", "starttls"])
def test_valid_certificate_reaches_the_core_as_verified(listen, tmp_path, pki, connect):
    port, _ = listen("tls" if connect is direct_tls else "starttls")
    with connect(tmp_path, port, pki.valid) as sock:
        assert read_line(sock) == b"tls verified=True\n"
        sock.sendall(b"auth\n")
        assert read_line(sock) == b"auth alice@localhost\n"


@pytest.mark.parametrize("connect", [direct_tls, starttls], ids=["direct_tls", "starttls"])
def test_certificate_our_check_refuses_is_cut_after_handshake_when_disconnect_on_failure(
    listen, tmp_path, pki, connect
):
    StubAuthenticator.refused = {pki.valid.cert.subject.rfc4514_string()}
    port, _ = listen("tls" if connect is direct_tls else "starttls", disconnect_on_failure=True)
    with connect(tmp_path, port, pki.valid) as sock:
        assert read_to_eof(sock) == b""


@pytest.mark.parametrize("connect", [direct_tls, starttls], ids=["direct_tls", "starttls"])
def test_refused_certificate_counts_as_none_without_disconnect_on_failure(listen, tmp_path, pki, connect):
    StubAuthenticator.refused = {pki.valid.cert.subject.rfc4514_string()}
    port, _ = listen("tls" if connect is direct_tls else "starttls", disconnect_on_failure=False)
    with connect(tmp_path, port, pki.valid) as sock:
        assert read_line(sock) == b"tls verified=False\n"
        sock.sendall(b"auth\n")
        assert read_line(sock) == b"auth None\n"


@pytest.mark.parametrize("kind", ["untrusted", "expired", "self_signed"])
def test_invalid_certificate_fails_the_direct_tls_handshake_with_disconnect_on_failure(
    listen, tmp_path, pki, kind
):
    port, _ = listen("tls", disconnect_on_failure=True)
    received = b"?"
    try:
        with direct_tls(tmp_path, port, getattr(pki, kind)) as sock:
            sock.sendall(b"hello\n")  # TLS 1.3: the server's alert arrives after the client's Finished
            received = read_to_eof(sock)
    except (ssl.SSLError, ConnectionError):
        received = b""
    assert received == b""


def test_driver_sees_a_closed_connection_go(listen, tmp_path, on_reactor, pki):
    port, factory = listen("tls")
    with direct_tls(tmp_path, port, pki.valid) as sock:
        read_line(sock)
        assert len(on_reactor(live_connections, factory)) == 1
        sock.sendall(b"quit\n")
        read_to_eof(sock)
    deadline = time.monotonic() + 30  # wait for the reactor to see the close (slow under load)
    while on_reactor(live_connections, factory) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert on_reactor(live_connections, factory) == []
    (connection,) = factory.built
    assert connection.driver.core.closed  # the core was told: no more output


def test_input_sent_during_the_certificate_check_is_handled_after_it(listen, tmp_path, pki):
    StubAuthenticator.gate = threading.Event()
    port, _ = listen("tls")
    with direct_tls(tmp_path, port, pki.valid) as sock:
        sock.sendall(b"first\n")
        StubAuthenticator.gate.set()
        assert read_line(sock) == b"tls verified=True\n"
        assert read_line(sock) == b"echo first\n"


def test_close_event_flushes_then_closes(listen, tmp_path, pki):
    port, _ = listen("tls")
    with direct_tls(tmp_path, port, pki.valid) as sock:
        read_line(sock)
        sock.sendall(b"quit\n")
        assert read_to_eof(sock) == b"bye\n"


def test_client_that_does_not_authenticate_in_time_gets_connection_timeout(listen, on_reactor):
    clock = Clock()
    port, _ = listen("starttls", clock=clock)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hello\n")
        assert read_line(sock) == b"echo hello\n"
        on_reactor(clock.advance, AUTH_TIMEOUT - 1)
        sock.sendall(b"still here\n")
        assert read_line(sock) == b"echo still here\n"
        on_reactor(clock.advance, 1)
        assert read_to_eof(sock) == b"error connection-timeout\n"


def test_authenticated_client_is_not_dropped_by_the_auth_timeout(listen, tmp_path, on_reactor, pki):
    clock = Clock()
    port, _ = listen("tls", clock=clock)
    with direct_tls(tmp_path, port, pki.valid) as sock:
        read_line(sock)
        sock.sendall(b"auth\n")
        read_line(sock)
        on_reactor(clock.advance, AUTH_TIMEOUT * 2)
        sock.sendall(b"ping\n")
        assert read_line(sock) == b"echo ping\n"


def test_core_failure_ends_only_that_connection(listen, tmp_path, pki):
    port, _ = listen("starttls")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as other:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as victim:
            victim.sendall(b"boom\n")
            assert read_to_eof(victim) == b"error internal-server-error\n"
        other.sendall(b"alive\n")
        assert read_line(other) == b"echo alive\n"


def test_driver_holds_the_connection_with_its_jid_and_fingerprint(listen, tmp_path, on_reactor, pki):
    port, factory = listen("tls")
    with direct_tls(tmp_path, port, pki.valid) as sock:
        read_line(sock)
        sock.sendall(b"auth\n")
        read_line(sock)
        (connection,) = on_reactor(live_connections, factory)
        assert connection.driver.jid == "alice@localhost"
        assert connection.driver.cert_fingerprint == pki.valid.facts.fingerprint_sha256
        on_reactor(connection.driver.close_with_error, "revoked", "certificate revoked")
        assert read_to_eof(sock) == b"error revoked\n"


def test_plain_listener_without_tls_never_starts_tls(listen):
    port, _ = listen("starttls", tls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hello\n")
        assert read_line(sock) == b"echo hello\n"


def test_listener_without_certfile_and_without_bootstrap_certificate_names_the_file(settings, on_reactor):
    from twisted.internet import reactor

    config = Config(listen_c2s=(C2SListener(port=0, ip_address="127.0.0.1", tls=TlsOptions()),))
    with pytest.raises(TlsConfigError, match="server.pem.*bootstrap"):
        on_reactor(tcp.start_c2s_listeners, config, reactor)


@pytest.mark.django_db  # the refresh closes the pool thread's stale Django connections first
def test_trust_anchors_added_later_reach_the_handshake(listen, tmp_path, on_reactor, pki, monkeypatch):
    from types import SimpleNamespace

    from twisted.internet import reactor

    port, factory = listen("tls", anchors=[], disconnect_on_failure=True)

    def connect_and_read() -> bytes:
        try:
            with direct_tls(tmp_path, port, pki.valid) as sock:
                return read_line(sock)
        except (ssl.SSLError, ConnectionError):
            return b""

    assert connect_and_read() == b""  # no anchor yet: the CA is unknown to the handshake
    monkeypatch.setattr(
        "certauth.trust.trust_anchors", lambda cacertfile: SimpleNamespace(certificates=(pki.ca.cert,))
    )
    done = threading.Event()
    server_tls = factory.server_tls  # what the listener's LoopingCall runs, on the reactor thread:
    on_reactor(lambda: refresh_trust_anchors(reactor, server_tls, "c2s").addBoth(lambda _: done.set()))
    assert done.wait(10)
    assert connect_and_read() == b"tls verified=True\n"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls13", "tls12"])
def test_a_resumed_session_is_checked_again_like_a_full_handshake(listen, tmp_path, pki, version):
    # Issue 17 §4: OpenSSL skips the verify callback on resumption; the driver's check runs all the same.
    port, _ = listen("tls")
    ctx = client_context(tmp_path, pki.valid, maximum_version=version)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as first:
        assert read_line(first) == b"tls verified=True\n"  # TLS 1.3 tickets came before this
        first.sendall(b"quit\n")  # the server closes with close_notify, so OpenSSL keeps the session
        assert read_line(first) == b"bye\n"
        session = first.session
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as second:
        assert read_line(second) == b"tls verified=True\n"
        assert second.session_reused


def test_openssl_objections_are_kept_on_the_connection_that_stays(listen, tmp_path, on_reactor, pki):
    port, factory = listen("tls", disconnect_on_failure=False)
    with direct_tls(tmp_path, port, pki.untrusted) as sock:
        assert read_line(sock) == b"tls verified=False\n"
        (connection,) = on_reactor(live_connections, factory)
        reasons = [error.reason for error in connection.driver.tls_errors]
    assert "unable to get local issuer certificate" in reasons


def test_client_that_sends_but_never_reads_is_not_read_from_until_it_reads(listen, on_reactor):
    port, factory = listen("starttls", tls=False)
    flood = b"x\n" * (8 << 20)  # 16 MiB in, 56 MiB of echoes out if we kept reading
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sender = threading.Thread(target=lambda: _send_quietly(sock, flood), daemon=True)
    sender.start()

    def buffered() -> int:
        (connection,) = live_connections(factory)
        return connection.transport.get_write_buffer_size()

    deadline = time.monotonic() + 30  # the reactor accepts the connection (slow under load)
    while not on_reactor(live_connections, factory) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    peak = 0
    for _ in range(300):  # sample while the flood runs; the assertion is on the peak, not on time
        peak = max(peak, on_reactor(buffered))
        if not sender.is_alive():
            break
        threading.Event().wait(0.01)
    sock.shutdown(socket.SHUT_RDWR)  # unblocks the sender's sendall
    sock.close()
    sender.join(30)
    assert peak < 1 << 20, f"{peak} bytes queued for a client that does not read"


def _send_quietly(sock, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2's ss shows a listening socket's backlog")
@pytest.mark.parametrize("backlog", [1024, 7])
def test_the_listening_socket_takes_the_configured_backlog(listen, backlog):
    """MongooseIM's listen.*.backlog: ss(8) shows a listening socket's backlog as its Send-Q."""
    port, _factory = listen("tls", backlog=backlog)
    shown = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown[0] == "LISTEN" and int(shown[2]) == backlog, shown


def test_a_port_stopped_before_the_loop_served_it_closes_its_socket(on_reactor, pki):
    from twisted.internet import reactor

    def listen_and_stop() -> int:  # in one turn of the loop: the server was not started yet
        listener = C2SListener(port=0, ip_address="127.0.0.1", tls=pki.options(mode="tls"))
        port = tcp.listen_c2s(
            listener,
            listener.tls,
            [pki.ca.cert],
            reactor,
            core_factory=lambda _listener: LineCore(),
            authenticator_factory=lambda _tls, _peer: StubAuthenticator(pki),
        )
        port.stopListening()
        return port.getHost().port

    number = on_reactor(listen_and_stop)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", number), timeout=1).close()
        except ConnectionRefusedError:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the stopped port still accepts connections")


def test_listen_c2s_needs_the_asyncio_reactor(pki):
    class EpollLike:  # a reactor without an asyncio loop behind it
        pass

    listener = C2SListener(port=0, ip_address="127.0.0.1", tls=pki.options(mode="tls"))
    with pytest.raises(RuntimeError, match="asyncio reactor"):
        tcp.listen_c2s(
            listener,
            listener.tls,
            [pki.ca.cert],
            EpollLike(),
            core_factory=lambda _listener: LineCore(),
            authenticator_factory=lambda _tls, _peer: StubAuthenticator(pki),
        )
