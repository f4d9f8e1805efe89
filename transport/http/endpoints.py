"""Twisted endpoint descriptions for the config's ``[[listen.http]]`` listeners (daphne's ``-e`` syntax).

A listener with a ``tls`` table is served by our ``xmpptls:`` endpoint (``transport.http.tls_endpoint``: a
client
certificate is requested, MongooseIM verify semantics, DESIGN §3); one without is plain ``tcp:``, for a
deployment behind a TLS-terminating proxy (``transport.http.proxy_cert``).
"""

from __future__ import annotations

from transport.http.tls_endpoint import ENDPOINT_PREFIX
from xmppauth.config import Config


def _escape(value: str) -> str:
    # Twisted endpoint strings use ':' and '=' as separators (twisted.internet.endpoints).
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def http_endpoint_descriptions(config: Config) -> list[str]:
    """One description per ``listen.http`` entry, in file order (``listener=N`` is that order)."""
    descriptions = []
    for index, listener in enumerate(config.listen_http):
        base = f"port={listener.port}:interface={_escape(listener.ip_address)}:backlog={listener.backlog}"
        if listener.tls is None:
            descriptions.append(f"tcp:{base}")
        else:
            descriptions.append(f"{ENDPOINT_PREFIX}:{base}:listener={index}")
    return descriptions
