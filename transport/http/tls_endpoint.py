"""The ``xmpptls`` Twisted server endpoint: HTTPS/WSS listeners that ask for client certificates (DESIGN §3).

Stock daphne's ``ssl:`` endpoint never sends a CertificateRequest. This endpoint serves a ``[[listen.http]]``
listener of the TOML config with :class:`transport.tls.context.ServerTls` (TLS 1.2+, a client certificate
requested,
MongooseIM's ``verify_mode`` / ``disconnect_on_failure``), so WebSocket (RFC 7395) and BOSH (XEP-0206)
clients can present the certificate SASL EXTERNAL needs (XEP-0178).

Description syntax (``twisted.internet.endpoints.serverFromString``, daphne's ``-e``)::

    xmpptls:listener=0                          # port, address and TLS options of listen.http[0]
    xmpptls:port=5443:interface=127.0.0.1:listener=0   # port / interface override the config's

Keys: ``listener`` (index into ``settings.XMPP.listen_http``, counted from 0 in file order; default 0),
``port``, ``interface``, ``backlog`` (each overrides the listener's own). The TLS options come only from the
config, never from the command line, so every process that reads the same file serves the same TLS. The
trust anchors (the CA rows of ``tls.cacertfile``, made at start-up by ``certauth.configcas``, plus the CAs
trusted in the admin) are re-read every :data:`TRUST_REFRESH_INTERVAL` seconds.

Twisted finds the endpoint through the dropin ``twisted/plugins/xmppauth_endpoints.py`` at the project root
(a ``twisted/plugins`` directory without ``__init__.py``, which ``twisted.plugins`` adds to its ``__path__``);
the project root must be on ``sys.path``, as it is when daphne runs from there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.task import LoopingCall
from twisted.plugin import IPlugin
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from transport.tls.context import ServerTls, with_default_credentials
from xmppauth.config import TlsOptions

logger = logging.getLogger(__name__)

ENDPOINT_PREFIX = "xmpptls"
ACCEPTED_KEYS = ("listener", "port", "interface", "backlog")
# How often a listener re-reads its trust anchors (certauth.trust caches them for 5 s per process).
TRUST_REFRESH_INTERVAL = 15.0


class EndpointConfigError(ValueError):
    """An ``xmpptls:`` description that cannot be served; the message names the key."""


class ListenerTlsFactory(TLSMemoryBIOFactory):
    """Twisted's TLS wrapper, remembering which ``[[listen.http]]`` entry it serves.

    ``transport.http.server`` reads ``listener_index`` from a connection's ``transport.factory`` so the
    WebSocket and BOSH code know whose ``tls`` options (``cacertfile``, ``disconnect_on_failure``) apply.
    """

    def __init__(self, server_tls: ServerTls, wrapped: Any, listener_index: int | None) -> None:
        super().__init__(server_tls, False, wrapped)
        self.server_tls = server_tls
        self.listener_index = listener_index


@implementer(IStreamServerEndpoint)
class XmppTlsServerEndpoint:
    """Listen on TCP and wrap every connection in our TLS (``ServerTls``), then keep the anchors fresh."""

    def __init__(
        self,
        reactor: Any,
        port: int,
        server_tls: ServerTls,
        *,
        interface: str = "",
        backlog: int = 50,
        listener_index: int | None = None,
        refresh_interval: float | None = TRUST_REFRESH_INTERVAL,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.server_tls = server_tls
        self.interface = interface
        self.backlog = backlog
        self.listener_index = listener_index
        self.refresh_interval = refresh_interval
        self.refresh: LoopingCall | None = None

    def listen(self, protocolFactory: Any) -> defer.Deferred:  # noqa: N803 (IStreamServerEndpoint's name)
        def start() -> IListeningPort:
            wrapped = ListenerTlsFactory(self.server_tls, protocolFactory, self.listener_index)
            port = self.reactor.listenTCP(self.port, wrapped, backlog=self.backlog, interface=self.interface)
            port._type = "TLS"  # as reactor.listenSSL names it in logs
            options = self.server_tls.options
            logger.info(
                "https listening on %s:%s (verify_mode %s, disconnect_on_failure %s, %d trust anchors)",
                port.getHost().host,
                port.getHost().port,
                options.verify_mode,
                options.disconnect_on_failure,
                len(self.server_tls.anchor_fingerprints),
            )
            if self.refresh_interval:
                from transport.tls.trust_refresh import refresh_trust_anchors  # Django app code

                self.refresh = LoopingCall(refresh_trust_anchors, self.reactor, self.server_tls, "https")
                self.refresh.clock = self.reactor
                self.refresh.start(self.refresh_interval, now=False)
            return port

        return defer.execute(start)


def _django_ready() -> None:
    """The endpoint reads the config and the CA table: make sure Django is set up (daphne's app did it)."""
    from django.apps import apps

    if not apps.ready:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")
        django.setup()


def _integer(kwargs: dict[str, str], key: str, default: int | None, minimum: int, maximum: int) -> int | None:
    raw = kwargs.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EndpointConfigError(f"{ENDPOINT_PREFIX}:{key}={raw!r}: expected an integer") from None
    if not minimum <= value <= maximum:
        raise EndpointConfigError(f"{ENDPOINT_PREFIX}:{key}={value}: accepted {minimum}..{maximum}")
    return value


def http_listener_tls(index: int) -> tuple[Any, TlsOptions]:
    """``listen.http[index]`` of the config and its TLS options (bootstrap certificate when it names none)."""
    from django.conf import settings

    config = settings.XMPP
    listeners = config.listen_http
    if not 0 <= index < len(listeners):
        raise EndpointConfigError(
            f"{ENDPOINT_PREFIX}:listener={index}: {config.source} has {len(listeners)} [[listen.http]] "
            f"listener(s); accepted: listener=0..{len(listeners) - 1}"
            if listeners
            else f"{ENDPOINT_PREFIX}:listener={index}: {config.source} has no [[listen.http]] listener"
        )
    listener = listeners[index]
    if listener.tls is None:
        raise EndpointConfigError(
            f"{ENDPOINT_PREFIX}:listener={index}: listen.http[{index}] has no tls table (plain HTTP, e.g. "
            f"behind a proxy); serve it with tcp:port={listener.port}"
        )
    pki_dir = Path(settings.VAR_DIR) / "pki"
    return listener, with_default_credentials(listener.tls, pki_dir / "server.pem", pki_dir / "server.key")


@implementer(IPlugin, IStreamServerEndpointStringParser)
class XmppTlsEndpointParser:
    """``xmpptls:`` descriptions → :class:`XmppTlsServerEndpoint` (found by Twisted's plugin system)."""

    prefix = ENDPOINT_PREFIX

    def parseStreamServer(self, reactor: Any, *args: str, **kwargs: str) -> XmppTlsServerEndpoint:  # noqa: N802
        if args:
            raise EndpointConfigError(
                f"{ENDPOINT_PREFIX}: unexpected value(s) {', '.join(args)}; give key=value pairs with keys "
                f"{', '.join(ACCEPTED_KEYS)}"
            )
        unknown = sorted(set(kwargs) - set(ACCEPTED_KEYS))
        if unknown:
            raise EndpointConfigError(
                f"{ENDPOINT_PREFIX}: unknown key(s) {', '.join(unknown)}; accepted: "
                f"{', '.join(ACCEPTED_KEYS)} (TLS options come from the config's [[listen.http]] tls table)"
            )
        index = _integer(kwargs, "listener", 0, 0, 1 << 16)
        port = _integer(kwargs, "port", None, 0, 65535)
        backlog = _integer(kwargs, "backlog", None, 1, 65535)
        assert index is not None
        _django_ready()
        from django.conf import settings

        from certauth.configcas import prepare_process_or_exit  # needs the app registry
        from certauth.trust import trust_anchors  # needs the app registry

        listener, options = http_listener_tls(index)
        prepare_process_or_exit(settings.XMPP)  # once per process: stock daphne with any application
        anchors = list(trust_anchors(options.cacertfile).certificates)
        return XmppTlsServerEndpoint(
            reactor,
            listener.port if port is None else port,
            ServerTls(options, anchors),
            interface=kwargs.get("interface", listener.ip_address),
            backlog=listener.backlog if backlog is None else backlog,
            listener_index=index,
        )
