"""`manage.py runc2s`: the XMPP client listeners (``[[listen.c2s]]``, RFC 6120 / XEP-0368) on their own.

Production runs this next to daphne (HTTPS); the embedded ``runxmpp`` calls the same
:func:`transport.tcp.listener.start_c2s_listeners`. Twisted runs on its asyncio reactor, as under daphne; the
c2s connections are asyncio protocols on that reactor's loop.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from transport.tls.context import TlsConfigError

logger = logging.getLogger(__name__)


def install_asyncio_reactor() -> None:
    """Install Twisted's asyncio reactor unless a reactor is already installed (it must come first)."""
    import sys

    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        if type(reactor).__name__ != "AsyncioSelectorReactor":
            logger.warning("a %s reactor was installed before runc2s could install asyncio's", type(reactor))
        return
    from twisted.internet import asyncioreactor

    asyncioreactor.install()


class Command(BaseCommand):
    help = "Run the XMPP c2s TCP listeners of the config ([[listen.c2s]]: STARTTLS and direct TLS)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--reuse-port",
            action="store_true",
            help="listen with SO_REUSEPORT: run several runc2s processes on the same ports and the kernel "
            "spreads the connections over them (they reach each other's sessions through Redis: needs "
            "REDIS_URL)",
        )

    def handle(self, *args, **options) -> None:
        reuse_port = bool(options.get("reuse_port"))
        if reuse_port and not settings.REDIS_URL:
            raise CommandError(
                "--reuse-port: runc2s processes sharing a port route stanzas to each other's sessions "
                "through Redis; set REDIS_URL (without it, run one runc2s)"
            )
        install_asyncio_reactor()
        from twisted.internet import reactor
        from twisted.internet.error import CannotListenError

        from transport.tcp.listener import start_c2s_listeners
        from xmppauth import loopdb
        from xmppauth.dbconn import keep_connections_in_threads

        keep_connections_in_threads()  # one connection per pool thread, not one per call
        # SQLite: a session's short database calls on the event loop (xmppauth.loopdb); not where processes
        # share a port, and so the SQLite file, whose write lock each call on a loop holds while it runs.
        if not reuse_port:
            loopdb.enable()
        config = settings.XMPP
        if not config.listen_c2s:
            raise CommandError(f"{config.source} has no [[listen.c2s]] listener: nothing to run")
        from accounts.domains import ensure_rows

        for host in ensure_rows(config.hosts):
            logger.info("hosted domain %s added from the config", host)
        from certauth.configcas import prepare_process_or_exit

        prepare_process_or_exit(config)  # config CAs as rows, tls.crl_files loaded, before any listener
        try:
            ports = start_c2s_listeners(config, reactor, reuse_port=reuse_port)
        except TlsConfigError as exc:
            raise CommandError(str(exc)) from exc
        except (CannotListenError, OSError) as exc:
            raise CommandError(f"cannot listen: {exc}") from exc
        from transport.sessions.registry import start_session_services

        start_session_services(reactor)  # revoked certificates end their sessions (DESIGN §5)
        if not settings.REDIS_URL:
            from transport.im.service import start_in_process_router

            start_in_process_router()  # else `manage.py runworker xmpp.router` serves it (DESIGN §1)
        # Each listener logged its "c2s listening on" line as it opened; this one says everything is up.
        addresses = ", ".join(f"{port.getHost().host}:{port.getHost().port}" for port in ports)
        self.stdout.write(f"runc2s ready: {addresses}")
        from xmppauth.gcpolicy import settle_heap_for_serving

        settle_heap_for_serving()  # the start-up heap out of the collector's way (issue 17)
        reactor.run()
