"""What OpenSSL alone keeps per idle server-side TLS connection (issue 17 §5: memory per idle session).

Holds ``--count`` server connections after a full handshake (pyOpenSSL over memory BIOs, as Twisted drives
them, EC P-256 certificates, TLS 1.3, a client certificate unless ``--no-client-cert``) and one small
record each way, with the context options of ``transport.tls.context.build_context`` (TLS 1.2+,
``SSL_MODE_RELEASE_BUFFERS``, no tickets, no session cache). The client side of each pair is freed. Prints
glibc's bytes in use (``mallinfo2``) and VmRSS per connection, so the floor under our per-session figure
(``bench.compare --idle``) can be read apart from what Python adds.

    .venv/bin/python -m bench.tls_memory                # 2000 connections, OpenSSL's default groups
    .venv/bin/python -m bench.tls_memory --groups X25519    # one key-exchange group only (no ML-KEM)
    .venv/bin/python -m bench.tls_memory --swap-bios    # with transport.tls.context.release_bio_buffers
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from transport.tls.context import release_bio_buffers


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def malloc_in_use() -> int:
    """Bytes glibc's malloc has handed out and not had back (every arena)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().uordblks)


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _issue(name: str, issuer: tuple | None = None, *, ca: bool = False) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def contexts(args: argparse.Namespace) -> tuple[SSL.Context, SSL.Context]:
    ca = _issue("bench CA", ca=True)
    server, client = _issue("localhost", ca), _issue("bench client", ca)
    made = []
    for side, (cert, key) in (("server", server), ("client", client)):
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD if side == "server" else SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        ctx.use_certificate(crypto.X509.from_cryptography(cert))
        ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))
        if args.groups:
            from OpenSSL._util import lib  # pyOpenSSL has no wrapper for the groups list

            if lib.SSL_CTX_set1_curves_list(ctx._context, args.groups.encode()) != 1:  # noqa: SLF001
                raise SystemExit(f"--groups {args.groups}: OpenSSL refused the list")
        if side == "server":
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            if not args.no_client_cert:
                ctx.get_cert_store().add_cert(crypto.X509.from_cryptography(ca[0]))
                ctx.add_client_ca(ca[0])
                ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        made.append(ctx)
    return made[0], made[1]


def pump(a: SSL.Connection, b: SSL.Connection) -> None:
    """Move every byte each memory-BIO connection wrote to the other, until neither has more."""
    moved = True
    while moved:
        moved = False
        for source, sink in ((a, b), (b, a)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            sink.bio_write(data)
            moved = True


def memory_handshake(server: SSL.Connection, client: SSL.Connection) -> None:
    """A full handshake between two memory-BIO connections (accept and connect states set here)."""
    server.set_accept_state()
    client.set_connect_state()
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
        pump(client, server)


def connection(server_ctx: SSL.Context, client_ctx: SSL.Context, swap_bios: bool) -> SSL.Connection:
    server, client = SSL.Connection(server_ctx, None), SSL.Connection(client_ctx, None)
    memory_handshake(server, client)
    if swap_bios and not release_bio_buffers(server):
        raise SystemExit("the BIOs were not empty after the handshake")
    for sender, receiver in ((server, client), (client, server)):
        sender.send(b"<iq/>" * 40)
        pump(sender, receiver)
        receiver.recv(1000)
    return server


def group_name(connection: SSL.Connection) -> str:
    from OpenSSL._util import ffi, lib  # pyOpenSSL has no wrapper for SSL_get0_group_name

    name = lib.SSL_get0_group_name(connection._ssl)  # noqa: SLF001
    return ffi.string(name).decode() if name != ffi.NULL else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--groups", default="", help="key-exchange groups, e.g. X25519 (default: OpenSSL's)")
    parser.add_argument("--no-client-cert", action="store_true")
    parser.add_argument("--swap-bios", action="store_true", help="transport.tls.context.release_bio_buffers")
    args = parser.parse_args(argv)
    server_ctx, client_ctx = contexts(args)
    held = [connection(server_ctx, client_ctx, args.swap_bios) for _ in range(20)]  # warm-up, then kept
    gc.collect()
    malloc_before, rss_before = malloc_in_use(), rss()
    held.extend(connection(server_ctx, client_ctx, args.swap_bios) for _ in range(args.count))
    gc.collect()
    malloc_after, rss_after = malloc_in_use(), rss()
    print(f"{SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}, {held[-1].get_protocol_version_name()}, "
          f"group {group_name(held[-1])}, client certificate {not args.no_client_cert}, "
          f"BIOs swapped {args.swap_bios}, {args.count} connections:")  # fmt: skip
    print(f"  malloc in use {(malloc_after - malloc_before) / args.count / 1024:.1f} KiB per connection, "
          f"VmRSS {(rss_after - rss_before) / args.count / 1024:.1f} KiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
