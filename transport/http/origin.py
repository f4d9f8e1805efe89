"""Which web pages may use the WebSocket and BOSH endpoints: the ``Origin`` check (DESIGN §0, "Browsers").

Specs: RFC 6454 (an origin is scheme, host and port, §4; its serialisation, §6.2; the ``Origin`` header and
its opaque value ``null``, §7), RFC 6455 §4.2.2 and §10.2 (a server refuses a handshake from an origin it does
not accept, with a 403), the Fetch standard's CORS protocol (``Access-Control-Allow-Origin`` and
``-Credentials``; the preflight ``OPTIONS``). Origins are parsed and serialised by ``xmppauth.origins``,
which the config loader also uses for ``allowed_origins``.

Why: a client certificate is an ambient credential. A browser presents it to whatever page opens a WebSocket
or sends a request to our host, so without this check a page on ``https://evil.example`` logs in as the user.

The rule (one function, :func:`check_origin`; ``transport.http.websocket`` and ``transport.http.bosh`` call
it before they
look at any certificate):

- no ``Origin`` header: allowed. Native clients (slixmpp, Strophe.js under Node) send none; browsers
  always send one on a WebSocket handshake and on every cross-origin or ``POST`` request, and a page cannot
  remove it.
- ``Origin`` equal to the request's own origin (same origin): allowed.
- ``Origin`` on the handler's ``allowed_origins`` (``[[listen.http.handlers.mod_websockets]]`` /
  ``mod_bosh``): allowed.
- anything else: refused with HTTP 403. That includes ``null`` (sandboxed frames, ``file:`` and ``data:``
  pages: any page can get it), a header that is not an RFC 6454 serialisation (so no look-alike parses into
  ours), and several ``Origin`` headers.

The request's own origin is the scheme it arrived with (``https`` on our TLS listeners and through a trusted
TLS-terminating proxy, ``http`` otherwise) and its ``Host`` header. Decision, against a list of the
listener's configured names: a page cannot choose ``Host`` (a forbidden header in Fetch; the browser writes
the host and port of the URL it connects to) and cannot choose ``Origin`` (the browser writes the page's
own). The two are equal only when the page was itself loaded from the very scheme, host and port it
connects to. A hostile page can get there only by making its own name resolve to our listener (DNS
rebinding); over TLS the browser then checks our server certificate against that name and aborts before it
sends a request or a client certificate. A plain-HTTP listener has no client certificate to steal, except
through a trusted proxy, whose own TLS stops the rebinding the same way. A list of names would add nothing
to that and would have to be kept in step with the server certificate and DNS; its omissions would break
real web clients.

Behind a proxy that rewrites ``Host``, or for a web client served from another origin, list that origin in
``allowed_origins``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transport.http.proxy_cert import TLS_EXTENSION
from xmppauth.origins import Origin, parse_host, parse_origin

if TYPE_CHECKING:
    from xmppauth.config import Config, HttpHandler, HttpListener

ORIGIN_HEADER = b"origin"
HOST_HEADER = b"host"
LOGGED_ORIGIN_LENGTH = 200  # characters of a refused Origin value that go into the log


@dataclass(frozen=True)
class OriginVerdict:
    allowed: bool
    origin: str | None  # the Origin header as sent (None: there was none); echoed in CORS answers
    reason: str

    def describe(self) -> str:
        """For the line that logs a connection or session: which page it serves ("" for a native client)."""
        return "" if self.origin is None else f", Origin {self.log_value()}: {self.reason}"

    def log_value(self) -> str:
        """The Origin value for a log line: quoted and escaped by repr, cut to a sane length."""
        return repr((self.origin or "")[:LOGGED_ORIGIN_LENGTH])


def _header_values(scope: dict[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers") or () if key.lower() == name]


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The request's own origin: its scheme and its ``Host`` (module docstring); None without usable Host."""
    extensions = scope.get("extensions") or {}
    secure = scope.get("scheme") in ("https", "wss") or TLS_EXTENSION in extensions
    scheme = "https" if secure else "http"
    hosts = _header_values(scope, HOST_HEADER)
    if len(hosts) != 1:
        return None
    try:
        return parse_host(scheme, hosts[0])
    except ValueError:
        return None


def handlers_for(config: Config, listener: HttpListener | None, path: str, kind: str) -> list[HttpHandler]:
    """The ``kind`` handlers serving this request's path: its listener's, or every listener's at that path.

    Every listener serves every handler path (``transport.http.routing``); a request on a listener that does
    not
    declare the path itself, or on a server that does not say which listener it came in on, is governed by
    all the handlers declaring it.
    """
    if listener is not None:
        own = [h for h in listener.handlers if h.kind == kind and h.path == path]
        if own:
            return own
    return [h for li in config.listen_http for h in li.handlers if h.kind == kind and h.path == path]


def allowed_origins(handlers: Iterable[HttpHandler]) -> set[Origin]:
    return {parse_origin(value) for handler in handlers for value in handler.allowed_origins}


def check_origin(
    config: Config, listener: HttpListener | None, scope: dict[str, Any], kind: str
) -> OriginVerdict:
    """Whether the page behind this request may use the ``kind`` endpoint (the rule in the module docstring).

    ``listener``: the ``[[listen.http]]`` the request came in on (``transport.http.session.scope_listener``)
    or None.
    """
    values = _header_values(scope, ORIGIN_HEADER)
    if not values:
        return OriginVerdict(True, None, "no Origin header: not a browser page")
    if len(values) > 1:
        return OriginVerdict(False, ", ".join(values), f"{len(values)} Origin headers")
    value = values[0]
    try:
        origin = parse_origin(value)
    except ValueError as exc:
        return OriginVerdict(False, value, str(exc))
    own = own_origin(scope)
    if origin == own:
        return OriginVerdict(True, value, "same origin")
    handlers = handlers_for(config, listener, scope.get("path") or "/", kind)
    if origin in allowed_origins(handlers):
        return OriginVerdict(True, value, f"in allowed_origins of {kind} {scope.get('path')}")
    return OriginVerdict(
        False,
        value,
        f"neither this listener's own origin ({own or 'unknown: no usable Host header'}) "
        f"nor in allowed_origins of {kind} {scope.get('path')}",
    )


def cors_headers(verdict: OriginVerdict) -> Sequence[tuple[bytes, bytes]]:
    """CORS answer headers naming the request's origin when it is allowed; none otherwise (never ``*``).

    ``Access-Control-Allow-Credentials`` because a web client's requests carry its client certificate (Fetch,
    "credentials"), which a browser only lets through to a page named exactly, not ``*``.
    """
    headers = [(b"vary", b"origin")]
    if verdict.allowed and verdict.origin is not None:
        headers += [
            (b"access-control-allow-origin", verdict.origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
        ]
    return headers
