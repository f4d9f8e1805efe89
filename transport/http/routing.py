"""Which ASGI app serves which path: the config's ``mod_websockets`` and ``mod_bosh`` handler paths.

Spec: MongooseIM ``listen-http`` handlers (``[[listen.http.handlers.mod_websockets]]`` path, default
``/ws-xmpp``; ``mod_bosh``, default ``/http-bind``). The paths of all ``[[listen.http]]`` listeners are served
on every listener; a handler's ``host`` is not checked (the ``Host`` header is the client's to choose).
Everything else on HTTP goes to Django; any other WebSocket path is refused at the handshake.

A ``crl_only = true`` listener serves our CRLs and nothing else (:class:`CrlOnlyListeners`, the outermost
layer): relying parties fetch them there without a client certificate (RFC 5280 §4.2.1.13), and neither the
admin nor XMPP over WebSocket or BOSH is reachable on it.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from channels.routing import URLRouter
from django.urls import path, re_path

from transport.http.bosh import bosh_app
from transport.http.websocket import NoXmppHereConsumer, XmppWebsocketConsumer
from xmppauth.config import Config

logger = logging.getLogger(__name__)

CRL_PATH_PREFIX = "/crl/"  # xmppauth/urls.py: certauth.views.crl at /crl/<CA id>.crl


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


class CrlOnlyListeners:
    """ASGI middleware: on a ``crl_only`` listener only ``GET``/``HEAD /crl/...`` reaches ``app``.

    The listener a connection came in on is told by the local address of its socket (``scope["server"]``,
    which daphne takes from the socket, never from a header); two ``[[listen.http]]`` may not share a port on
    overlapping addresses (``xmppauth.config``), so the address and port name one listener. Other requests
    there get 404 (405 for other methods on ``/crl/``); WebSocket handshakes are refused (HTTP 403).
    """

    def __init__(self, app: Any, config: Config) -> None:
        self.app = app
        self.crl_listeners = [(li.ip_address, li.port) for li in config.listen_http if li.crl_only]

    def _on_crl_listener(self, scope: dict[str, Any]) -> bool:
        server = scope.get("server")
        if not self.crl_listeners or not server:
            return False
        host, port = server[0], server[1]
        for ip, listener_port in self.crl_listeners:
            if port != listener_port:
                continue
            if ip in ("0.0.0.0", "::"):
                return True
            try:
                if ipaddress.ip_address(host) == ipaddress.ip_address(ip):
                    return True
            except ValueError:
                continue
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not self._on_crl_listener(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        if not scope["path"].startswith(CRL_PATH_PREFIX):
            await _plain_response(send, 404, b"only our CRLs are served here: /crl/<CA id>.crl\n")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain_response(send, 405, b"CRLs are fetched with GET\n", allow=b"GET, HEAD")
            return
        await self.app(scope, receive, send)


async def _plain_response(send: Any, status: int, body: bytes, *, allow: bytes | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
