"""The session driver: what every transport (TCP, WebSocket, BOSH) does around the sans-I/O c2s core.

Specs: DESIGN §2 and §3 (the core decides nothing about I/O; every transport verifies the client chain with
``certauth``), RFC 6120 §4.9.3.4 (connection-timeout), §6.4 (SASL verdicts), §7 (bind, with the re-check of
``transport.sessions.registry.bind_session``), XEP-0199 §4.2 (keepalive pings, asked for by the core),
XEP-0205 §3 (an address that keeps failing is refused after a delay), MongooseIM's ``disconnect_on_failure``.

One :class:`SessionDriver` per connection owns the certificate check and the disconnect decision (and their
logging), the core's events (matched by type), the database calls (in a thread; the client's input is held
meanwhile so the core sees it in order), the timers the core asks for (the auth deadline, the keepalive),
bound-session registration, and teardown. It imports neither Twisted nor asyncio: the adapter gives it the
four things that differ per transport (:class:`Adapter`): send bytes, close, run in a thread, call later.
Adapters: ``transport.tcp.protocol`` (asyncio, its own TLS), ``transport.http.session`` (asyncio, for
``transport.http.websocket`` and ``transport.http.bosh``).

Everything here runs on the adapter's event-loop thread (daphne runs the Twisted asyncio reactor, so that
is one thread for every transport of a process).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from cryptography import x509

from certauth.pki import load_certificates
from certauth.pki.facts import fingerprint_sha256
from transport.sessions import registry as live
from transport.tls.policy import must_disconnect, requests_certificate
from transport.xmpp.events import (
    Authenticated,
    AuthenticateRequest,
    AuthRefused,
    BindRequest,
    Bound,
    CancelTimer,
    Close,
    PasswordStepRequest,
    StanzaReceived,
    StartTimer,
    StartTls,
)
from xmppauth import limits
from xmppauth.config import TlsOptions

logger = logging.getLogger(__name__)

# Held-back input while a database call is pending; more than this is a client that does not wait.
MAX_PENDING_INPUT = 1 << 20


class Timer(Protocol):
    """What ``call_later`` returns: Twisted's ``DelayedCall`` and asyncio's ``TimerHandle`` both fit."""

    def cancel(self) -> None: ...


class Adapter(Protocol):
    """What a transport gives the driver. Every call comes from, and every callback must run on, the
    adapter's event-loop thread."""

    def send(self, data: bytes) -> None:
        """Write output: everything queued (stream framing) or one complete element (WebSocket framing)."""

    def close(self, abort: bool = False) -> None:
        """End the connection after what was sent; ``abort``: drop it at once (a refused certificate)."""

    def run_in_thread(
        self, function: Callable[[], Any], done: Callable[[Any], None], failed: Callable[[str], None]
    ) -> None:
        """Run ``function()`` (a database call) off the loop; then ``done(result)`` or ``failed(traceback)``
        back on the loop."""

    def call_later(self, seconds: float, function: Callable[[], None]) -> Timer:
        """Call ``function()`` on the loop ``seconds`` from now."""

    def start_tls(self) -> None:
        """Start the TLS handshake on this connection (only a TCP stream with STARTTLS is ever asked to)."""


class Core(Protocol):
    """What the driver needs of the c2s core (``transport.xmpp.C2SConnection``)."""

    closed: bool

    def connection_made(self) -> Iterable[Any]: ...
    def receive_data(self, data: bytes) -> Iterable[Any]: ...
    def receive_element(self, parsed: Any) -> Iterable[Any]: ...
    def data_to_send(self) -> bytes: ...
    def frames_to_send(self) -> list[bytes]: ...
    def tls_established(self, check: Any, **kwargs: Any) -> Iterable[Any]: ...
    def auth_result(self, result: Any) -> Iterable[Any]: ...
    def bind_result(self, condition: str | None = None, text: str = "") -> Iterable[Any]: ...
    def timer_fired(self, name: str) -> Iterable[Any]: ...
    def close_with_error(self, condition: str, text: str = "") -> Iterable[Any]: ...
    def close(self, reason: str = "closed by the server") -> Iterable[Any]: ...
    def send_stanza(self, element: Any) -> bool: ...
    def connection_lost(self) -> None: ...


