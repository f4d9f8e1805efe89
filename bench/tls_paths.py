"""Which TLS path is cheapest for the c2s listener (issue 17 §3): full mutual-TLS handshakes, path by path.

Prints figures; not a test. Each server variant runs in its own process on 127.0.0.1 (a free port), does a
full mutual-TLS handshake and echoes one line (as ``openssl s_server -rev`` does for ``bench.compare``),
against the same client (``bench.loadclient``'s ``tls`` mode: asyncio and the standard library's ssl, one
ECDSA P-256 client certificate per handshake from ``bench.clientcerts``). Every pyOpenSSL variant uses OUR
context (``transport.tls.context.ServerTls``: ``verify_mode = "peer"``, ``disconnect_on_failure``, the
scratch CA as the trust anchor, our verify and info callbacks) and, after the handshake, reads the client's
chain (``peer_chain``), the verify callback's record and the channel bindings, and gives the handshake's BIO
buffers back (``release_bio_buffers``), as ``transport.tcp.protocol.C2SProtocol`` does after a handshake:

- ``twisted-asyncio``: Twisted's ``TLSMemoryBIOFactory`` on its asyncio reactor (what ``runc2s`` ran before
  bench/RESULTS.md stop 24; still the baseline of the "vs today" column);
- ``twisted-epoll``: the same on Twisted's default (epoll) reactor;
- ``twisted-uvloop``: the same on the asyncio reactor over a uvloop loop (daphne can run this too);
- ``asyncio-bio``: a plain ``asyncio.Protocol`` driving pyOpenSSL's ``SSL.Connection`` over memory BIOs
  directly (``bio_write`` / ``recv`` / ``bio_read``), on the default asyncio loop (what ``runc2s`` runs since
  stop 24, there through ``transport.tcp.tls.TlsPump``);
- ``uvloop-bio``: the same on uvloop;
- ``asyncio-ssl``: asyncio's own TLS (the standard library's ``ssl``, ``CERT_REQUIRED`` with the CA): no
  verify callback (nothing records what OpenSSL thought of a chain, a refusal cannot be recorded with its
  leaf), no intermediates (Python 3.11 exposes the leaf only), and the ``ssl`` module's OpenSSL, not
  cryptography's (the versions are printed); it reads the leaf's DER and parses it;
- ``uvloop-ssl``: the same on uvloop (uvloop has its own TLS transport over the ``ssl`` module);
- ``openssl``: ``openssl s_server -rev`` (``bench.compare.start_openssl``), the usual ceiling; it runs on
  the system's OpenSSL (3.0 on Debian 12), ours on cryptography's (newer): it may use more CPU than ours.

Last, the floor under every pyOpenSSL path: the same handshakes and lines in this process over memory BIOs, a
pyOpenSSL client beside our server connection, counting only the CPU of the server's calls (no socket, no
event loop): what is left above it is the event loop's and the TLS glue's.

A uvloop variant is skipped ("skipped: uvloop not installed") when ``import uvloop`` fails. Each server gets
20 warm-up handshakes, then ``--rounds`` rounds each run every variant once with ``--count`` handshakes at
``--concurrency`` (the order rotates from round to round: the machine is shared); the table holds the medians
over the rounds of handshakes/s, the server's CPU per handshake (``/proc/<pid>/stat``), p99 latency and the
client's CPU per handshake, then each variant's server CPU against today's path. ``--lines N`` makes each
connection echo N lines, one after the other, so the steady-state record path (what a session's stanzas go
through) weighs in beside the handshake.

    .venv/bin/python -m bench.tls_paths                          # 2000 handshakes at 50, 3 rounds
    .venv/bin/python -m bench.tls_paths --count 200 --rounds 1   # a quick look
    .venv/bin/python -m bench.tls_paths --variants twisted-asyncio,asyncio-bio
    .venv/bin/python -m bench.tls_paths --count 1000 --lines 50   # 50 round trips per connection
    .venv/bin/python -m bench.tls_paths --serve asyncio-bio --port P --pki DIR   # one server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DOMAIN = "localhost"
WARM_UP = 20
VARIANTS = (
    "twisted-asyncio",
    "twisted-epoll",
    "twisted-uvloop",
    "asyncio-bio",
    "uvloop-bio",
    "asyncio-ssl",
    "uvloop-ssl",
    "openssl",
)
TODAY = "twisted-asyncio"
LABELS = {
    "twisted-asyncio": "Twisted TLSMemoryBIO, asyncio reactor (today)",
    "twisted-epoll": "Twisted TLSMemoryBIO, epoll reactor",
    "twisted-uvloop": "Twisted TLSMemoryBIO, asyncio reactor on uvloop",
    "asyncio-bio": "asyncio.Protocol + pyOpenSSL memory BIOs",
    "uvloop-bio": "uvloop + pyOpenSSL memory BIOs",
    "asyncio-ssl": "asyncio + stdlib ssl (no verify callback)",
    "uvloop-ssl": "uvloop + stdlib ssl (no verify callback)",
    "openssl": "openssl s_server -rev (ceiling)",
}
READ_SIZE = 65536


# == the servers (``--serve``) ===============================================================================


def server_tls(pki: Path):
    """Our listener's TLS, as ``transport.tcp.listener.listen_c2s`` makes it for a direct TLS port."""
    from certauth.pki import load_certificate
    from transport.tls.context import ServerTls
    from xmppauth.config import TlsOptions

    options = TlsOptions(
        mode="tls",
        certfile=str(pki / "server.pem"),
        keyfile=str(pki / "server.key"),
        verify_mode="peer",
        disconnect_on_failure=True,
    )
    return ServerTls(options, [load_certificate((pki / "ca.pem").read_bytes())], transport="tls")


