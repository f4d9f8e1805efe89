"""transport.tls.context on the server side: the chain leaf first, and the verify record kept under Twisted.

OpenSSL's SSL_get_peer_cert_chain leaves the leaf out on the server side, so a client that sends its CA (or an
intermediate) along with its certificate must still be seen with its own certificate first (RFC 8446 §4.4.2:
"The sender's certificate MUST come in the first CertificateEntry").
"""

from __future__ import annotations

from OpenSSL import SSL

from tests.certs import make_ca, make_client
from tests.transport.tlsclient import make_pki
from transport.tls.context import ServerTls, peer_chain, verify_errors


def _handshake_in_memory(server: SSL.Connection, client: SSL.Connection) -> None:
    """Pump bytes between two memory-BIO connections until both finish the handshake."""
    done = {id(server): False, id(client): False}
    for _ in range(50):
        for conn in (client, server):
            if not done[id(conn)]:
                try:
                    conn.do_handshake()
                    done[id(conn)] = True
                except SSL.WantReadError:
                    pass
        for source, target in ((client, server), (server, client)):
            try:
                target.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _client(certs, key) -> SSL.Connection:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.use_certificate(certs[0])
    for extra in certs[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(key)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


def _chain_seen_by_server(tmp_path, ca, certs, key) -> list:
    pki = make_pki(tmp_path)
    tls = ServerTls(pki.options(verify_mode="peer", disconnect_on_failure=False), [ca.cert])
    server = tls.serverConnectionForTLS(None)
    server.set_accept_state()
    _handshake_in_memory(server, _client(certs, key))
    return peer_chain(server)


def test_server_sees_the_leaf_first_when_the_client_sends_its_ca_too(tmp_path):
    ca = make_ca("chain test CA")
    alice = make_client(ca, jids=["alice@localhost"])
    assert _chain_seen_by_server(tmp_path, ca, [alice.cert, ca.cert], alice.key) == [alice.cert, ca.cert]


def test_server_sees_the_lone_leaf_when_the_client_sends_only_it(tmp_path):
    ca = make_ca("chain test CA")
    alice = make_client(ca, jids=["alice@localhost"])
    assert _chain_seen_by_server(tmp_path, ca, [alice.cert], alice.key) == [alice.cert]


def test_verify_errors_survive_twisted_replacing_the_app_data(tmp_path):
    # TLSMemoryBIOFactory calls connection.set_app_data(protocol) after serverConnectionForTLS.
    pki = make_pki(tmp_path)
    tls = ServerTls(pki.options(verify_mode="peer", disconnect_on_failure=False), [pki.ca.cert])
    server = tls.serverConnectionForTLS(None)
    server.set_app_data(object())
    server.set_accept_state()
    _handshake_in_memory(server, _client([pki.untrusted.cert], pki.untrusted.key))
    assert [e.reason for e in verify_errors(server)] == ["unable to get local issuer certificate"]
