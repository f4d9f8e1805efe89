"""ASGI entry point: HTTP (admin, CRLs), XMPP over WebSocket (RFC 7395) and BOSH (XEP-0206).

Served by ``python -m transport.http.server`` (which adds the client's TLS chain to the scope) or by
``manage.py runxmpp``. The outermost layer takes client certificates from trusted TLS-terminating proxies
(``transport.http.proxy_cert``, ``[xmppauth] trusted_proxies``). The WebSocket and BOSH paths are the
``handlers.mod_websockets`` / ``handlers.mod_bosh`` paths of every ``[[listen.http]]`` listener
(``transport.http.routing``). The outermost layer keeps a ``crl_only`` listener to our CRLs
(``transport.http.routing.CrlOnlyListeners``).
"""

import os

import django
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")
django.setup()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from certauth.configcas import prepare_process_or_exit  # noqa: E402

# Config CAs as rows and tls.crl_files loaded before daphne or runworker serves anything (stops on error).
prepare_process_or_exit(settings.XMPP)
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from transport.http.proxy_cert import ProxyClientCertMiddleware  # noqa: E402
from transport.http.routing import CrlOnlyListeners, http_router, websocket_router  # noqa: E402
from transport.im.router import ROUTER_CHANNEL, router_application  # noqa: E402

application = CrlOnlyListeners(
    ProxyClientCertMiddleware(
        ProtocolTypeRouter(
            {
                "http": http_router(settings.XMPP, ASGIStaticFilesHandler(get_asgi_application())),
                "websocket": websocket_router(settings.XMPP),
                # `manage.py runworker xmpp.router`: offline storage, subscriptions to offline users, errors.
                "channel": ChannelNameRouter({ROUTER_CHANNEL: router_application()}),
            }
        )
    ),
    settings.XMPP,
)
