"""transport.proxy_cert: X-SSL-Client-Cert counts only from `[xmppauth] trusted_proxies` (DESIGN §3).

Every rule that lets a certificate in is tested both ways: the header from a trusted proxy address fills the
ASGI TLS extension; the same header sent by anyone else is ignored, removed, and logged once per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from urllib.parse import quote

import pytest
from cryptography import x509

from tests.certs import make_ca, make_client
from transport.proxy_cert import (
    CLIENT_CERT_HEADER,
    SOCKET_PEER_EXTENSION,
    ProxyClientCertMiddleware,
    parse_header_chain,
)
from xmppauth.config import XmppauthOptions

PROXY = "10.1.2.3"
STRANGER = "192.0.2.7"
OPTIONS = XmppauthOptions(
    trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::1/128"))
)


@pytest.fixture(scope="module")
def alice():
    return make_client(make_ca("proxy test CA"), jids=["alice@localhost"])


def nginx_escaped(pem: bytes) -> bytes:
    """What nginx's $ssl_client_escaped_cert looks like: the PEM, URL-escaped."""
    return quote(pem.decode()).encode()


def run(scope: dict, options: XmppauthOptions = OPTIONS) -> dict:
    """Pass ``scope`` through the middleware; return the scope the application saw."""
    seen: dict = {}

    async def app(scope, receive, send):
        seen.update(scope)

    asyncio.run(ProxyClientCertMiddleware(app, options)(scope, None, None))
    return seen


def http_scope(client: str, headers=(), extensions=None, port: int = 40000) -> dict:
    scope = {"type": "http", "client": [client, port], "headers": list(headers), "scheme": "http"}
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
    caplog.set_level(logging.INFO, logger="transport.proxy_cert")
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
    # The proxy's own TLS connection to us may carry the proxy's certificate: never the user's.
    proxy_cert = make_client(make_ca("proxy's CA"), jids=["proxy@localhost"])
    own = {"tls": {"client_cert_chain": [proxy_cert.pem.decode()], "tls_version": 0x0304}}
    tls = run(http_scope(PROXY, [], extensions=own))["extensions"]["tls"]
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None


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
    scope = {"type": "websocket", "client": [PROXY, 1], "headers": headers}
    assert leaf(run(scope)) == alice.cert


def test_without_trusted_proxies_configured_every_header_is_ignored(alice):
    seen = run(http_scope(PROXY, [(b"x-ssl-client-cert", nginx_escaped(alice.pem))]), XmppauthOptions())
    assert "tls" not in seen.get("extensions", {})


def test_ignored_header_is_logged_once_per_connection(alice, caplog):
    caplog.set_level(logging.INFO, logger="transport.proxy_cert")
    seen: list = []

    async def app(scope, receive, send):
        seen.append(scope)

    middleware = ProxyClientCertMiddleware(app, OPTIONS)
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
