"""The c2s TCP listeners: one Twisted port per ``[[listen.c2s]]``, plain with STARTTLS or direct TLS.

Specs: XEP-0368 (direct TLS on its own port), RFC 6120 §5 (STARTTLS), DESIGN §3 (the listener's TLS context
and its trust anchors, refreshed while it runs). Each accepted connection is a ``transport.tcp.protocol``
``C2SProtocol`` driving one ``transport.driver.SessionDriver``; this module only wires them to sockets.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.protocols.tls import TLSMemoryBIOFactory

from transport.tcp.protocol import C2SFactory, transport_name
from transport.tls.context import ServerTls, with_default_credentials
from transport.tls.trust_refresh import refresh_trust_anchors
from xmppauth.config import C2SListener, Config, TlsOptions

logger = logging.getLogger(__name__)

# How often a listener re-reads its trust anchors (certauth.trust caches them for 5 s per process).
TRUST_REFRESH_INTERVAL = 15.0


def _default_authenticator_factory(config: Config) -> Callable[[TlsOptions | None, str], Any]:
    def make(tls_options: TlsOptions | None, peer: str) -> Any:
        from certauth.authenticator import CertificateAuthenticator  # Django app code

        return CertificateAuthenticator(config, tls_options, transport_name(tls_options), peer)

    return make


def _default_bridge_factory(full_jid: str, **callbacks: Any) -> Any:
    from transport.im.bridge import SessionBridge  # needs the app registry

    return SessionBridge(full_jid, **callbacks)


def _default_core_factory(config: Config) -> Callable[[C2SListener], Any]:
    def make(listener: C2SListener) -> Any:
        from accounts.domains import checker
        from transport.xmpp import new_c2s_stream

        return new_c2s_stream(config, listener, hosted=checker(config.hosts))

    return make


def listen_c2s(
    listener: C2SListener,
    tls_options: TlsOptions | None,
    trust_anchors: list[Any],
    reactor: Any,
    *,
    core_factory: Callable[[C2SListener], Any],
    authenticator_factory: Callable[[TlsOptions | None, str], Any],
    reuse_port: bool = False,
    **factory_options: Any,
) -> IListeningPort:
    """Listen on one c2s port: plain with STARTTLS, or direct TLS (XEP-0368) when ``tls.mode = "tls"``.

    ``tls_options`` None is a listener without TLS (no certificate, so no SASL EXTERNAL on it).
    ``reuse_port``: with SO_REUSEPORT, so that several processes listen on the same port and the kernel
    spreads the connections over them (``runc2s --reuse-port``).
    """
    server_tls = None
    if tls_options is not None:
        server_tls = ServerTls(tls_options, trust_anchors, transport=transport_name(tls_options))
    factory = C2SFactory(
        listener,
        tls_options,
        server_tls,
        reactor=reactor,
        core_factory=core_factory,
        authenticator_factory=authenticator_factory,
        **factory_options,
    )
    wrapped: Any = factory
    if tls_options is not None and tls_options.mode == "tls":
        wrapped = TLSMemoryBIOFactory(server_tls, False, factory)
    if reuse_port:
        with _reuse_port_socket(listener) as sock:  # Twisted adopts a duplicate of it
            port = reactor.adoptStreamPort(sock.fileno(), sock.family, wrapped)
    else:
        port = reactor.listenTCP(
            listener.port, wrapped, backlog=listener.backlog, interface=listener.ip_address
        )
    address = port.getHost()
    factory.name = f"{address.host}:{address.port}"
    if tls_options is None:
        logger.warning("c2s listening on %s without TLS: no certificate, no SASL EXTERNAL", factory.name)
    else:
        logger.info(
            "c2s listening on %s (mode %s, verify_mode %s, disconnect_on_failure %s, %d trust anchors)",
            factory.name,
            tls_options.mode,
            tls_options.verify_mode,
            tls_options.disconnect_on_failure,
            len(trust_anchors),
        )
    return port


def _reuse_port_socket(listener: C2SListener) -> socket.socket:
    """A listening socket with SO_REUSEPORT on the listener's address (Linux lets only sockets of the same
    user share a port this way)."""
    family = socket.AF_INET6 if ":" in listener.ip_address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listener.ip_address, listener.port))
        sock.listen(listener.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def listener_tls_options(listener: C2SListener, var_dir: Path) -> TlsOptions | None:
    """The listener's TLS options; the bootstrap's ``var/pki/server.pem`` when it names no certificate."""
    if listener.tls is None:
        return None
    pki_dir = var_dir / "pki"
    return with_default_credentials(listener.tls, pki_dir / "server.pem", pki_dir / "server.key")


def start_c2s_listeners(config: Config, reactor: Any, *, reuse_port: bool = False) -> list[IListeningPort]:
    """Start every ``[[listen.c2s]]`` listener of ``config`` on ``reactor`` (runc2s and runxmpp call this);
    ``reuse_port``: see :func:`listen_c2s`."""
    from django.conf import settings

    from certauth.trust import trust_anchors  # needs the app registry

    ports = []
    for listener in config.listen_c2s:
        tls_options = listener_tls_options(listener, Path(settings.VAR_DIR))
        port = listen_c2s(
            listener,
            tls_options,
            list(trust_anchors(tls_options.cacertfile).certificates) if tls_options else [],
            reactor,
            core_factory=_default_core_factory(config),
            authenticator_factory=_default_authenticator_factory(config),
            bridge_factory=_default_bridge_factory,
            reuse_port=reuse_port,
        )
        server_tls = port_factory(port).server_tls
        if server_tls is not None:
            # CAs added or distrusted in the admin reach the handshake (CA list, disconnect_on_failure).
            refresh = LoopingCall(refresh_trust_anchors, reactor, server_tls, "c2s")
            refresh.clock = reactor
            refresh.start(TRUST_REFRESH_INTERVAL, now=False)
        ports.append(port)
    return ports


def port_factory(port: IListeningPort) -> C2SFactory:
    """The C2SFactory behind a listening port (unwrapping direct TLS)."""
    factory = port.factory  # type: ignore[attr-defined]
    return getattr(factory, "wrappedFactory", factory)
