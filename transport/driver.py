"""Drive the sans-I/O c2s core from asyncio: what the WebSocket and BOSH adapters share.

Specs: DESIGN §2 and §3 (the core decides nothing about I/O; every transport verifies the client chain with
``certauth``), RFC 6120 §6.4 (SASL EXTERNAL verdicts), MongooseIM's ``disconnect_on_failure``.

The TCP adapter (``transport.tcp.protocol``) does the same on Twisted; this is its asyncio counterpart for
Channels
consumers, which run on daphne's event loop (the Twisted asyncio reactor's loop, the same thread as the TCP
listeners, so the shared :data:`transport.tcp.protocol.registry` is touched from one thread only).

:class:`AsyncC2SSession` owns one core and one ``CertificateAuthenticator``. The adapter calls
:meth:`~AsyncC2SSession.start` with the client's chain (leaf first, PEM or DER), then
:meth:`~AsyncC2SSession.receive` with each complete element, and takes the output with
:meth:`~AsyncC2SSession.frames` (one element per item, RFC 7395 §3.3.3). The two database calls run in a
thread (``database_sync_to_async``); callers serialise ``receive`` so the core sees input in order. A bind
goes through ``transport.sessions.registry.bind_session`` as on TCP: the bind result follows its re-check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from channels.db import database_sync_to_async

from certauth.pki import load_certificates
from certauth.pki.facts import fingerprint_sha256
from transport.tcp.protocol import AUTH_TIMEOUT, ConnectionRegistry, registry
from transport.tls.context import must_disconnect
from transport.xmpp import (
    AuthenticateRequest,
    BindRequest,
    Bound,
    C2SConnection,
    Close,
    PasswordStepRequest,
    StanzaReceived,
    new_c2s_stream,
)
from transport.xmpp.xml import StanzaParsed
from xmppauth import limits
from xmppauth.config import Config, HttpListener, TlsOptions

logger = logging.getLogger(__name__)

# Behind a trusted TLS-terminating proxy (a plain listener, transport.http.proxy_cert) there are no listener
# TLS
# options: the chain is verified in peer mode against the database's CAs, and a bad one is treated as absent.
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


def leaf_fingerprint(chain: Sequence[bytes]) -> str | None:
    """SHA-256 fingerprint of the chain's leaf, or None without a (parsable) certificate."""
    if not chain:
        return None
    try:
        certs = load_certificates(chain[0])
    except ValueError:
        return None
    return fingerprint_sha256(certs[0]) if certs else None


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


