"""The c2s TCP listeners: one asyncio server per ``[[listen.c2s]]``, plain with STARTTLS or direct TLS.

Specs: XEP-0368 (direct TLS on its own port), RFC 6120 §5 (STARTTLS), DESIGN §3 (the listener's TLS context
and its trust anchors, refreshed while it runs). Each accepted connection is a ``transport.tcp.protocol``
``C2SProtocol`` driving one ``transport.driver.SessionDriver``; this module only wires them to sockets.

The servers run on the asyncio loop behind Twisted's asyncio reactor (``reactor._asyncioEventloop``), the one
daphne and the IM bridge run on. :func:`listen_c2s` binds the socket itself, at once (a port in use fails
there, and :class:`C2SPort` knows its address), and the loop serves it from its next turn.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall

from transport.tcp.protocol import C2SFactory, disconnect_all, transport_name
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


@dataclass(frozen=True)
class Address:
    """Where a port listens (the ``host`` and ``port`` of Twisted's ``IPv4Address``, which callers read)."""

    host: str
    port: int


class C2SPort:
    """One listening c2s socket served by an ``asyncio.Server`` (what Twisted's listening port was to its
    callers: :meth:`getHost`, :meth:`stopListening`, and :func:`port_factory`)."""

    def __init__(self, sock: socket.socket, factory: C2SFactory, loop: asyncio.AbstractEventLoop) -> None:
        self.socket = sock
        self.factory = factory
        self._stopped = False
        host, port = sock.getsockname()[:2]
        self._address = Address(host, port)
        # The factory's buildProtocol is looked up for every connection (tests wrap it).
        serving = loop.create_server(
            lambda: factory.buildProtocol(self._address), sock=sock, backlog=factory.listener.backlog
        )
        self._task = loop.create_task(serving)
        self._task.add_done_callback(self._served)
        _ports.append(self)

    def getHost(self) -> Address:  # noqa: N802 (Twisted's name)
        return self._address

    def stopListening(self) -> Deferred:  # noqa: N802
        """Accept no more connections (live ones go on); the socket closes now, or once the loop took it."""
        if not self._stopped:
            self._stopped = True
            if self in _ports:
                _ports.remove(self)
            if self._task.done():
                self._close()
        return succeed(None)

    def _served(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self.socket.close()
        elif task.exception() is not None:
            logger.error("c2s %s: cannot serve: %s", self.factory.name, task.exception())
            self.socket.close()
        elif self._stopped:
            self._close()

    def _close(self) -> None:
        if self._task.cancelled() or self._task.exception() is not None:
            self.socket.close()
        else:
            self._task.result().close()  # closes the listening socket


def event_loop(reactor: Any) -> asyncio.AbstractEventLoop:
    """The asyncio loop behind Twisted's asyncio reactor, where the c2s connections run."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        raise RuntimeError(
            f"the c2s listeners run on Twisted's asyncio reactor; {type(reactor).__name__} is installed "
            "(install twisted.internet.asyncioreactor before anything imports the reactor)"
        )
    return loop


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
) -> C2SPort:
    """Listen on one c2s port: plain with STARTTLS, or direct TLS (XEP-0368) when ``tls.mode = "tls"``.

    ``tls_options`` None is a listener without TLS (no certificate, so no SASL EXTERNAL on it).
    ``reuse_port``: with SO_REUSEPORT, so that several processes listen on the same port and the kernel
    spreads the connections over them (``runc2s --reuse-port``). Call on the reactor's thread.
    """
    loop = event_loop(reactor)
    _at_shutdown(reactor)
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
    port = C2SPort(_listening_socket(listener, reuse_port=reuse_port), factory, loop)
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


# The reactors whose shutdown drops the c2s connections and stops the c2s ports (one, outside some tests).
_shutdown_hooked: set[int] = set()
_ports: list[C2SPort] = []


def _at_shutdown(reactor: Any) -> None:
    """Once per reactor: at its shutdown, stop every c2s port and drop every c2s connection (their drivers
    leave the session registry and the router), as Twisted's reactor does with the ports and connections it
    runs itself ("during" shutdown, after the "before" triggers such as the session registry's)."""
    if id(reactor) in _shutdown_hooked:
        return
    _shutdown_hooked.add(id(reactor))

    def stop() -> None:
        for port in list(_ports):
            port.stopListening()
        disconnect_all()

    reactor.addSystemEventTrigger("during", "shutdown", stop)


def _listening_socket(listener: C2SListener, *, reuse_port: bool) -> socket.socket:
    """A listening socket on the listener's address (SO_REUSEADDR, as Twisted's ports; with ``reuse_port``
    also SO_REUSEPORT, which Linux lets only sockets of the same user share)."""
    family = socket.AF_INET6 if ":" in listener.ip_address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
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


def start_c2s_listeners(config: Config, reactor: Any, *, reuse_port: bool = False) -> list[C2SPort]:
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


def port_factory(port: C2SPort) -> C2SFactory:
    """The C2SFactory behind a listening port."""
    return port.factory
