"""Client certificates from a TLS-terminating proxy: ASGI middleware for trusted proxy addresses (DESIGN §3).

Behind nginx with ``ssl_verify_client optional_no_ca`` the TLS handshake, and so the client certificate, ends
at the proxy. nginx passes the certificate on with::

    proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;   # URL-escaped PEM, empty without one

The header counts only when all three hold (issue 12 §5): the request came in on a plain ``[[listen.http]]``
listener that the config marks ``behind_tls_proxy = true`` (matched by the socket's own local port,
``scope["server"]``, which no header sets), not over TLS that we terminated ourselves, and from a peer in
``[xmppauth] trusted_proxies``. Then this middleware puts the certificate(s) of that header, leaf first,
into the standard ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``), the same place
``transport.http.server`` puts the chain of a direct TLS connection, so the WebSocket and BOSH code reads
one place. For a trusted proxy the
header *replaces* whatever the proxy's own TLS connection to us carried (that would be the proxy's
certificate, not the user's); no header means no client certificate.

Anywhere else the header is ignored, logged at INFO once per connection, and removed from the
scope's headers like it is after being honoured, so nothing downstream reads it by mistake. Nothing here
decides who gets in: the chain is verified (chain, revocation, XEP-0178 identity) by ``certauth`` as for
every connection.

The peer address is the socket's: ``scope["extensions"]["xmppauth.socket_peer"]`` when our daphne server set
it (daphne's ``--proxy-headers`` rewrites ``scope["client"]`` from ``X-Forwarded-For``, which anyone can
send), else ``scope["client"]``. Under another ASGI server that rewrites ``client`` from headers, do not
configure ``trusted_proxies``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from xmppauth.config import Config

logger = logging.getLogger(__name__)

# nginx: proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
CLIENT_CERT_HEADER = b"x-ssl-client-cert"
# Set by transport.http.server: the socket's peer [host, port], which no request header can change.
SOCKET_PEER_EXTENSION = "xmppauth.socket_peer"
TLS_EXTENSION = "tls"  # the ASGI TLS extension (asgiref docs, "TLS Extension")
# How many connections we remember having logged an ignored header for (once per connection).
LOGGED_PEERS_LIMIT = 4096

Scope = MutableMapping[str, Any]
AsgiApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def certificate_name(cert: x509.Certificate) -> str | None:
    """The RFC 4514 subject of a certificate, or None when it cannot be rendered."""
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return None


def tls_extension(
    chain: list[x509.Certificate], *, error: str | None = None, tls_version: int | None = None
) -> dict[str, Any]:
    """An ASGI TLS extension dict for a client chain (leaf first); ``error`` is the verification complaint."""
    return {
        "server_cert": None,
        "client_cert_chain": [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain],
        "client_cert_name": certificate_name(chain[0]) if chain else None,
        "client_cert_error": error if chain else None,
        "tls_version": tls_version,
        "cipher_suite": None,
    }


def parse_header_chain(value: bytes) -> list[x509.Certificate]:
    """The certificates of a ``$ssl_client_escaped_cert`` value (URL-escaped PEM); [] when empty.

    Raises ValueError when the value holds no PEM certificate.
    """
    text = unquote(value.decode("latin-1")).strip()
    if not text:
        return []
    return x509.load_pem_x509_certificates(text.encode("ascii", "replace"))


def socket_peer(scope: Scope) -> tuple[str, Any] | None:
    """The connection's peer (host, port): the socket's when the server told us, else ``scope["client"]``."""
    peer = scope.get("extensions", {}).get(SOCKET_PEER_EXTENSION) or scope.get("client")
    if not peer:
        return None
    return str(peer[0]), peer[1] if len(peer) > 1 else None


class ProxyClientCertMiddleware:
    """Honour ``X-SSL-Client-Cert`` from trusted proxies only; see the module docstring."""

    def __init__(self, app: AsgiApp, config: Config | None = None) -> None:
        self.app = app
        self._config = config
        self._logged: OrderedDict[tuple[str, Any], None] = OrderedDict()

    @property
    def config(self) -> Config:
        if self._config is not None:
            return self._config
        from django.conf import settings  # read when first needed, after django.setup()

        return settings.XMPP

    def _proxied_listener(self, scope: Scope) -> bool:
        """Whether the request came in on a plain listener declared ``behind_tls_proxy``, not over our TLS."""
        if TLS_EXTENSION in (scope.get("extensions") or {}) or scope.get("scheme") in ("https", "wss"):
            return False  # we terminated TLS ourselves: the chain is the one of that handshake
        server = scope.get("server")
        if not server or len(server) < 2:
            return False
        host, port = str(server[0]), server[1]
        return any(
            listener.behind_tls_proxy
            and listener.port == port
            and listener.ip_address in (host, "0.0.0.0", "::")
            for listener in self.config.listen_http
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> Scope:
        headers = scope.get("headers") or []
        values = [value for name, value in headers if name.lower() == CLIENT_CERT_HEADER]
        peer = socket_peer(scope)
        trusted = (
            peer is not None
            and self.config.options.is_trusted_proxy(peer[0])
            and self._proxied_listener(scope)
        )
        if not values and not trusted:
            return scope
        scope = dict(scope)
        scope["headers"] = [(n, v) for n, v in headers if n.lower() != CLIENT_CERT_HEADER]
        extensions = dict(scope.get("extensions") or {})
        scope["extensions"] = extensions
        if not trusted:
            self._log_ignored_once(peer)
            return scope
        previous = extensions.get(TLS_EXTENSION) or {}
        chain: list[x509.Certificate] = []
        error = None
        if len(values) > 1:
            error = f"{len(values)} {CLIENT_CERT_HEADER.decode()} headers; refusing to choose"
            logger.warning("trusted proxy %s sent %s", peer[0], error)
        elif values:
            try:
                chain = parse_header_chain(values[0])
            except ValueError as exc:
                error = f"unreadable {CLIENT_CERT_HEADER.decode()} header ({exc})"
                logger.warning("trusted proxy %s: %s", peer[0], error)
        extension = tls_extension(chain, tls_version=previous.get("tls_version"))
        if error:
            extension["client_cert_error"] = error  # no chain, but say why: the proxy sent something broken
        extensions[TLS_EXTENSION] = extension
        return scope

    def _log_ignored_once(self, peer: tuple[str, Any] | None) -> None:
        key = peer or ("?", None)
        if key in self._logged:
            return
        self._logged[key] = None
        if len(self._logged) > LOGGED_PEERS_LIMIT:
            self._logged.popitem(last=False)
        logger.info(
            "%s header from %s ignored: not a trusted proxy ([xmppauth] trusted_proxies) on a listener"
            " with behind_tls_proxy = true",
            CLIENT_CERT_HEADER.decode(),
            key[0],
        )