class AsyncC2SSession:
    """One c2s session over WebSocket or BOSH: the core, the authenticator and the shared registry."""

    def __init__(
        self,
        config: Config,
        listener: HttpListener | None,
        tls_options: TlsOptions | None,
        *,
        transport: str,
        peer: str,
        on_output: Callable[[], None] = lambda: None,
        registry: ConnectionRegistry = registry,
        core: C2SConnection | None = None,
        authenticator: Any = None,
    ) -> None:
        self.peer = peer
        self.transport = transport
        self.tls_options = tls_options
        if core is None:
            from accounts.domains import checker

            core = new_c2s_stream(
                config,
                listener,
                framing="websocket",
                log_id=f"{transport} {peer}",
                hosted=checker(config.hosts),
            )
        self.core = core
        if authenticator is None:
            from certauth.authenticator import CertificateAuthenticator  # noqa: PLC0415 (Django app code)

            authenticator = CertificateAuthenticator(config, tls_options, transport, peer)
        self.authenticator = authenticator
        self.on_output = on_output
        self.jid: str | None = None
        self.cert_fingerprint: str | None = None
        self.close_condition: str | None = None
        self._registry = registry
        self._connection_id: int | None = None
        self._auth_deadline: asyncio.TimerHandle | None = None
        self.cert_facts: Any = None  # facts of a verified client certificate (the session registry's match)
        self.bridge: Any = None  # transport.im.bridge.SessionBridge once bound: routing (RFC 6121)
        self.live: Any = None  # transport.sessions.registry.SessionHandle once bound: the session registry

    @property
    def bare_jid(self) -> str | None:
        return self.jid.split("/", 1)[0] if self.jid else None

    @property
    def closed(self) -> bool:
        return self.core.closed

    @property
    def max_stanza_size(self) -> int:
        return self.core.settings.max_stanza_size

    async def start(self, chain: Sequence[bytes], channel_bindings: dict[str, bytes] | None = None) -> bool:
        """Check the client's chain; False when ``disconnect_on_failure`` says the connection must end, or
        when the client's address is past ``auth_failures_per_minute`` (refused after the delay, XEP-0205 §3:
        the WebSocket handshake gets HTTP 403, BOSH a ``policy-violation`` terminate).

        ``channel_bindings``: the TLS connection's, for SCRAM -PLUS (WebSocket only).
        """
        if limits.too_many_auth_failures(self.peer):
            delay = limits.option("auth_failure_delay_seconds")
            logger.warning("%s %s: too many failed authentications from this address, refused in %d s",
                           self.transport, self.peer, delay)  # fmt: skip
            await asyncio.sleep(delay)
            return False
        self.cert_fingerprint = leaf_fingerprint(chain)
        if self.tls_options is None:
            check = None  # no TLS facts: the core offers no EXTERNAL
        else:
            check = await database_sync_to_async(self.authenticator.check_certificate)(list(chain))
            if must_disconnect(self.tls_options, bool(check.verified)):
                logger.warning(
                    "%s %s: certificate refused, disconnecting: %s", self.transport, self.peer, check.reason
                )
                return False
            if check.facts is not None:
                logger.info(
                    "%s %s: client certificate %s (%s)",
                    self.transport,
                    self.peer,
                    "verified" if check.verified else "not verified",
                    check.reason,
                )
        self._connection_id = self._registry.add(self)  # type: ignore[arg-type]  (duck-typed like C2SProtocol)
        if check is not None:
            self.cert_facts = check.facts if check.verified else None
            if channel_bindings:
                await self._handle(self.core.tls_established(check, channel_bindings=channel_bindings))
            else:
                await self._handle(self.core.tls_established(check))
        return True

    def arm_auth_deadline(self, seconds: float = AUTH_TIMEOUT) -> None:
        """Close a session that has not bound a resource ``seconds`` from now (as TCP does: slowloris)."""
        self._auth_deadline = asyncio.get_running_loop().call_later(seconds, self._auth_timed_out, seconds)

    def _auth_timed_out(self, seconds: float) -> None:
        self._auth_deadline = None
        if self.jid is None and not self.core.closed:
            logger.warning(
                "%s %s: not authenticated after %.0f s, closing", self.transport, self.peer, seconds
            )
            self.close_with_error("connection-timeout", "authenticate sooner")  # RFC 6120 §4.9.3.4

    def _cancel_auth_deadline(self) -> None:
        if self._auth_deadline is not None:
            self._auth_deadline.cancel()
            self._auth_deadline = None

    async def receive(self, data: bytes) -> None:
        """One complete element (or ``<open/>``/``<close/>``) from the client."""
        try:
            events = self.core.receive_data(data)
        except Exception:
            logger.exception("%s %s: core failed on input", self.transport, self.peer)
            events = self.core.close_with_error("internal-server-error")
        await self._handle(events)

    async def receive_element(self, parsed: StanzaParsed) -> None:
        """One element the adapter already read with the core's parser (a BOSH body's child): no re-parse."""
        try:
            events = self.core.receive_element(parsed)
        except Exception:
            logger.exception("%s %s: core failed on input", self.transport, self.peer)
            events = self.core.close_with_error("internal-server-error")
        await self._handle(events)

    def frames(self) -> list[bytes]:
        """What the core wants sent, one complete element each."""
        return self.core.frames_to_send()

    def close_with_error(self, condition: str, text: str = "") -> None:
        """End the stream with a stream error (RFC 6120 §4.9); output follows through ``on_output``."""
        self._note_close(self.core.close_with_error(condition, text))
        self.on_output()

    def close(self, reason: str = "closed by the server") -> None:
        self._note_close(self.core.close(reason))
        self.on_output()

    def connection_lost(self) -> None:
        """The transport is gone: forget the session."""
        self._cancel_auth_deadline()
        if self._connection_id is not None:
            self._registry.remove(self._connection_id)
            self._connection_id = None
        if self.bridge is not None:
            self.bridge.stop()  # unavailable presence to subscribers (RFC 6121 §4.5.2)
        if self.live is not None:
            self.live.unregister()
        self.core.connection_lost()

    def _bind(self, full_jid: str) -> None:
        """Register the session, which re-checks the credentials before the bind result goes out, and
        connect it to the router once admitted (``live.bind_session``, as TCP does)."""
        from transport.im.bridge import SessionBridge  # noqa: PLC0415
        from transport.sessions import registry as live  # noqa: PLC0415 (Django app code)

        self.bridge = SessionBridge(full_jid, deliver=self.deliver, close=self.close_with_error)
        self.live = live.bind_session(
            live.sessions,
            full_jid=full_jid,
            transport="websocket" if self.transport == "ws" else self.transport,
            peer=self.peer,
            cert_fingerprint=self.cert_fingerprint or "",
            cert_facts=self.cert_facts,
            issuer_ca_id=getattr(self.authenticator, "issuer_ca_id", None),
            check=self.authenticator.refusal_at_bind,
            close=self.close_with_error,
            admit=self._bind_admitted,
            bridge=self.bridge,
        )

    def _bind_admitted(self) -> None:
        """On the loop's thread, once the check passed: the bind result and what the client sent meanwhile."""
        for event in self.core.bind_result(None):
            self._on_event(event)
        self.on_output()

    def deliver(self, element: Any) -> None:
        """A stanza routed to this session: queue it; the adapter sends it through ``on_output``."""
        if self.core.send_stanza(element):
            self.on_output()

    async def _handle(self, events: Iterable[Any]) -> None:
        for event in list(events or ()):
            if isinstance(event, AuthenticateRequest):
                result = await database_sync_to_async(self.authenticator.authenticate_external)(
                    event.facts, event.authzid, event.domain
                )
                await self._handle(self.core.auth_result(result))
            elif isinstance(event, PasswordStepRequest):
                result = await database_sync_to_async(self.authenticator.authenticate_password)(event)
                await self._handle(self.core.auth_result(result))
            else:
                self._on_event(event)
        self.on_output()

    def _on_event(self, event: Any) -> None:
        """The core's events that need no database call of their own."""
        if isinstance(event, BindRequest):
            self._bind(str(event.jid))
        elif isinstance(event, Bound):
            self.jid = str(event.jid)
            logger.info("%s %s: session bound to %s", self.transport, self.peer, self.jid)
            self._cancel_auth_deadline()
        elif isinstance(event, StanzaReceived):
            if self.bridge is not None:
                self.bridge.from_client(event.element)
        elif isinstance(event, Close):
            self._note_close([event])

    def _note_close(self, events: Iterable[Any]) -> None:
        for event in events or ():
            if isinstance(event, Close):
                self.close_condition = event.condition
                logger.info(
                    "%s %s: stream closed%s: %s",
                    self.transport,
                    self.peer,
                    f" with {event.condition}" if event.condition else "",
                    event.reason,
                )
