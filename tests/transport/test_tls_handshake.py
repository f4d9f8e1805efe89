"""The listener TLS context (transport/tls/context.py) against a Python ``ssl`` client: who completes the
handshake.

Matches MongooseIM's just_tls: with disconnect_on_failure a missing or invalid client certificate fails the
handshake (selfsigned_peer forgives a self-signed one); without it every handshake completes and the verify
callback only records what was wrong. verify_mode none never refuses, because it asks for no certificate
at all (no CertificateRequest, as MongooseIM): a pyOpenSSL client shows what the server asked for.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field

import pytest
from OpenSSL import SSL, crypto

from bench.tls_memory import memory_handshake, pump
from tests.transport.tlsclient import HandshakeView, Pki, client_context, make_pki, openssl_handshake
from transport.tls.context import (
    ServerTls,
    TlsConfigError,
    VerifyError,
    build_context,
    peer_chain,
    release_bio_buffers,
    requires_certificate,
    verify_errors,
)
from xmppauth.config import TlsOptions


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class ServerResult:
    handshake_ok: bool = False
    error: str = ""
    chain_subjects: list[str] = field(default_factory=list)
    errors: tuple[VerifyError, ...] = ()


def _serve_once(listener: socket.socket, tls: ServerTls, result: ServerResult) -> None:
    raw, _ = listener.accept()
    raw.setblocking(True)  # pyOpenSSL needs a blocking socket; the client's close ends every wait
    conn = SSL.Connection(tls.context, raw)
    conn.set_app_data(tls.serverConnectionForTLS(None).get_app_data())
    conn.set_accept_state()
    try:
        conn.do_handshake()
    except (SSL.Error, OSError) as exc:
        result.error = repr(exc)
        raw.close()
        return
    result.handshake_ok = True
    result.chain_subjects = [c.subject.rfc4514_string() for c in peer_chain(conn)]
    result.errors = verify_errors(conn)
    try:
        conn.sendall(b"ok")
        conn.recv(1)
    except (SSL.Error, OSError):
        pass
    raw.close()


def handshake(pki: Pki, tmp_path, options: TlsOptions, client, **client_kw) -> tuple[ServerResult, bytes]:
    """Run one handshake; return what the server saw and what the client read ('ok' only on success)."""
    tls = ServerTls(options, [pki.ca.cert])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    result = ServerResult()
    thread = threading.Thread(target=_serve_once, args=(listener, tls, result))
    thread.start()
    received = b""
    try:
        ctx = client_context(tmp_path, client, **client_kw)
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                    received = sock.recv(2)
                    sock.sendall(b".")
            except (ssl.SSLError, OSError):
                received = b""
    finally:
        thread.join(20)
        listener.close()
    return result, received


KINDS = ("valid", "none", "self_signed", "expired", "untrusted")


def _client(pki: Pki, kind: str):
    return None if kind == "none" else getattr(pki, kind)


# (verify_mode, disconnect_on_failure) -> client kinds whose handshake completes.
EXPECTED_ACCEPTED = {
    ("peer", True): {"valid"},
    ("selfsigned_peer", True): {"valid", "self_signed"},
    ("none", True): set(KINDS),
    ("peer", False): set(KINDS),
    ("selfsigned_peer", False): set(KINDS),
    ("none", False): set(KINDS),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("verify_mode", "disconnect"), list(EXPECTED_ACCEPTED))
def test_handshake_outcome_per_verify_mode_and_disconnect_on_failure(
    pki, tmp_path, verify_mode, disconnect, kind
):
    options = pki.options(verify_mode=verify_mode, disconnect_on_failure=disconnect)
    result, received = handshake(pki, tmp_path, options, _client(pki, kind))
    if kind in EXPECTED_ACCEPTED[(verify_mode, disconnect)]:
        assert result.handshake_ok, result.error
        assert received == b"ok"
    else:
        assert not result.handshake_ok
        assert received == b""  # the client sees an alert or a closed connection, never application data


@pytest.mark.parametrize("kind", ["expired", "untrusted", "self_signed"])
def test_without_disconnect_on_failure_bad_certificate_completes_with_errors_recorded(pki, tmp_path, kind):
    options = pki.options(verify_mode="peer", disconnect_on_failure=False)
    result, _ = handshake(pki, tmp_path, options, _client(pki, kind))
    assert result.handshake_ok
    assert result.errors, "the verify callback must record why the chain is bad"
    assert result.chain_subjects[0] == getattr(pki, kind).cert.subject.rfc4514_string()


def test_valid_certificate_records_no_error_and_exposes_chain_leaf_first(pki, tmp_path):
    result, _ = handshake(pki, tmp_path, pki.options(verify_mode="peer"), pki.valid)
    assert result.handshake_ok
    assert result.errors == ()
    assert result.chain_subjects[0] == pki.valid.cert.subject.rfc4514_string()


def test_expired_certificate_error_is_named(pki, tmp_path):
    options = pki.options(verify_mode="peer", disconnect_on_failure=False)
    result, _ = handshake(pki, tmp_path, options, pki.expired)
    assert "certificate has expired" in [e.reason for e in result.errors]


def test_no_certificate_gives_empty_chain_when_allowed(pki, tmp_path):
    result, _ = handshake(pki, tmp_path, pki.options(verify_mode="peer", disconnect_on_failure=False), None)
    assert result.handshake_ok
    assert result.chain_subjects == []


def test_tls_1_1_is_refused_by_the_server(pki, tmp_path):
    ctx = client_context(tmp_path, pki.valid, maximum_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that the client really offers TLS 1.1
    tls = ServerTls(pki.options(verify_mode="none"), [pki.ca.cert])
    listener = socket.create_server(("127.0.0.1", 0))
    result = ServerResult()
    thread = threading.Thread(target=_serve_once, args=(listener, tls, result))
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
                ctx.wrap_socket(raw, server_hostname="localhost")
    finally:
        thread.join(20)
        listener.close()
    assert not result.handshake_ok
    assert "unsupported protocol" in result.error


def test_tls_1_2_with_client_certificate_works(pki, tmp_path):
    options = pki.options(verify_mode="peer")
    result, received = handshake(pki, tmp_path, options, pki.valid, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert result.handshake_ok and received == b"ok"


def test_tls_1_2_without_certificate_fails_when_required(pki, tmp_path):
    options = pki.options(verify_mode="peer")
    result, received = handshake(pki, tmp_path, options, None, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert not result.handshake_ok and received == b""


def client_view(pki: Pki, options: TlsOptions, client, version: int) -> tuple[HandshakeView, ServerResult]:
    """One handshake of a pyOpenSSL client presenting ``client`` at TLS ``version`` with a ServerTls."""
    tls = ServerTls(options, [pki.ca.cert])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    result = ServerResult()
    thread = threading.Thread(target=_serve_once, args=(listener, tls, result))
    thread.start()
    try:
        view = openssl_handshake(listener.getsockname()[1], client, version, read=b"ok")
    finally:
        thread.join(20)
        listener.close()
    return view, result


TLS_VERSIONS = [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION]
TLS_IDS = ["tls1.2", "tls1.3"]


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
@pytest.mark.parametrize("disconnect", [True, False], ids=["disconnect", "keep"])
def test_certificate_request_names_the_trusted_cas(pki, version, disconnect):
    options = pki.options(verify_mode="peer", disconnect_on_failure=disconnect)
    view, server = client_view(pki, options, pki.valid, version)
    assert view.certificate_requested
    assert view.ca_names == ("xmppauth test client CA",)  # RFC 8446 §4.2.4 certificate_authorities
    assert server.handshake_ok
    assert server.chain_subjects == [pki.valid.cert.subject.rfc4514_string()]


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
@pytest.mark.parametrize("disconnect", [True, False], ids=["disconnect", "keep"])
@pytest.mark.parametrize("kind", ["valid", "self_signed"])
def test_verify_mode_none_sends_no_certificate_request_and_gets_no_certificate(
    pki, version, disconnect, kind
):
    options = pki.options(verify_mode="none", disconnect_on_failure=disconnect)
    view, server = client_view(pki, options, getattr(pki, kind), version)
    assert not view.certificate_requested
    assert view.ca_names == ()
    assert server.handshake_ok  # the handshake completes: TLS without a client certificate
    assert server.chain_subjects == []  # the client had one, but was never asked for it


def test_requires_certificate_only_when_verifying_and_disconnecting():
    assert requires_certificate(TlsOptions(verify_mode="peer", disconnect_on_failure=True))
    assert requires_certificate(TlsOptions(verify_mode="selfsigned_peer", disconnect_on_failure=True))
    assert not requires_certificate(TlsOptions(verify_mode="none", disconnect_on_failure=True))
    assert not requires_certificate(TlsOptions(verify_mode="peer", disconnect_on_failure=False))


def test_unknown_verify_mode_is_a_config_error_naming_the_key(pki):
    with pytest.raises(TlsConfigError, match="tls.verify_mode"):
        build_context(pki.options(verify_mode="strict"), [])


def test_missing_certfile_is_a_config_error_naming_the_file(pki, tmp_path):
    options = TlsOptions(certfile=str(tmp_path / "absent.pem"))
    with pytest.raises(TlsConfigError, match="absent.pem"):
        build_context(options, [])


def test_certfile_holding_certificate_and_key_needs_no_keyfile(pki, tmp_path):
    both = tmp_path / "both.pem"
    both.write_bytes(pki.server_certfile.read_bytes() + pki.server_keyfile.read_bytes())
    build_context(TlsOptions(certfile=str(both)), [pki.ca.cert])


def test_idle_connections_release_their_tls_buffers(pki):
    ctx = build_context(pki.options(), [pki.ca.cert])
    assert ctx.set_mode(0) & SSL.MODE_RELEASE_BUFFERS  # set_mode(0) adds nothing and returns the mode


def test_the_handshake_bio_buffers_go_back_only_when_both_bios_are_empty(pki):
    server = ServerTls(pki.options(), [pki.ca.cert]).serverConnectionForTLS(None)
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_ctx.use_certificate(crypto.X509.from_cryptography(pki.valid.cert))
    client_ctx.use_privatekey(crypto.PKey.from_cryptography_key(pki.valid.key))
    client = SSL.Connection(client_ctx, None)
    memory_handshake(server, client)
    assert peer_chain(server)[0] == pki.valid.cert
    bios = (server._into_ssl, server._from_ssl)  # noqa: SLF001

    client.send(b"early")
    server.bio_write(client.bio_read(65536))
    assert release_bio_buffers(server) is False  # input OpenSSL has not read yet would be lost
    assert server.recv(100) == b"early"
    server.send(b"reply")
    assert release_bio_buffers(server) is False  # output not sent yet would be lost
    pump(server, client)
    assert client.recv(100) == b"reply"
    assert (server._into_ssl, server._from_ssl) == bios  # noqa: SLF001

    assert release_bio_buffers(server) is True
    assert (server._into_ssl, server._from_ssl) != bios  # noqa: SLF001
    client.send(b"after")
    pump(client, server)
    assert server.recv(100) == b"after"
    server.send(b"still talking")
    pump(server, client)
    assert client.recv(100) == b"still talking"
