"""transport.http.proxy_cert: X-SSL-Client-Cert counts only from `[xmppauth] trusted_proxies`, on a plain
listener
marked `behind_tls_proxy`, never over TLS we terminated ourselves (DESIGN §3, issue 12 §5).

Every rule that lets a certificate in is tested both ways: the header from a trusted proxy address on the
proxied listener fills the ASGI TLS extension; the same header sent by anyone else, or on another listener,
or over our own TLS, is ignored, removed, and logged once per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from urllib.parse import quote

import pytest
from cryptography import x509

from tests.certs import make_ca, make_client
from transport.http.proxy_cert import (
    CLIENT_CERT_HEADER,
    SOCKET_PEER_EXTENSION,
    ProxyClientCertMiddleware,
    parse_header_chain,
)
from xmppauth.config import Config, HttpListener, XmppauthOptions

PROXY = "10.1.2.3"
STRANGER = "192.0.2.7"
PROXIED_PORT, PLAIN_PORT = 5280, 5281
OPTIONS = XmppauthOptions(
    trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::1/128"))
)
LISTENERS = (
    HttpListener(port=PROXIED_PORT, ip_address="127.0.0.1", behind_tls_proxy=True),
    HttpListener(port=PLAIN_PORT, ip_address="127.0.0.1"),  # plain, but not declared behind a proxy
)
CONFIG = Config(listen_http=LISTENERS, options=OPTIONS)


@pytest.fixture(scope="module")
def alice():
    return make_client(make_ca("proxy test CA"), jids=["alice@localhost"])


def nginx_escaped(pem: bytes) -> bytes:
    """What nginx's $ssl_client_escaped_cert looks like: the PEM, URL-escaped."""
    return quote(pem.decode()).encode()


def run(scope: dict, config: Config = CONFIG) -> dict:
    """Pass ``scope`` through the middleware; return the scope the application saw."""
    seen: dict = {}

    async def app(scope, receive, send):
        seen.update(scope)

    asyncio.run(ProxyClientCertMiddleware(app, config)(scope, None, None))
    return seen


def http_scope(
    client: str, headers=(), extensions=None, port: int = 40000, server_port: int = PROXIED_PORT
) -> dict:
    scope = {
        "type": "http",
        "client": [client, port],
        "server": ["127.0.0.1", server_port],
        "headers": list(headers),
        "scheme": "http",
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


def leaf(scope: dict) -> x509.Certificate:
    return x509.load_pem_x509_certificate(scope["extensions"]["tls"]["client_cert_chain"][0].encode())


def test_header_from_a_trusted_proxy_becomes_the_client_chain(alice):
    seen = run(http_scope(PROXY, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]))
    assert leaf(seen) == alice.cert
    tls = seen["extensions"]["tls"]
    assert tls["client_cert_name"] == alice.cert.subject.rfc4514_string()
    assert tls["client_cert_error"] is None


def test_header_from_an_address_that_is_not_a_trusted_proxy_is_ignored(alice, caplog):
    caplog.set_level(logging.INFO, logger="transport.http.proxy_cert")
    seen = run(http_scope(STRANGER, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]))
    assert "tls" not in seen.get("extensions", {})
    assert all(name != CLIENT_CERT_HEADER for name, _ in seen["headers"])
    assert any("ignored" in r.getMessage() and STRANGER in r.getMessage() for r in caplog.records)


def test_header_from_a_trusted_ipv6_proxy_is_honoured_and_its_neighbour_is_not(alice):
    header = [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]
    assert leaf(run(http_scope("2001:db8::1", header))) == alice.cert
    assert "tls" not in run(http_scope("2001:db8::2", header)).get("extensions", {})


def test_header_from_a_stranger_does_not_replace_the_chain_of_its_own_tls_connection(alice):
    other = make_client(make_ca("another CA"), jids=["bob@localhost"])
    own = {"tls": {"client_cert_chain": [other.pem.decode()], "client_cert_name": "x"}}
    seen = run(http_scope(STRANGER, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))], extensions=own))
    assert leaf(seen) == other.cert


def test_forwarded_client_address_cannot_pose_as_a_trusted_proxy(alice):
    # daphne --proxy-headers puts X-Forwarded-For into scope["client"]; the socket peer is what counts.
    scope = http_scope(
        PROXY, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))], {SOCKET_PEER_EXTENSION: [STRANGER, 5555]}
    )
    assert "tls" not in run(scope)["extensions"]