def after_handshake(connection) -> None:
    """What ``C2SProtocol`` reads after a handshake, before the driver decides (the chain, the verify
    callback's record, the channel bindings, resumption); no verified client chain is a bug here."""
    from transport.tls.context import channel_bindings, peer_chain, session_resumed, verify_errors

    chain = peer_chain(connection)
    if not chain or verify_errors(connection):
        raise RuntimeError("the handshake completed without a verified client chain")
    channel_bindings(connection)
    session_resumed(connection)


def serve_twisted(variant: str, port: int, pki: Path) -> None:
    if variant == "twisted-uvloop":
        import uvloop
        from twisted.internet import asyncioreactor

        asyncioreactor.install(uvloop.new_event_loop())
    elif variant == "twisted-asyncio":
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import reactor
    from twisted.internet.interfaces import IHandshakeListener
    from twisted.internet.protocol import Factory, Protocol
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from zope.interface import implementer

    from transport.tls.context import release_bio_buffers

    @implementer(IHandshakeListener)
    class Echo(Protocol):
        buffer = b""
        release = False

        def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted's name)
            after_handshake(self.transport.getHandle())
            self.release = True
            reactor.callLater(0, self._release)

        def _release(self) -> None:
            if self.release and self.transport is not None and self.transport.connected:
                self.release = not release_bio_buffers(self.transport.getHandle())

        def dataReceived(self, data: bytes) -> None:  # noqa: N802
            self.buffer += data
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                self.transport.write(line[::-1] + b"\n")
            self._release()

    factory = Factory.forProtocol(Echo)
    factory.noisy = False
    reactor.listenTCP(
        port, TLSMemoryBIOFactory(server_tls(pki), False, factory), backlog=1024, interface=HOST
    )
    reactor.run()


