"""tls-server-end-point (RFC 5929 §4.1) is worked out once per TLS context (issue 17): every connection of a
listener gets its own listener's certificate hash, never another listener's."""

from __future__ import annotations

import gc

from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from bench.tls_memory import memory_handshake
from tests.transport.tlsclient import make_pki
from transport.tls import context as tls_context
from transport.tls.context import ServerTls, channel_bindings


def server_end_point(certfile) -> bytes:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(certfile.read_bytes())
    return certificate.fingerprint(hashes.SHA256())  # the test certificates are signed with SHA-256


def handshake(tls: ServerTls) -> SSL.Connection:
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    server, client = SSL.Connection(tls.context, None), SSL.Connection(client_ctx, None)
    memory_handshake(server, client)
    return server


def test_each_listener_binds_to_its_own_certificate_on_every_connection(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = make_pki(tmp_path / "one"), make_pki(tmp_path / "two")
    listeners = []
    for pki in (first, second):
        options = pki.options(mode="tls", verify_mode="peer", disconnect_on_failure=False)
        listeners.append(
            (ServerTls(options, [pki.ca.cert], transport="tls"), server_end_point(pki.server_certfile))
        )
    assert listeners[0][1] != listeners[1][1]
    for _ in range(2):  # the second connection of each context is answered from the per-context cache
        for tls, expected in listeners:
            assert channel_bindings(handshake(tls))["tls-server-end-point"] == expected
    assert {tls.context for tls, _ in listeners} <= set(tls_context._end_points)


def test_a_context_rebuilt_for_new_trust_anchors_is_worked_out_anew(tmp_path):
    pki = make_pki(tmp_path)
    tls = ServerTls(
        pki.options(mode="tls", verify_mode="peer", disconnect_on_failure=False),
        [pki.ca.cert],
        transport="tls",
    )
    old = tls.context
    channel_bindings(handshake(tls))
    tls.update_trust_anchors([pki.ca.cert])
    assert tls.context is not old
    del old
    gc.collect()
    expected = server_end_point(pki.server_certfile)
    assert channel_bindings(handshake(tls))["tls-server-end-point"] == expected
    assert tls_context._end_points[tls.context] == expected
