"""Daphne, plus the client's TLS certificate chain in the ASGI scope (DESIGN §3; asgiref's "TLS Extension").

Stock daphne puts no certificate in the scope. :class:`TlsExtensionServer` is daphne's ``Server`` with one
override, ``create_application``, the one call daphne makes for every HTTP request and every WebSocket
handshake with the protocol object and the new scope. When the connection came in over TLS (our ``xmpptls:``
endpoint, see ``transport.http.tls_endpoint``) it adds::

    scope["extensions"]["tls"] = {
        "server_cert": None,
        "client_cert_chain": [PEM, ...],        # leaf first, as the client sent it; [] without a certificate
        "client_cert_name": "CN=...,O=...",     # RFC 4514 subject of the leaf, or None
        "client_cert_error": None | "depth 0 (CN=...): certificate has expired",   # what OpenSSL objected to
        "tls_version": 0x0303 | 0x0304,
        "cipher_suite": None,
    }

and sets ``scope["scheme"]`` to ``https`` / ``wss``. ``client_cert_error`` is OpenSSL's opinion only (the
handshake never decides, see ``transport.tls.context``); the WebSocket and BOSH code must verify the chain
with
``certauth`` like every other transport. Every scope also gets the socket's peer address as
``scope["extensions"]["xmppauth.socket_peer"]``, which ``transport.http.proxy_cert`` trusts over
``scope["client"]``. A connection that came in on ``xmpptls:listener=N`` also gets
``scope["extensions"]["xmppauth.listener"] = N`` (whose ``tls`` options and ``cacertfile`` apply).

``run`` also starts the session registry's watcher and heartbeat (``transport.sessions.registry``) when the
application
is ours, so sessions held by this process end when their certificate is revoked.

This leans on daphne internals (``Server.create_application(protocol, scope)``, ``protocol.transport``):
daphne is pinned to 4.2.* and ``tests/transport/test_daphne_tls_scope.py`` fails if the extension stops
arriving.

Command line (daphne's own options, our server class)::

    python -m transport.http.server -e xmpptls:listener=0 xmppauth.asgi:application
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Sequence
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from OpenSSL import SSL
from twisted.internet.interfaces import ISSLTransport

from transport.http.proxy_cert import SOCKET_PEER_EXTENSION, TLS_EXTENSION, tls_extension
from transport.tls.context import channel_bindings, peer_chain, verify_errors

logger = logging.getLogger(__name__)

# Index into settings.XMPP.listen_http of the xmpptls listener a connection came in on (absent otherwise).
LISTENER_EXTENSION = "xmppauth.listener"
# A WebSocket over our TLS: this connection's channel bindings for SCRAM -PLUS (issue 14), type -> bytes. Not
# for BOSH, whose requests may come over several TLS connections.
CHANNEL_BINDINGS_EXTENSION = "xmppauth.channel_bindings"
# daphne's cap on one WebSocket message (default 1 MiB). Above the 64 KiB stanza limit so that a message
# over that limit still reaches transport.http.websocket and gets its policy-violation stream error (RFC 6120
# §13.12);
# beyond this the WebSocket is closed with 1009 (RFC 6455 §7.4.1). Operators may pass
# --websocket-max-message-size.
WEBSOCKET_MAX_MESSAGE = 256 * 1024
# How long a WebSocket client has from TCP connect to an accepted RFC 7395 handshake (TLS handshake, HTTP
# upgrade, certificate check): as long as a TCP client has from connect to authentication
# (transport.xmpp.connection.AUTH_TIMEOUT; tests/transport/test_daphne_timeouts.py keeps them equal).
# daphne's 5 s dropped every wss client of a busy server (bench.load_mixed: 250 of 250 in 1000 logins at
# once), a bound no other carrier has. Both daphne timeouts: autobahn's opening handshake and the accept.
WEBSOCKET_OPENING_TIMEOUT = 60
# One extension per TLS connection: BOSH sends many requests over one keep-alive connection.
_extensions: weakref.WeakKeyDictionary[SSL.Connection, dict[str, Any]] = weakref.WeakKeyDictionary()


def tls_transport(protocol: Any) -> Any | None:
    """The TLS transport (Twisted's TLSMemoryBIOProtocol) under a daphne WebRequest or WebSocketProtocol."""
    transport = getattr(protocol, "transport", None)
    for _ in range(4):  # TCP ← TLSMemoryBIOProtocol ← (HTTP channel): a few wrappers at most
        if transport is None:
            return None
        if ISSLTransport.providedBy(transport):
            return transport if isinstance(transport.getHandle(), SSL.Connection) else None
        transport = getattr(transport, "transport", None)
    return None


def connection_tls_extension(connection: SSL.Connection) -> dict[str, Any]:
    """The ASGI TLS extension for one TLS connection (a fresh copy each call; computed once)."""
    extension = _extensions.get(connection)
    if extension is None:
        errors = verify_errors(connection)
        extension = tls_extension(
            peer_chain(connection),
            error="; ".join(str(e) for e in errors) or None,
            tls_version=connection.get_protocol_version(),
        )
        _extensions[connection] = extension
    return {**extension, "client_cert_chain": list(extension["client_cert_chain"])}


def add_connection_facts(protocol: Any, scope: dict[str, Any]) -> None:
    """Put the socket's peer and, over TLS, the client's chain into ``scope`` (module docstring)."""
    extensions = dict(scope.get("extensions") or {})
    transport = getattr(protocol, "transport", None)
    peer = transport.getPeer() if transport is not None else None
    if hasattr(peer, "host") and hasattr(peer, "port"):
        extensions[SOCKET_PEER_EXTENSION] = [str(peer.host), peer.port]
    secure = tls_transport(protocol)
    if secure is not None:
        extensions[TLS_EXTENSION] = connection_tls_extension(secure.getHandle())
        scope["scheme"] = "wss" if scope.get("type") == "websocket" else "https"
        if scope.get("type") == "websocket":
            extensions[CHANNEL_BINDINGS_EXTENSION] = channel_bindings(secure.getHandle())
        index = getattr(getattr(secure, "factory", None), "listener_index", None)
        if index is not None:
            extensions[LISTENER_EXTENSION] = index
    scope["extensions"] = extensions


class TlsExtensionServer(Server):
    """daphne's Server that fills the ASGI TLS extension (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("websocket_max_message_size", WEBSOCKET_MAX_MESSAGE)
        kwargs.setdefault("websocket_handshake_timeout", WEBSOCKET_OPENING_TIMEOUT)
        kwargs.setdefault("websocket_connect_timeout", WEBSOCKET_OPENING_TIMEOUT)
        super().__init__(*args, **kwargs)

    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        """daphne's ``run`` makes the autobahn factory here; fail connections with a close frame.

        autobahn's default (``failByDrop``) answers a message over the size cap, a protocol error or invalid
        UTF-8 by dropping TCP; RFC 6455 §7.4.1 gives them close codes (1009, 1002, 1007) that tell the
        client why.
        """
        factory.setProtocolOptions(failByDrop=False)
        self._ws_factory = factory

    def run(self) -> None:
        from django.apps import apps
        from twisted.internet import reactor  # daphne installed the asyncio reactor

        if apps.ready and apps.is_installed("transport"):  # the application set Django up (xmppauth.asgi)
            from transport.sessions.registry import start_if_installed

            start_if_installed(reactor)  # WebSocket/BOSH sessions end when their certificate does (DESIGN §5)
        super().run()

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        try:
            add_connection_facts(protocol, scope)
        except Exception:  # a scope without the extension is safer than a dropped request: it has no cert
            logger.exception("cannot read the TLS facts of %r; serving it without a certificate", protocol)
            scope.get("extensions", {}).pop(TLS_EXTENSION, None)
        return super().create_application(protocol, scope)


class XmppauthCommandLineInterface(CommandLineInterface):
    """daphne's command line, serving with :class:`TlsExtensionServer`."""

    server_class = TlsExtensionServer

    def __init__(self) -> None:
        super().__init__()
        # daphne's --websocket_connect_timeout (default 5) sets both of its WebSocket opening timeouts.
        self.parser.set_defaults(
            websocket_max_message_size=WEBSOCKET_MAX_MESSAGE,
            websocket_connect_timeout=WEBSOCKET_OPENING_TIMEOUT,
        )


def main(argv: Sequence[str] | None = None) -> None:
    XmppauthCommandLineInterface().run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
