"""Which ASGI app serves which path: the config's ``mod_websockets`` and ``mod_bosh`` handler paths.

Spec: MongooseIM ``listen-http`` handlers (``[[listen.http.handlers.mod_websockets]]`` path, default
``/ws-xmpp``; ``mod_bosh``, default ``/http-bind``). The paths of all ``[[listen.http]]`` listeners are served
on every listener; a handler's ``host`` is not checked (the ``Host`` header is the client's to choose).
Everything else on HTTP goes to Django; any other WebSocket path is refused at the handshake.
"""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from django.urls import path, re_path

from transport.bosh import bosh_app
from transport.ws import NoXmppHereConsumer, XmppWebsocketConsumer
from xmppauth.config import Config


def handler_paths(config: Config, kind: str) -> list[str]:
    """The distinct paths of handlers of ``kind`` (mod_websockets | mod_bosh), in file order."""
    paths: list[str] = []
    for listener in config.listen_http:
        for handler in listener.handlers:
            if handler.kind == kind and handler.path not in paths:
                paths.append(handler.path)
    return paths


def _route(url_path: str) -> str:
    return url_path.strip("/")  # URLRouter matches without the leading slash


def http_router(config: Config, django_app: Any) -> URLRouter:
    routes = [path(_route(p), bosh_app) for p in handler_paths(config, "mod_bosh")]
    return URLRouter([*routes, re_path(r"", django_app)])


def websocket_router(config: Config) -> URLRouter:
    consumer = XmppWebsocketConsumer.as_asgi()
    routes = [path(_route(p), consumer) for p in handler_paths(config, "mod_websockets")]
    return URLRouter([*routes, re_path(r"", NoXmppHereConsumer.as_asgi())])
