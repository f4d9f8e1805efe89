"""ASGI entry point: HTTP (admin, CRLs) now; WebSocket and BOSH join it in transport/.

Served by ``python -m transport.daphne_server`` (which adds the client's TLS chain to the scope) or by
``manage.py runxmpp``. The outermost layer takes client certificates from trusted TLS-terminating proxies
(``transport.proxy_cert``, ``[xmppauth] trusted_proxies``).
"""

import os

import django
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")
django.setup()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from transport.proxy_cert import ProxyClientCertMiddleware  # noqa: E402

application = ProxyClientCertMiddleware(
    ProtocolTypeRouter({"http": ASGIStaticFilesHandler(get_asgi_application())})
)
