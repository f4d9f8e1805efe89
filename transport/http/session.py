"""The asyncio side of the session driver, shared by the WebSocket and BOSH adapters.

Specs: DESIGN §3 (the client chain comes in the ASGI TLS extension that ``transport.http.server`` fills),
RFC 7395 §3.3.3 (the core speaks WebSocket framing: one element per message, which BOSH's ``<body/>`` also
carries one at a time).

:class:`LoopAdapter` is the part of ``transport.driver.Adapter`` that is the same for both: database calls in
a worker thread (``transport.workers.in_worker`` around ``xmppauth.dbconn.with_fresh_connections``, which
closes stale connections around each call) and timers on the
running loop (daphne's: the Twisted asyncio reactor's loop, the thread of every listener of the process).
The WebSocket consumer and the BOSH session add ``send`` and ``close``. :func:`new_session` builds the
driver of one connection from its ASGI scope; :func:`start_session` checks its certificate.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from typing import Any

from transport.driver import SessionDriver
from transport.workers import in_worker
from xmppauth.config import Config, HttpListener, TlsOptions
from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)

# Behind a trusted TLS-terminating proxy (a plain listener, transport.http.proxy_cert) there are no listener
# TLS options: the chain is verified in peer mode against the database's CAs, and a bad one is treated as
# absent.
PROXY_TLS_OPTIONS = TlsOptions(mode="tls", verify_mode="peer", disconnect_on_failure=False)

TLS_EXTENSION = "tls"
LISTENER_EXTENSION = "xmppauth.listener"  # transport.http.server.LISTENER_EXTENSION (no daphne import here)
CHANNEL_BINDINGS_EXTENSION = "xmppauth.channel_bindings"  # transport.http.server's, for SCRAM -PLUS


def scope_chain(scope: dict[str, Any]) -> list[bytes]:
    """The client's chain from the ASGI TLS extension (PEM strings or bytes, leaf first), as bytes."""
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION) or {}
    return [
        item.encode() if isinstance(item, str) else bytes(item) for item in tls.get("client_cert_chain") or ()
    ]


def scope_listener(config: Config, scope: dict[str, Any]) -> HttpListener | None:
    """The ``[[listen.http]]`` listener the connection came in on (our xmpptls endpoint says which)."""
    index = (scope.get("extensions") or {}).get(LISTENER_EXTENSION)
    if isinstance(index, int) and 0 <= index < len(config.listen_http):
        return config.listen_http[index]
    return None


def scope_tls_options(config: Config, scope: dict[str, Any]) -> TlsOptions | None:
    """TLS options that verify this scope's certificate: its listener's, or :data:`PROXY_TLS_OPTIONS`.

    Only ``verify_mode``, ``cacertfile`` and ``disconnect_on_failure`` matter here (the handshake is done).
    None when the request carried no TLS facts at all (plain HTTP not from a trusted proxy): no EXTERNAL.
    """
    listener = scope_listener(config, scope)
    if listener is not None and listener.tls is not None:
        return listener.tls
    if TLS_EXTENSION in (scope.get("extensions") or {}):
        return PROXY_TLS_OPTIONS
    return None


def scope_channel_bindings(scope: dict[str, Any]) -> dict[str, bytes]:
    """The channel bindings our TLS endpoint found for this WebSocket (empty: none, e.g. behind a proxy)."""
    found = (scope.get("extensions") or {}).get(CHANNEL_BINDINGS_EXTENSION) or {}
    return {str(kind): bytes(data) for kind, data in found.items()}


def scope_peer(scope: dict[str, Any]) -> str:
    client = scope.get("client") or ("?", "?")
    return f"{client[0]}:{client[1]}"


class LoopAdapter:
    """``run_in_thread``, ``call_later`` and ``start_tls`` of ``transport.driver.Adapter`` on asyncio."""

    _tasks: set[asyncio.Task[None]]

    def run_in_thread(
        self, function: Callable[[], Any], done: Callable[[Any], None], failed: Callable[[str], None]
    ) -> None:
        async def call() -> None:
            try:
                result = await in_worker(with_fresh_connections, function)
            except Exception as exc:
                failed("".join(traceback.format_exception(exc)))
                return
            done(result)

        self.keep(asyncio.get_running_loop().create_task(call()))

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold ``task`` until it is done (the loop keeps only a weak reference to a task)."""
        if not hasattr(self, "_tasks"):
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def call_later(self, seconds: float, function: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, function)

    def start_tls(self) -> None:
        # The core never offers STARTTLS in WebSocket framing (RFC 7395 §3.4): TLS is already on.
        raise RuntimeError("STARTTLS asked of a WebSocket or BOSH session")


def new_session(
    config: Config,
    scope: dict[str, Any],
    adapter: Any,
    *,
    transport: str,
    core: Any = None,
    authenticator: Any = None,
) -> SessionDriver:
    """The driver of one WebSocket or BOSH connection (``transport``: ws or bosh), its deadline started."""
    from accounts.domains import checker
    from certauth.authenticator import CertificateAuthenticator  # Django app code
    from transport.im.bridge import SessionBridge  # needs the app registry
    from transport.xmpp import new_c2s_stream

    peer = scope_peer(scope)
    listener = scope_listener(config, scope)
    tls_options = scope_tls_options(config, scope)
    if core is None:
        core = new_c2s_stream(
            config, listener, framing="websocket", log_id=f"{transport} {peer}", hosted=checker(config.hosts)
        )
    if authenticator is None:
        authenticator = CertificateAuthenticator(config, tls_options, transport, peer)
    driver = SessionDriver(
        core,
        authenticator,
        adapter,
        transport=transport,
        peer=peer,
        tls_options=tls_options,
        framed=True,
        bridge_factory=SessionBridge,
    )
    driver.open()
    return driver


async def start_session(
    driver: SessionDriver, chain: list[bytes], channel_bindings: dict[str, bytes] | None = None
) -> bool:
    """Check the client's chain: False when the connection must end (``disconnect_on_failure``, an address
    past ``auth_failures_per_minute`` after its delay, XEP-0205 §3); the WebSocket handshake then gets HTTP
    403, a BOSH session creation a ``policy-violation`` terminate."""
    ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def settle(accepted: bool) -> None:
        if not ready.done():
            ready.set_result(accepted)

    driver.certificate_presented(chain, channel_bindings=channel_bindings, on_ready=settle)
    return await ready
