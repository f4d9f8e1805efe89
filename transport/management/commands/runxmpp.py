"""`manage.py runxmpp`: the embedded server, every listener of the config in one process.

HTTP(S) listeners (admin, CRLs, XMPP over WebSocket and BOSH at the handler paths) are served by daphne
through our ``xmpptls:`` endpoint and ``TlsExtensionServer`` (client certificates requested and put into the
ASGI scope, transport.http.server); the c2s TCP listeners serve on the same loop, the one behind Twisted's
asyncio reactor (transport.tcp.listener).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from transport.http.endpoints import http_endpoint_descriptions

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run every listener of the config (HTTP(S) admin and CRLs, XMPP c2s) in one process."

    def handle(self, *args, **options) -> None:
        # Twisted's asyncio reactor must be installed before anything imports the reactor (daphne does so).
        from transport.http.server import TlsExtensionServer  # installs the asyncio reactor

        # isort: split
        from twisted.internet import reactor

        from certauth.configcas import prepare_process_or_exit
        from certauth.scheduler import start_in_process_jobs
        from transport.sessions.registry import start_session_services
        from transport.tcp.listener import start_c2s_listeners
        from xmppauth import loopdb
        from xmppauth.asgi import application
        from xmppauth.dbconn import keep_connections_in_threads

        keep_connections_in_threads()  # one connection per pool thread, not one per call
        loopdb.enable()  # SQLite: a session's short database calls on the event loop (xmppauth.loopdb)
        config = settings.XMPP
        prepare_process_or_exit(config)  # done by xmppauth.asgi already; here too, before any listener
        endpoints = http_endpoint_descriptions(config)
        for listener in config.listen_http:
            scheme = "https" if listener.tls is not None else "http"
            served = "CRLs only" if listener.crl_only else "admin"
            where = "/crl/" if listener.crl_only else "/admin/"
            self.stdout.write(f"{served} at {scheme}://{listener.ip_address}:{listener.port}{where}")
        start_c2s_listeners(config, reactor)  # each listener logs its address and TLS mode
        start_session_services(reactor)  # revoked certificates end their sessions (DESIGN §5)
        if not settings.REDIS_URL:  # else celery beat runs the jobs (DESIGN §1)
            start_in_process_jobs(reactor)
            # and `manage.py runworker xmpp.router` serves the router channel
            from transport.im.service import start_in_process_router

            start_in_process_router()
        if not endpoints:
            raise CommandError("the config has no [[listen.http]] listener: nothing serves the admin")
        from xmppauth.gcpolicy import settle_heap_for_serving

        settle_heap_for_serving()  # the start-up heap out of the collector's way (issue 17)
        TlsExtensionServer(application=application, endpoints=endpoints, signal_handlers=True).run()