class BioEcho(asyncio.Protocol):
    """One connection: pyOpenSSL over memory BIOs driven by an asyncio transport, no Twisted."""

    def __init__(self, tls) -> None:
        self.tls = tls
        self.connection = None
        self.transport = None
        self.handshaken = False
        self.release = False
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connection = self.tls.serverConnectionForTLS(self)
        self.connection.set_accept_state()

    def getPeer(self):  # noqa: N802 (what ServerTls asks a refused connection's protocol for)
        host, port = self.transport.get_extra_info("peername")[:2]
        return SimpleNamespace(host=host, port=port)

    def data_received(self, data: bytes) -> None:
        from OpenSSL import SSL

        from transport.tls.context import release_bio_buffers

        connection = self.connection
        connection.bio_write(data)
        try:
            if not self.handshaken:
                try:
                    connection.do_handshake()
                except SSL.WantReadError:
                    return self._flush()
                self.handshaken = True
                after_handshake(connection)
                self.release = True
            while True:
                try:
                    self.buffer += connection.recv(READ_SIZE)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:  # the client's close_notify
                    connection.shutdown()
                    self._flush()
                    self.transport.close()
                    return None
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                connection.send(line[::-1] + b"\n")
        except SSL.Error:
            self._flush()  # the alert, if any
            self.transport.abort()
            return None
        self._flush()
        if self.release:
            self.release = not release_bio_buffers(connection)
        return None

    def _flush(self) -> None:
        from OpenSSL import SSL

        while True:
            try:
                data = self.connection.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return
            self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self.connection = None


