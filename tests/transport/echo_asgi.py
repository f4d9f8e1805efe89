"""A tiny ASGI app for transport tests: answers every HTTP request and WebSocket with its scope's TLS facts.

Served by ``python -m transport.http.server`` (and stock daphne) in subprocess tests; the reply is JSON
``{"type", "scheme", "tls", "listener"}``: ``scope["extensions"]["tls"]`` and
``["xmppauth.listener"]`` or null.
"""

from __future__ import annotations

import asyncio
import json


def _facts(scope) -> bytes:
    extensions = scope.get("extensions") or {}
    facts = {
        "type": scope["type"],
        "scheme": scope.get("scheme"),
        "tls": extensions.get("tls"),
        "listener": extensions.get("xmppauth.listener"),
    }
    return json.dumps(facts).encode()


async def application(scope, receive, send):
    if scope["type"] == "http":
        body = _facts(scope)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        message = await receive()
        assert message["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _facts(scope).decode()})
        await send({"type": "websocket.close"})


def _proxied():
    from transport.http.proxy_cert import ProxyClientCertMiddleware

    return ProxyClientCertMiddleware(application)  # trusted proxies from settings.XMPP (the test's config)


proxied = _proxied()


SLOW_ACCEPT_SECONDS = (
    7.0  # past daphne's default 5 s WebSocket opening timeouts (tests/transport/test_daphne_timeouts.py)
)


async def slow_accept(scope, receive, send):
    """A WebSocket accepted only after SLOW_ACCEPT_SECONDS (as a busy server's certificate check can be),
    then answered with its TLS facts; HTTP as :func:`application`."""
    if scope["type"] == "websocket":
        message = await receive()
        assert message["type"] == "websocket.connect"
        await asyncio.sleep(SLOW_ACCEPT_SECONDS)
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _facts(scope).decode()})
        await send({"type": "websocket.close"})
    else:
        await application(scope, receive, send)