def leaf_fingerprint(chain: Sequence[bytes | x509.Certificate]) -> str | None:
    """SHA-256 fingerprint of the chain's leaf (a certificate, or PEM/DER bytes), or None without a (parsable)
    certificate. The one fingerprint of a connection: the session registry's, BOSH's session binding."""
    if not chain:
        return None
    leaf = chain[0]
    if isinstance(leaf, x509.Certificate):
        return fingerprint_sha256(leaf)
    try:
        certs = load_certificates(bytes(leaf))
    except ValueError:
        return None
    return fingerprint_sha256(certs[0]) if certs else None


class SessionDriver:
    """One client connection: the core, its authenticator and the adapter's transport."""

    def __init__(
        self,
        core: Core,
        authenticator: Any,
        adapter: Adapter,
        *,
        transport: str,
        peer: str,
        tls_options: TlsOptions | None,
        framed: bool = False,
        sessions: live.LiveSessions | None = None,
        bridge_factory: Callable[..., Any] | None = None,
    ) -> None:
        """``transport``: tcp, tls (direct TLS), ws or bosh (logs and the session registry); ``framed``: the
        core speaks WebSocket framing (one element per ``send``); ``bridge_factory``: makes the session's
        ``transport.im.bridge.SessionBridge`` at bind (None: stanzas are not routed)."""
        self.core = core
        self.authenticator = authenticator
        self.adapter = adapter
        self.transport = transport
        self.peer = peer
        self.name = f"{transport} {peer}"  # what every log line of this connection starts with
        self.tls_options = tls_options
        self.framed = framed
        self.sessions = sessions if sessions is not None else live.sessions
        self.bridge_factory = bridge_factory
        self.jid: str | None = None  # the full JID once bound
        self.cert_fingerprint: str | None = None
        self.cert_facts: Any = None  # facts of a verified client certificate (the session registry's match)
        self.presented_facts: Any = None  # facts of the certificate presented, verified or not
        self.no_certificate = False  # TLS is up on a listener that asked for a certificate, and none came
        self.tls_errors: tuple[Any, ...] = ()  # what OpenSSL objected to in the client's chain (for logs)
        self.tls_resumed = False  # the TLS session was resumed (issue 17 §4; the certificate log line)
        self.close_condition: str | None = None  # the stream error the stream ended with, if any
        self.bridge: Any = None  # transport.im.bridge.SessionBridge once bound
        self.live: live.SessionHandle | None = None  # the session registry's handle once bound
        self.lost = False
        self._closing = False  # no more input is read; output may still go out
        self._close_sent = False
        self._pending = 0  # database calls in flight
        self._held: list[tuple[Callable[[Any], Iterable[Any]], Any]] = []  # (core input method, its argument)
        self._held_size = 0
        self._timers: dict[str, Timer] = {}
        self._on_ready: Callable[[bool], None] | None = None

    @property
    def closed(self) -> bool:
        return self.core.closed

    @property
    def bare_jid(self) -> str | None:
        return self.jid.split("/", 1)[0] if self.jid else None

    # -- the adapter's calls --------------------------------------------------------------------------

    def open(self) -> None:
        """The connection is up: the core's auth deadline starts."""
        self._feed(self.core.connection_made())

    def certificate_presented(
        self,
        chain: Sequence[bytes | x509.Certificate],
        *,
        channel_bindings: dict[str, bytes] | None = None,
        tls_errors: Sequence[Any] = (),
        on_ready: Callable[[bool], None] | None = None,
        resumed: bool = False,
    ) -> None:
        """TLS is up with this client chain (leaf first; empty: none): check it in a thread, then tell the
        core. ``on_ready(True)`` once the core has the verdict, ``on_ready(False)`` if the connection ends
        first (``disconnect_on_failure``, an address past ``auth_failures_per_minute``, a failed check).
        ``channel_bindings``: the TLS connection's, for SCRAM -PLUS. ``resumed``: the TLS session was resumed
        (issue 17 §4); the chain it restored is checked exactly as after a full handshake."""
        self._on_ready = on_ready
        if self._closing or self.lost:
            self._settle(False)
            return
        if limits.too_many_auth_failures(self.peer):
            # XEP-0205 §3: an address that keeps failing waits, then is refused with policy-violation.
            delay = limits.option("auth_failure_delay_seconds")
            logger.warning("%s: too many failed authentications from this address, refused in %d s",
                           self.name, delay)  # fmt: skip
            self._closing = True  # the client's input is ignored meanwhile
            self.adapter.call_later(delay, self._refuse_flooder)
            return
        self.tls_resumed = resumed
        self.tls_errors = tuple(tls_errors)
        if self.tls_errors:
            logger.info("%s: OpenSSL chain errors: %s", self.name, "; ".join(map(str, self.tls_errors)))
        if self.tls_options is None:  # no TLS facts (plain HTTP not from a trusted proxy): no EXTERNAL
            self.cert_fingerprint = leaf_fingerprint(chain)
            self._settle(True)
            return
        checked = functools.partial(self._certificate_checked, dict(channel_bindings or {}), chain)
        certificates = list(chain)
        accepted = self._accepted_from_memory(certificates)
        if accepted is not None:  # a returning client, decided from this process's fresh caches
            checked(accepted)
            return
        self._in_thread(checked, self.authenticator.check_certificate, certificates)

    def receive(self, data: bytes) -> None:
        """Bytes from the client (decrypted; one whole message per call over WebSocket)."""
        self._input(self.core.receive_data, data)

    def _input(self, feed: Callable[[Any], Iterable[Any]], piece: Any) -> None:
        if self._closing or self.lost:
            return
        if self._pending:
            self._hold((feed, piece))
            return
        try:
            events = feed(piece)
        except Exception:
            logger.exception("%s: core failed on input", self.name)
            self._internal_error()
            return
        self._feed(events)

    def receive_element(self, parsed: Any) -> None:
        """One element the adapter already read with the core's parser (a BOSH body's child: no re-parse)."""
        self._input(self.core.receive_element, parsed)

    def deliver(self, element: Any) -> None:
        """A stanza routed to this session (``transport.im.bridge``): queue it and send it."""
        if self._closing or self.lost:
            return
        if self.core.send_stanza(element):
            self._flush()

    def close_with_error(self, condition: str, text: str = "") -> None:
        """End the stream with a stream error (RFC 6120 §4.9), then the connection."""
        if self._closing or self.lost:
            return
        self._feed(self.core.close_with_error(condition, text))
        self._close_transport()

    def close(self, reason: str = "closed by the server") -> None:
        """End the stream cleanly (RFC 6120 §4.4), then the connection."""
        if self._closing or self.lost:
            return
        self._feed(self.core.close(reason))
        self._close_transport()

    def connection_lost(self, why: str = "closed") -> None:
        """The transport is gone: cancel the timers, leave the router and the session registry."""
        if self.lost:
            return
        self.lost = True
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self.bridge is not None:
            self.bridge.stop()  # unavailable presence to subscribers (RFC 6121 §4.5.2)
        if self.live is not None:
            self.live.unregister()
        self.core.connection_lost()
        self._settle(False)
        self._record_unattempted()
        logger.info("%s: disconnected (%s)%s", self.name, why, f" jid={self.jid}" if self.jid else "")

    # -- the certificate ------------------------------------------------------------------------------

    def _certificate_checked(
        self, channel_bindings: dict[str, bytes], chain: Sequence[bytes | x509.Certificate], check: Any
    ) -> None:
        # The leaf's fingerprint, from the check's facts when it parsed the leaf (issue 17 §6: hashed once)
        fingerprint = getattr(check.facts, "fingerprint_sha256", None)
        self.cert_fingerprint = fingerprint if isinstance(fingerprint, str) else leaf_fingerprint(chain)
        if self.tls_options is not None and must_disconnect(self.tls_options, bool(check.verified)):
            # MongooseIM disconnect_on_failure: an invalid certificate ends the connection at once.
            logger.warning("%s: certificate refused, disconnecting: %s", self.name, check.reason)
            self._closing = True
            self._close_transport(abort=True)
            return
        resumed = ", resumed TLS session" if self.tls_resumed else ""
        if check.facts is not None and not check.verified:
            logger.info("%s: client certificate not verified (%s%s)", self.name, check.reason, resumed)
        elif check.facts is not None:  # DEBUG: the SASL success line that follows says so (issue 17 §6)
            logger.debug("%s: client certificate verified (%s%s)", self.name, check.reason, resumed)
        self.cert_facts = check.facts if check.verified else None
        self.presented_facts = check.facts
        self.no_certificate = check.facts is None and requests_certificate(self.tls_options)
        if channel_bindings:
            events = self.core.tls_established(check, channel_bindings=channel_bindings)
        else:
            events = self.core.tls_established(check)
        self._feed(events)
        self._settle(not self._closing)

    def _accepted_from_memory(self, chain: list[bytes | x509.Certificate]) -> Any:
        """The authenticator's acceptance decided on this thread without the database, or None: then the
        check runs in a worker thread, as for every refusal (``accepted_from_memory``)."""
        decide = getattr(self.authenticator, "accepted_from_memory", None)
        if decide is None:
            return None
        try:
            return decide(chain)
        except Exception:  # the worker's check decides instead, and reports what fails there
            logger.exception("%s: the in-memory certificate check failed", self.name)
            return None

    def _record_unattempted(self) -> None:
        """Issue 18 §3: a client that presented no certificate and left without a login attempt (a client
        offered no mechanism it can use gives up silently) is one AuthEvent, as every attempt is. Anything
        it tried (a SASL step, a refusal of the core's) is recorded already, as a refused certificate is."""
        if not self.no_certificate or self.jid is not None or getattr(self.authenticator, "attempts", 1):
            return
        reason = "no client certificate presented; the connection ended without a login"
        self.adapter.run_in_thread(
            functools.partial(self.authenticator.record_refusal, None, None, reason),
            lambda _result: None,
            lambda description: logger.error("%s: recording the attempt failed: %s", self.name, description),
        )

    def _settle(self, ready: bool) -> None:
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(ready)

    def _refuse_flooder(self) -> None:
        if self.lost:
            return
        self._closing = False  # set to keep the client's input out meanwhile; close_with_error checks it
        self.close_with_error(limits.POLICY_VIOLATION, "too many failed authentications; try again later")

    # -- the core's events ----------------------------------------------------------------------------

    def _feed(self, events: Iterable[Any] | None) -> None:
        """Send what the core wants sent, then act on its events (so ``<proceed/>`` precedes TLS)."""
        events = list(events or ())
        self._flush()
        try:
            for event in events:
                self._handle(event)
        except Exception:
            logger.exception("%s: failure while handling core events", self.name)
            self._internal_error()
            return
        self._flush()

    def _handle(self, event: Any) -> None:
        match event:
            case StartTls():
                self._flush()  # <proceed/> goes out in the clear, then the handshake (RFC 6120 §5.4.3.3)
                self.adapter.start_tls()
            case AuthenticateRequest(facts=facts, authzid=authzid, domain=domain):
                check = self.authenticator.authenticate_external
                self._in_thread(self._external_judged, check, facts, authzid, domain)
            case PasswordStepRequest():
                self._in_thread(self._auth_result, self.authenticator.authenticate_password, event)
            case AuthRefused(condition=condition, reason=reason, mechanism=mechanism):
                # Issue 18 §3: recorded as any attempt; the client's input waits for the write (capped per
                # address by the authenticator, so a flood costs one counter per refusal past the cap).
                what = f"SASL {mechanism}: {reason}" if mechanism else f"SASL: {reason}"
                record = self.authenticator.record_refusal
                self._in_thread(_ignore, record, self.presented_facts, condition, what)
            case Authenticated(jid=jid):
                logger.debug("%s: authenticated as %s", self.name, jid)
            case BindRequest(jid=jid):
                self._bind(str(jid))
            case Bound(jid=jid):
                self.jid = str(jid)
                logger.info("%s: session bound to %s", self.name, self.jid)
            case StanzaReceived(element=element):
                if self.bridge is not None:
                    self.bridge.from_client(element)
                else:
                    logger.debug("%s: stanza not routed (no router)", self.name)
            case StartTimer(name=name, seconds=seconds):
                self._start_timer(name, seconds)
            case CancelTimer(name=name):
                self._cancel_timer(name)
            case Close(reason=reason, condition=condition):
                self.close_condition = condition
                with_error = f" with {condition}" if condition else ""
                logger.info("%s: stream closed%s: %s", self.name, with_error, reason)
                self._closing = True
                self._flush()
                self._close_transport()
            case _:
                logger.debug("%s: core event %s ignored", self.name, event)

    def _external_judged(self, result: Any) -> None:
        if getattr(result, "jid", None):
            # DEBUG: the authenticator's INFO line says it (subject, JID, transport, peer, why)
            logger.debug("%s: SASL EXTERNAL accepted as %s", self.name, result.jid)
        else:
            condition, reason = getattr(result, "condition", "?"), getattr(result, "reason", "")
            logger.info("%s: SASL EXTERNAL refused: %s (%s)", self.name, condition, reason)
        self._auth_result(result)

    def _auth_result(self, result: Any) -> None:
        """A SASL verdict or a password step (the authenticator logged and recorded the outcome)."""
        self._feed(self.core.auth_result(result))

    def _bind(self, full_jid: str) -> None:
        """Enter the session registry, which re-checks the credentials before the core may send the bind
        result and ends the session whenever its certificate stops being valid (``live.bind_session``)."""
        if self.bridge_factory is not None:
            self.bridge = self.bridge_factory(full_jid, deliver=self.deliver, close=self.close_with_error)
        self.live = live.bind_session(
            self.sessions,
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
        if self._closing or self.lost:
            return
        self._feed(self.core.bind_result(None))

    def _flush(self) -> None:
        if self.lost:
            return
        if self.framed:
            for frame in self.core.frames_to_send():
                self.adapter.send(frame)
        elif data := self.core.data_to_send():
            self.adapter.send(data)

    # -- threads, timers, held input, errors ----------------------------------------------------------

    def _in_thread(self, on_result: Callable[[Any], None], function: Callable[..., Any], *args: Any) -> None:
        """``function(*args)`` in a thread; then, on the loop, ``on_result(result)`` and the held input."""
        self._pending += 1
        label = getattr(function, "__name__", "call")

        def done(result: Any) -> None:
            self._pending -= 1
            if self._closing or self.lost:
                return  # the connection went away meanwhile: drop the result
            try:
                on_result(result)
            except Exception:
                logger.exception("%s: failure after %s", self.name, label)
                self._internal_error()
                return
            self._release_held()

        def failed(description: str) -> None:
            self._pending -= 1
            if self._closing or self.lost:
                return
            logger.error("%s: %s failed: %s", self.name, label, description)
            self._internal_error()

        self.adapter.run_in_thread(functools.partial(function, *args), done, failed)

    def _fired(self, name: str) -> None:
        self._timers.pop(name, None)
        if self._closing or self.lost:
            return
        try:
            events = self.core.timer_fired(name)
        except Exception:
            logger.exception("%s: core failed on timer %s", self.name, name)
            self._internal_error()
            return
        self._feed(events)

    def _start_timer(self, name: str, seconds: float) -> None:
        running = self._timers.get(name)
        if running is not None and hasattr(running, "reset"):
            # Twisted's DelayedCall moves in place: the keepalive restarts at every input, so it is cheap.
            running.reset(seconds)
            return
        self._cancel_timer(name)
        self._timers[name] = self.adapter.call_later(seconds, functools.partial(self._fired, name))

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _hold(self, piece: tuple[Callable[[Any], Iterable[Any]], Any]) -> None:
        self._held.append(piece)
        self._held_size += _input_size(piece[1])
        if self._held_size > MAX_PENDING_INPUT:
            logger.warning("%s: %d bytes held during a check, closing", self.name, self._held_size)
            self._closing = True
            self._close_transport()

    def _release_held(self) -> None:
        while self._held and not self._pending and not self._closing:
            feed, data = self._held.pop(0)
            self._held_size -= _input_size(data)
            self._input(feed, data)

    def _internal_error(self) -> None:
        if not self._closing and not self.lost:
            try:
                self._feed(self.core.close_with_error("internal-server-error", ""))
            except Exception:
                logger.exception("%s: could not send the stream error", self.name)
        self._closing = True
        self._close_transport()

    def _close_transport(self, abort: bool = False) -> None:
        """Ask the adapter to close (once); an ``on_ready`` still waiting learns the connection ends."""
        self._closing = True
        if not self._close_sent and not self.lost:
            self._close_sent = True
            self.adapter.close(abort)
        self._settle(False)


def _ignore(_result: Any) -> None:
    """The result of a call made only for its effect (a record)."""


def _input_size(piece: Any) -> int:
    """Bytes of held input: raw bytes, or a parsed element with the size its parser measured."""
    return len(piece) if isinstance(piece, bytes | bytearray) else getattr(piece, "size", 0)