class SslEcho(asyncio.Protocol):
    """One connection over asyncio's own TLS: only the leaf (Python 3.11 has no chain API), no callback."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        from cryptography import x509

        self.transport = transport
        der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if der is None:
            raise RuntimeError("the handshake completed without a client certificate")
        x509.load_der_x509_certificate(der)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.transport.write(line[::-1] + b"\n")


def stdlib_context(pki: Path):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(pki / "ca.pem"))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def serve_asyncio(variant: str, port: int, pki: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if variant.endswith("-bio"):
            tls = server_tls(pki)
            server = await loop.create_server(lambda: BioEcho(tls), HOST, port, backlog=1024)
        else:
            context = stdlib_context(pki)
            server = await loop.create_server(SslEcho, HOST, port, ssl=context, backlog=1024)
        async with server:
            await server.serve_forever()

    if variant.startswith("uvloop"):
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def serve(variant: str, port: int, pki: Path) -> None:
    if variant.startswith("twisted"):
        serve_twisted(variant, port, pki)
    else:
        serve_asyncio(variant, port, pki)


# == the bench ===============================================================================================


def uvloop_missing() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return True
    return False


def make_pki(directory: Path):
    """A scratch CA (EC P-256, as the bootstrap's) and a server certificate for ``localhost`` it signed."""
    from cryptography.hazmat.primitives import serialization

    from certauth.pki import build_ca, generate_private_key, issue_certificate, private_key_to_pem

    ca_key = generate_private_key("ec-p256")
    ca_cert = build_ca("tls_paths bench CA", ca_key, days=2)
    server_key = generate_private_key("ec-p256")
    server_cert = issue_certificate(
        ca_cert, ca_key, server_key.public_key(), common_name=DOMAIN, dns_names=[DOMAIN], server=True, days=2
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (directory / "server.key").write_bytes(private_key_to_pem(server_key))
    (directory / "server.key").chmod(0o600)
    return ca_cert, ca_key


def start(variant: str, pki: Path, run_dir: Path):
    """The variant's server process, listening (a ``bench.targets.common.Target``)."""
    from bench.compare import start_openssl
    from bench.targets.common import Child, Target, free_port

    if variant == "openssl":
        return start_openssl(SimpleNamespace(pki=pki), run_dir / "openssl")
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "bench.tls_paths", "--serve", variant, "--port", str(port)]
    command += ["--pki", str(pki)]
    child = Child(command, dict(os.environ), run_dir / f"{variant}.log", cwd=ROOT)
    child.wait_port(port)
    return Target(child, port)


def median_rows(reports: dict[str, list], skipped: dict[str, str]) -> list[str]:
    """One row per variant: the medians over its rounds, and its server CPU against today's path."""
    rows = [
        "| variant | rounds | handshakes/s | server CPU ms/handshake | vs today | p99 ms "
        "| client CPU ms/handshake | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cpu = {
        name: statistics.median(r.cpu_ms_per_login for r in runs if r.cpu_ms_per_login is not None)
        for name, runs in reports.items()
        if any(r.cpu_ms_per_login is not None for r in runs)
    }
    for name in VARIANTS:
        if name in skipped:
            rows.append(f"| {LABELS[name]} | skipped: {skipped[name]} |{' - |' * 6}")
            continue
        runs = reports.get(name)
        if not runs:
            continue
        errors: Counter[str] = Counter()
        for r in runs:
            errors.update(r.errors)
        ratio = f"{cpu[name] / cpu[TODAY]:.2f}" if name in cpu and cpu.get(TODAY) else "-"
        server = f"{cpu[name]:.3f}" if name in cpu else "-"
        rows.append(
            f"| {LABELS[name]} | {len(runs)} | {statistics.median(r.per_second for r in runs):.0f} "
            f"| {server} "
            f"| {ratio} | {statistics.median(r.p99_ms for r in runs):.1f} "
            f"| {statistics.median(r.client_cpu_ms_per_login for r in runs):.3f} "
            f"| {'; '.join(f'{k} ×{n}' for k, n in errors.most_common()) or '0'} |"
        )
    return rows


def lines_connector(port: int, contexts: list, lines: int) -> Callable[[int], Awaitable]:
    """``bench.loadclient.tls_connector``'s handshake and echoed line, then ``lines - 1`` lines more, each
    sent once the one before came back."""
    from bench.loadclient import tls_handshake

    async def connect(n: int):
        stream = await tls_handshake(HOST, port, DOMAIN, contexts[n % len(contexts)])
        try:
            for _ in range(lines - 1):
                stream.send(b"bench\n")
                await stream.until("echo", b"\n")
        except BaseException:
            stream.writer.transport.abort()
            raise
        return stream

    return connect


def floor_ms(pki: Path, identities: list, lines: int) -> float:
    """Server CPU ms per handshake and ``lines`` echoed lines over memory BIOs in this process, counting only
    the server connection's calls (``process_time`` around them; the client's work is left out)."""
    from OpenSSL import SSL

    from transport.tls.context import release_bio_buffers

    tls = server_tls(pki)
    clients = []
    for identity in identities:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.use_certificate_chain_file(str(identity.pem_file))
        context.use_privatekey_file(str(identity.pem_file))
        clients.append(context)

    def pump(source: SSL.Connection, sink: SSL.Connection) -> None:
        while True:
            try:
                sink.bio_write(source.bio_read(READ_SIZE))
            except SSL.WantReadError:
                return

    clock, spent = time.process_time, 0.0
    for context in clients:
        client = SSL.Connection(context, None)
        client.set_connect_state()
        begin = clock()
        server = tls.serverConnectionForTLS(None)
        server.set_accept_state()
        spent += clock() - begin
        client_done = server_done = False
        while not (client_done and server_done):
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except SSL.WantReadError:
                    pass
            pump(client, server)
            begin = clock()
            if not server_done:
                try:
                    server.do_handshake()
                    server_done = True
                    after_handshake(server)
                except SSL.WantReadError:
                    pass
            pump(server, client)
            spent += clock() - begin
        for _ in range(lines):
            client.send(b"bench\n")
            pump(client, server)
            begin = clock()
            server.send(server.recv(READ_SIZE)[::-1])
            pump(server, client)
            release_bio_buffers(server)
            spent += clock() - begin
            client.recv(READ_SIZE)
    return spent / len(clients) * 1e3


def bench(args: argparse.Namespace) -> int:
    from bench.clientcerts import make_identities
    from bench.loadclient import contexts_for, login_rows, raise_nofile_limit, run_logins
    from bench.run_login_bench import machine

    raise_nofile_limit()
    skipped = {
        name: "uvloop not installed" for name in args.variants if "uvloop" in name and uvloop_missing()
    }
    if "openssl" in args.variants and shutil.which("openssl") is None:
        skipped["openssl"] = "openssl not found"
    variants = [name for name in args.variants if name not in skipped]
    for name, why in skipped.items():
        print(f"# {name}: skipped: {why}", flush=True)
    directory = Path(tempfile.mkdtemp(prefix="xmppauth-tls-paths-"))
    servers: dict[str, object] = {}
    reports: dict[str, list] = {name: [] for name in variants}
    problems: list[str] = []
    floors: list[float] = []
    started = time.monotonic()
    try:
        pki = directory / "pki"
        ca = make_pki(pki)
        identities = make_identities(*ca, DOMAIN, args.count, directory / "clients")
        clients = contexts_for(identities)
        warm = contexts_for(make_identities(*ca, DOMAIN, WARM_UP, directory / "warm", prefix="warm"))
        for name in variants:
            servers[name] = start(name, pki, directory / "run")
            connect = lines_connector(servers[name].port, warm, args.lines)
            warm_up = asyncio.run(run_logins(connect, WARM_UP, 10, "warm-up", server_pid=None, xmpp=False))
            if warm_up.errors:
                problems.append(f"{name} warm-up errors: {dict(warm_up.errors)}")
        for round_ in range(args.rounds):
            shift = round_ % len(variants)
            for name in variants[shift:] + variants[:shift]:
                server = servers[name]
                connect = lines_connector(server.port, clients, args.lines)
                label = f"round {round_ + 1}: {LABELS[name]}"
                report = asyncio.run(
                    run_logins(
                        connect, args.count, args.concurrency, label, server_pid=server.pid, xmpp=False
                    )
                )
                reports[name].append(report)
                print("\n".join(login_rows([report])[2:]), flush=True)
            floors.append(floor_ms(pki, identities, args.lines))
            print(f"# round {round_ + 1}: in-process floor {floors[-1]:.3f} ms per handshake", flush=True)
    finally:
        for name, server in servers.items():
            if server.child.process.poll() is not None:
                problems.append(f"{name} exited: {server.child.output()[-2000:]}")
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(
        f"## Full mutual-TLS handshakes, {args.lines} echoed line(s) each: medians of {args.rounds} rounds "
        f"of {args.count} at concurrency {args.concurrency} (EC P-256 server and client certificates)"
    )
    print()
    print("\n".join(median_rows(reports, skipped)))
    if floors:
        print(
            f"\nIn-process floor (our server connection's calls only, no socket, no loop): "
            f"{statistics.median(floors):.3f} ms server CPU per handshake (median of {len(floors)})"
        )
    print()
    print("\n".join(machine()))
    versions = [
        f"Twisted {__import__('twisted').__version__}",
        f"pyOpenSSL {__import__('OpenSSL').__version__}",
    ]
    if not uvloop_missing():
        versions.append(f"uvloop {__import__('uvloop').__version__}")
    print(f"- {', '.join(versions)}")
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    if problems:
        print("\n## Problems seen\n")
        print("\n".join(problems))
    return 1 if problems or not any(r.ok for runs in reports.values() for r in runs) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="handshakes per variant per round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--lines", type=int, default=1, help="lines each connection echoes (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table holds medians")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--serve", choices=[v for v in VARIANTS if v != "openssl"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; accepted values: {', '.join(VARIANTS)}")
    if args.lines < 1:
        parser.error("--lines must be at least 1")
    if args.serve and (args.port is None or args.pki is None):
        parser.error("--serve needs --port and --pki")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.pki)
        return 0
    return bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
