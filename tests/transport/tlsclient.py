"""Test helpers for TLS listeners: server credential files and Python ``ssl`` clients with certificates."""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL

from certauth.pki import generate_private_key, issue_certificate
from tests.certs import Issued, make_ca, make_client, make_expired, make_self_signed
from xmppauth.config import TlsOptions


@dataclass(frozen=True)
class Pki:
    """A trusted client CA, a server certificate on disk, and one client certificate of each kind."""

    ca: Issued
    server_certfile: Path
    server_keyfile: Path
    valid: Issued
    expired: Issued
    self_signed: Issued
    untrusted: Issued

    def options(self, **overrides) -> TlsOptions:
        return TlsOptions(certfile=str(self.server_certfile), keyfile=str(self.server_keyfile), **overrides)


def make_pki(directory: Path) -> Pki:
    ca = make_ca("xmppauth test client CA")
    server_ca = make_ca("xmppauth test server CA")
    server_key = generate_private_key("ec-p256")
    server_cert = issue_certificate(
        server_ca.cert, server_ca.key, server_key.public_key(), server=True, dns_names=("localhost",)
    )
    server = Issued(server_cert, server_key, server_ca)
    certfile = directory / "server.pem"
    keyfile = directory / "server.key"
    certfile.write_bytes(server.pem)
    keyfile.write_bytes(server.key_pem)
    return Pki(
        ca=ca,
        server_certfile=certfile,
        server_keyfile=keyfile,
        valid=make_client(ca, jids=["alice@localhost"]),
        expired=make_expired(ca, jids=["alice@localhost"]),
        self_signed=make_self_signed(jids=["carol@localhost"]),
        untrusted=make_client(make_ca("someone else's CA"), jids=["mallory@localhost"]),
    )


def client_context(
    directory: Path, client: Issued | None, *, maximum_version=None, context_class: type = ssl.SSLContext
) -> ssl.SSLContext:
    """A client context presenting ``client`` (or no certificate); it does not check the server.
    ``context_class``: an ``ssl.SSLContext`` subclass (``bench.clientcerts.ResumingContext``)."""
    ctx = context_class(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = maximum_version
    if client is not None:
        name = client.cert.serial_number
        certfile = directory / f"client-{name}.pem"
        keyfile = directory / f"client-{name}.key"
        certfile.write_bytes(b"".join(_pem(c) for c in client.chain[:-1] or client.chain))
        keyfile.write_bytes(client.key_pem)
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def websockets_context(directory: Path, client: Issued | None) -> ssl.SSLContext:
    """A client context for the Python ``websockets`` client: TLS 1.2 at most.

    ``websockets.sync`` reads the socket in a thread while its handshake writes (from
    ``Connection.__init__``), and two threads on one OpenSSL connection under TLS 1.3 (where the server's
    session tickets arrive after the handshake, during that read) lost the upgrade request about once in
    200 connections here: the client then waits for an answer to a request the server never saw. Every
    test that uses ``websockets`` takes this context; Strophe.js (test_ws_strophe.py) covers TLS 1.3.
    """
    return client_context(directory, client, maximum_version=ssl.TLSVersion.TLSv1_2)


def _pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def tls_connect(ctx: ssl.SSLContext, port: int, *, timeout: float = 10) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(sock, server_hostname="localhost")


@dataclass(frozen=True)
class HandshakeView:
    """What a pyOpenSSL client saw of a server's TLS handshake."""

    certificate_requested: bool  # a CertificateRequest arrived (RFC 8446 §4.3.2, RFC 5246 §7.4.4)
    ca_names: tuple[str, ...]  # the CNs of its certificate_authorities (RFC 8446 §4.2.4)


def openssl_handshake(
    port: int, client: Issued | None, version: int = SSL.TLS1_3_VERSION, *, read: bytes = b""
) -> HandshakeView:
    """Handshake with 127.0.0.1:``port`` as a pyOpenSSL client presenting ``client`` (or nothing).

    Its info callback names every handshake message it reads, so whether the server asked for a certificate
    is seen directly, not inferred. ``read``: bytes the server is expected to send first (read and checked,
    so that a TLS 1.3 server has processed the client's Finished).
    """
    states: list[bytes] = []
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(version)
    ctx.set_max_proto_version(version)
    ctx.set_info_callback(lambda conn, where, ret: states.append(conn.get_state_string()))
    if client is not None:
        ctx.use_certificate(client.cert)
        ctx.use_privatekey(client.key)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        # pyOpenSSL wants a blocking socket; the kernel's receive timeout still bounds a silent server.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
        conn = SSL.Connection(ctx, raw)
        conn.set_connect_state()
        conn.set_tlsext_host_name(b"localhost")
        conn.do_handshake()
        if read:
            assert conn.recv(len(read)) == read
        names = tuple(name.CN for name in conn.get_client_ca_list())
        try:
            conn.shutdown()
        except SSL.Error:
            pass
    return HandshakeView(b"SSLv3/TLS read server certificate request" in states, names)