def test_trusted_proxy_socket_peer_is_honoured_whatever_scope_client_says(alice):
    scope = http_scope(
        STRANGER, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))], {SOCKET_PEER_EXTENSION: [PROXY, 5555]}
    )
    assert leaf(run(scope)) == alice.cert


def test_trusted_proxy_without_the_header_means_no_client_certificate():
    tls = run(http_scope(PROXY, []))["extensions"]["tls"]
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None


def test_header_over_tls_we_terminated_is_ignored_even_from_a_trusted_proxy(alice):
    # A listener that terminates TLS itself has the real chain of its handshake: no header replaces it.
    own_cert = make_client(make_ca("handshake CA"), jids=["bob@localhost"])
    own = {"tls": {"client_cert_chain": [own_cert.pem.decode()], "tls_version": 0x0304}}
    scope = http_scope(PROXY, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))], extensions=own)
    scope["scheme"] = "https"
    seen = run(scope)
    assert leaf(seen) == own_cert.cert
    assert all(name != CLIENT_CERT_HEADER for name, _ in seen["headers"])


def test_header_from_a_trusted_proxy_on_a_listener_not_declared_behind_a_proxy_is_ignored(alice, caplog):
    caplog.set_level(logging.INFO, logger="transport.http.proxy_cert")
    header = [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]
    seen = run(http_scope(PROXY, header, server_port=PLAIN_PORT))
    assert "tls" not in seen["extensions"]
    assert all(name != CLIENT_CERT_HEADER for name, _ in seen["headers"])
    assert any("behind_tls_proxy" in r.getMessage() for r in caplog.records)


def test_header_from_a_trusted_proxy_without_a_known_server_socket_is_ignored(alice):
    scope = http_scope(PROXY, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))])
    del scope["server"]
    assert "tls" not in run(scope)["extensions"]


def test_trusted_proxy_with_an_empty_header_means_no_client_certificate():
    tls = run(http_scope(PROXY, [(b"x-ssl-client-cert", b"")]))["extensions"]["tls"]
    assert tls["client_cert_chain"] == [] and tls["client_cert_error"] is None


def test_trusted_proxy_with_an_unreadable_header_gives_no_chain_and_says_why():
    tls = run(http_scope(PROXY, [(b"x-ssl-client-cert", b"not%20a%20certificate")]))["extensions"]["tls"]
    assert tls["client_cert_chain"] == []
    assert "unreadable" in tls["client_cert_error"]


def test_trusted_proxy_sending_two_headers_gives_no_chain(alice):
    value = nginx_escaped(alice.pem)
    tls = run(http_scope(PROXY, [(b"x-ssl-client-cert", value), (b"X-SSL-Client-Cert", value)]))
    assert tls["extensions"]["tls"]["client_cert_chain"] == []


def test_header_name_is_matched_case_insensitively_and_removed(alice):
    seen = run(http_scope(PROXY, [(b"X-SSL-Client-Cert", nginx_escaped(alice.pem)), (b"host", b"x")]))
    assert leaf(seen) == alice.cert
    assert seen["headers"] == [(b"host", b"x")]


def test_websocket_scope_from_a_trusted_proxy_is_honoured(alice):
    headers = [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]
    scope = {
        "type": "websocket",
        "client": [PROXY, 1],
        "server": ["127.0.0.1", PROXIED_PORT],
        "headers": headers,
    }
    assert leaf(run(scope)) == alice.cert


def test_without_trusted_proxies_configured_every_header_is_ignored(alice):
    seen = run(
        http_scope(PROXY, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]), Config(listen_http=LISTENERS)
    )
    assert "tls" not in seen.get("extensions", {})


def test_ignored_header_is_logged_once_per_connection(alice, caplog):
    caplog.set_level(logging.INFO, logger="transport.http.proxy_cert")
    seen: list = []

    async def app(scope, receive, send):
        seen.append(scope)

    middleware = ProxyClientCertMiddleware(app, CONFIG)
    header = [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]

    async def requests():
        for port in (1000, 1000, 1000, 2000):  # three requests on one keep-alive connection, then another
            await middleware(http_scope(STRANGER, header, port=port), None, None)

    asyncio.run(requests())
    assert len(seen) == 4
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 2


def test_lifespan_scope_passes_untouched():
    scope = {"type": "lifespan"}
    assert run(scope) == {"type": "lifespan"}


def test_header_chain_reads_nginx_escaped_pem_leaf_first(alice):
    chain = parse_header_chain(nginx_escaped(alice.pem + alice.issuer.pem))
    assert chain == [alice.cert, alice.issuer.cert]
