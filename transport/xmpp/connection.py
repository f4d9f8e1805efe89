"""The c2s XMPP stream as a sans-I/O state machine: bytes and results in, bytes and events out.

Specs: RFC 6120 §4 (streams, stream errors), §5 (STARTTLS), §6 (SASL; EXTERNAL per RFC 4422 App. A and
XEP-0178), §7 (resource binding), §8 (stanzas), §11 (XML restrictions, in ``xml.py``); RFC 3921 §3 (legacy
session); XEP-0199 (ping); XEP-0030 (disco#info); RFC 7395 (WebSocket framing).

Use::

    conn = C2SConnection(settings, log_id="tcp 192.0.2.1:40000")
    events = conn.connection_made()            # StartTimer: the adapter calls conn.timer_fired(name) later
    events = conn.receive_data(bytes_from_socket)
    socket.write(conn.data_to_send())          # always before acting on the events
    for event in events: ...                   # StartTls -> conn.tls_established(...),
                                               # AuthenticateRequest -> conn.auth_result(...),
                                               # BindRequest -> conn.bind_result(...), Close -> close

The states and their transitions are in ``states.py`` (every change goes through ``_goto``); which element
each state accepts is ``ACCEPTED`` at the end of this file, a table of the methods that handle them.
No I/O, no Django, no clocks: the core asks for timers (``StartTimer``, answered by ``timer_fired``) and the
session driver (``transport.driver``) keeps them and makes the database calls.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from xml.etree.ElementTree import Element, SubElement

from . import errors
from . import namespaces as ns
from .auth import MECHANISM_NAMES, PASSWORD_MECHANISMS
from .decisions import IdentityDecision
from .events import (
    AUTH_DEADLINE,
    KEEPALIVE,
    Authenticated,
    AuthenticateRequest,
    AuthRefused,
    BindRequest,
    Bound,
    CancelTimer,
    Close,
    Event,
    LocalProtocolError,
    PasswordStepRequest,
    StanzaReceived,
    StartTimer,
    StartTls,
    StreamOpened,
)
from .jid import InvalidJid, Jid, normalise_domain, normalise_resource, parse_bare_jid, parse_jid
from .mechanisms import offered_mechanisms
from .states import BEFORE_SESSION, WAITING_FOR_ADAPTER, State, Trigger, next_state
from .xml import (
    StanzaParsed,
    StreamEnd,
    StreamOpen,
    StreamParser,
    _escape_attr,
    _escape_text,
    next_piece,
    parse_document,
    serialize,
    stanza_too_large,
    stream_footer,
    stream_header,
)

logger = logging.getLogger(__name__)

TLS_MODES = ("none", "starttls", "starttls_required", "tls")
FRAMINGS = ("stream", "websocket")
SERVER_FEATURES = (ns.DISCO_INFO, ns.PING, ns.SASLCERT)  # XEP-0030 features of the server itself
# A client that has not bound a resource this long after connecting is dropped (slowloris before auth).
AUTH_TIMEOUT = 60.0


@dataclass(frozen=True)
class StreamSettings:
    """How one listener's streams behave (from the TOML config: hosts, listener, auth)."""

    hosted_domains: tuple[str, ...]
    tls_mode: str = "starttls"  # none | starttls | starttls_required | tls
    sasl_mechanisms: tuple[str, ...] = ("external",)
    sasl_external: tuple[str, ...] = ("standard",)
    cn_prefix: str = ""
    cn_suffix: str = ""
    max_stanza_size: int = 65536
    framing: str = "stream"  # stream (TCP, RFC 6120) | websocket (RFC 7395)
    max_auth_failures: int = 3  # RFC 6120 §6.4.5: "at least 2 and no more than 5" retries
    legacy_session: bool = True  # advertise RFC 3921 <session/> as optional, for old clients
    server_name: str = "xmppauth"  # XEP-0030 identity name
    # False: the listener requests no client certificate (tls.verify_mode "none"), so EXTERNAL is never
    # offered on it, whatever the adapter reports (DESIGN §0, as MongooseIM).
    client_certificates: bool = True
    # True when an auth method checks passwords (rdbms): the password mechanisms of sasl_mechanisms are
    # offered, over TLS only (DESIGN §4).
    password_auth: bool = False
    # True when an auth method serves EXTERNAL (pki, db, http); False e.g. with methods = ["rdbms"] only.
    external_auth: bool = True
    # Seconds from connection_made() to a bound resource before connection-timeout (RFC 6120 §4.9.3.4).
    auth_timeout: float = AUTH_TIMEOUT
    # Seconds of silence from a bound client before a server ping (XEP-0199 §4.2); 0: never ping.
    ping_interval: float = 0.0

    def __post_init__(self) -> None:
        if self.tls_mode not in TLS_MODES:
            raise ValueError(f"tls_mode {self.tls_mode!r}: expected one of {', '.join(TLS_MODES)}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing {self.framing!r}: expected one of {', '.join(FRAMINGS)}")
        if not self.hosted_domains:
            raise ValueError("hosted_domains: at least one domain is needed")
        if self.max_stanza_size < 1024:
            raise ValueError("max_stanza_size: at least 1024 bytes")
        if self.max_auth_failures < 1:
            raise ValueError("max_auth_failures: at least 1")


class C2SConnection:
    """One client-to-server stream, from the first byte to CLOSED."""

    # One per connection, held for the session's life: slots, not a dict (issue 17 §5: with more than 30
    # attributes an instance dict stops sharing its keys and costs about 1.6 KiB).
    __slots__ = (
        "_auth_failures",
        "_bind_id",
        "_deadline_armed",
        "_events",
        "_framed",
        "_header_sent",
        "_held",
        "_held_size",
        "_hosted",
        "_out",
        "_parser",
        "_pending",
        "_ping_outstanding",
        "_pings_sent",
        "_plus_offered",
        "_pos",
        "_sasl_first",
        "_sasl_mechanism",
        "_state",
        "_token",
        "channel_bindings",
        "domain",
        "jid",
        "log_id",
        "peer_facts",
        "peer_user_text",
        "peer_verified",
        "peer_verify_error",
        "resource",
        "settings",
        "stream_id",
        "tls_active",
    )

    def __init__(
        self,
        settings: StreamSettings,
        *,
        tls_active: bool | None = None,
        peer_facts: Any = None,
        peer_verified: bool = False,
        log_id: str = "c2s",
        token: Callable[[int], str] = secrets.token_hex,
        hosted: Callable[[str], bool] | None = None,
    ) -> None:
        """``hosted``: whether a (normalised) domain is served here, asked at every stream open; the adapters
        pass ``accounts.domains.checker`` (config hosts minus the domains an admin disabled). Without it,
        ``settings.hosted_domains``."""
        self.settings = settings
        self.log_id = log_id
        self._token = token
        self._framed = settings.framing == "websocket"
        # Direct TLS and wss: the adapter only ever hands us decrypted bytes.
        self.tls_active = settings.tls_mode == "tls" if tls_active is None else tls_active
        self.peer_facts = peer_facts
        self.peer_verified = peer_verified
        self.peer_verify_error: str | None = None
        self.peer_user_text = ""  # what the client may read about its own refused certificate (user_text)
        self.channel_bindings: dict[str, bytes] = {}  # RFC 5929 / RFC 9266 type -> data, from the adapter
        self._sasl_mechanism: str | None = None  # the mechanism of the exchange in progress
        self._sasl_first = False  # the next client message is the exchange's first
        self._plus_offered = False
        self._hosted = (
            hosted or frozenset(normalise_domain(domain) for domain in settings.hosted_domains).__contains__
        )
        self._state = State.WAIT_STREAM  # changed only by _goto (states.py)
        self.domain: str | None = None  # the stream's `to`, normalised, once accepted
        self.stream_id: str | None = None
        self.jid: str | None = None  # bare JID after SASL
        self.resource: str | None = None
        self._bind_id: str | None = None  # the id of the bind request the adapter is checking
        self._auth_failures = 0
        self._header_sent = False
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._pending = b""  # bytes not yet given to the parser
        self._pos = 0
        # Framed input not yet read: whole WebSocket messages, or elements an adapter's parser read (BOSH).
        self._held: list[bytes | StanzaParsed] = []  # a list: 56 bytes empty, a deque 760 (issue 17 §5)
        self._held_size = 0
        self._parser: StreamParser | None = self._new_parser()
        self._deadline_armed = False  # connection_made() asked for the auth deadline
        self._ping_outstanding = False  # a keepalive ping went out and nothing came back since
        self._pings_sent = 0

    # == public interface (adapters) =====================================================================

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def full_jid(self) -> str | None:
        return f"{self.jid}/{self.resource}" if self.jid and self.resource else None

    def data_to_send(self) -> bytes:
        """Everything queued for the client, as one byte string (TCP)."""
        data, self._out = b"".join(self._out), []
        return data

    def frames_to_send(self) -> list[bytes]:
        """Everything queued, one complete element per item: one WebSocket message each (RFC 7395 §3.3.3)."""
        frames, self._out = self._out, []
        return frames

    def receive_data(self, data: bytes) -> list[Event]:
        """Bytes from the client (decrypted when TLS is on).

        With WebSocket framing each call is one whole message, which must be one complete element, a
        document of its own (RFC 7395 §3.3.3): anything else ends the stream (``xml.parse_document``).
        """
        if self.closed:
            return self._drain()
        if data and self.state is State.SESSION and self.settings.ping_interval:
            self._client_heard()  # XEP-0199: any input from a bound client restarts the silence clock
        if self._framed:
            self._held.append(data)
            self._held_size += len(data)
            return self._received(self._held_size)
        if not data:
            return self._drain()
        self._pending = self._pending[self._pos :] + data
        self._pos = 0
        return self._received(len(self._pending))

    def receive_element(self, parsed: StanzaParsed) -> list[Event]:
        """A first-level element the adapter read with :func:`~transport.xmpp.xml.parse_document` (a BOSH
        body's child, XEP-0206 §5), fed as is: no second parse. WebSocket framing only."""
        if not self._framed:
            raise LocalProtocolError("receive_element needs framing 'websocket'")
        if self.closed:
            return self._drain()
        if self.state is State.SESSION and self.settings.ping_interval:
            self._client_heard()
        self._held.append(parsed)
        self._held_size += parsed.size
        return self._received(self._held_size)

    def _received(self, held: int) -> list[Event]:
        if self._state in WAITING_FOR_ADAPTER and held > self.settings.max_stanza_size:
            self._stream_error(errors.POLICY_VIOLATION, "too much data while authentication is pending")
        self._pump()
        return self._drain()

    def tls_established(
        self,
        facts: Any = None,
        verified: bool | None = None,
        verify_error: str | None = None,
        *,
        channel_bindings: Mapping[str, bytes] | None = None,
    ) -> list[Event]:
        """TLS is up (after STARTTLS, or direct TLS before the first byte), with the peer's certificate facts.

        ``facts`` may also be a certificate check object with ``facts``, ``verified`` and ``reason``.
        ``verified`` says whether the chain passed verification and revocation (DESIGN §3, §4).
        ``channel_bindings``: what this TLS connection offers SCRAM -PLUS (``tls-exporter``,
        ``tls-server-end-point``); without any, no -PLUS mechanism is offered.
        """
        if verified is None and hasattr(facts, "verified"):
            check = facts
            facts, verified = getattr(check, "facts", None), bool(check.verified)
            verify_error = None if verified else getattr(check, "reason", None)
            self.peer_user_text = "" if verified else getattr(check, "user_text", "")
        if self.closed:
            return self._drain()
        if self.state is not State.WAIT_TLS and not (self.state is State.WAIT_STREAM and self.domain is None):
            raise LocalProtocolError(f"tls_established in state {self.state.name}")
        self.tls_active = True
        self.channel_bindings = dict(channel_bindings or {})
        self.peer_facts = facts
        self.peer_verified = bool(verified) and facts is not None
        self.peer_verify_error = verify_error
        if facts is not None and not self.peer_verified:
            self._log(logging.INFO, "client certificate not verified: %s", verify_error or "no reason given")
        if self.state is State.WAIT_TLS:
            self._restart(Trigger.TLS_ESTABLISHED)  # RFC 6120 §5.4.3.3: a new stream over TLS
            self._pump()
        return self._drain()

    def auth_result(self, result: IdentityDecision) -> list[Event]:
        """The verdict on an :class:`AuthenticateRequest` or a :class:`PasswordStepRequest`: ``jid``, or
        ``condition`` and ``reason``, or (a password mechanism's next round) ``challenge``."""
        if self.closed:
            return self._drain()
        if self.state is not State.SASL_PENDING:
            raise LocalProtocolError(f"auth_result in state {self.state.name}")
        challenge, jid = result.challenge, result.jid
        if challenge is not None and self._sasl_mechanism in PASSWORD_MECHANISMS and not jid:
            challenge_element = Element(ns.qname(ns.SASL, "challenge"))  # RFC 6120 §6.4.3
            challenge_element.text = base64.b64encode(challenge).decode("ascii") or None
            self._send(challenge_element)
            self._goto(Trigger.SASL_CHALLENGE)
            self._pump()
            return self._drain()
        if jid:
            try:
                accepted = parse_bare_jid(jid)
            except InvalidJid as exc:
                self._refuse(errors.SASL_NOT_AUTHORIZED, f"the authenticator returned {jid!r}: {exc}")
            else:
                if accepted.domain != self.domain:
                    self._refuse(errors.SASL_NOT_AUTHORIZED, f"{accepted.bare} is not in {self.domain}")
                else:
                    self._sasl_success(accepted, result.additional_data)
        else:
            condition = result.condition or errors.SASL_NOT_AUTHORIZED
            reason = result.reason or "refused"
            if condition not in errors.SASL_CONDITIONS:
                self._log(logging.WARNING, "authenticator gave unknown SASL condition %r", condition)
                condition = errors.SASL_NOT_AUTHORIZED
            self._sasl_failure(condition, reason, result.user_text)  # the authenticator recorded it
        self._pump()
        return self._drain()

    def bind_result(self, condition: str | None = None, text: str = "") -> list[Event]:
        """The verdict on a :class:`BindRequest`: None binds (RFC 6120 §7.6.1); a stream error condition ends
        the stream instead (``reset`` for a certificate revoked, held or expired since the handshake, RFC
        6120 §4.9.3.16), with ``text`` for the client."""
        if self.closed:
            return self._drain()
        if self.state is not State.BIND_PENDING:
            raise LocalProtocolError(f"bind_result in state {self.state.name}")
        if condition is not None:
            if condition not in errors.STREAM_CONDITIONS:
                self._log(logging.WARNING, "adapter gave unknown stream condition %r", condition)
                condition = errors.UNDEFINED_CONDITION
            self._stream_error(condition, text)
            return self._drain()
        full = self.full_jid or ""
        self._out.append(_bind_result(self._bind_id or "", full, self._framed))  # RFC 6120 §7.6.1
        self._bind_id = None
        self._goto(Trigger.BIND_ACCEPTED)
        if self._parser is not None:
            self._parser.keep_between_stanzas(False)  # an idle session holds no expat parser (issue 17 §5)
        self._log(logging.DEBUG, "bound %s", full)  # the driver's INFO line says it, with the connection
        self._events.append(Bound(full, self.resource or ""))
        self._session_timers()
        self._pump()  # what the client sent meanwhile
        return self._drain()

    def close_with_error(self, condition: str, text: str = "") -> list[Event]:
        """End the stream with a stream error (e.g. ``reset`` on revocation, ``conflict``; RFC 6120 §4.9)."""
        if not self.closed:
            self._stream_error(condition, text)
        return self._drain()

    def close(self, reason: str = "closed by the server") -> list[Event]:
        """End the stream cleanly (RFC 6120 §4.4)."""
        if not self.closed:
            self._log(logging.INFO, "closing the stream: %s", reason)
            if self._header_sent:
                self._out.append(stream_footer(self._framed))
            self._enter_closed(Close(reason))
        return self._drain()

    def send_stanza(self, element: Element) -> bool:
        """Queue a stanza for the client (from the router); False when there is no session to carry it."""
        if self.state is not State.SESSION:
            return False
        self._send(element)
        return True

    def connection_lost(self) -> None:
        """The transport went away: forget everything, no more output."""
        self._goto(Trigger.CONNECTION_LOST)
        self._parser = None
        self._pending, self._pos = b"", 0
        self._held.clear()
        self._out = []

    def connection_made(self) -> list[Event]:
        """The transport is up: the core asks for its auth deadline (call once, before any input)."""
        self._deadline_armed = True
        return [StartTimer(AUTH_DEADLINE, self.settings.auth_timeout)]

    def timer_fired(self, name: str) -> list[Event]:
        """A timer the core asked for (:class:`StartTimer`) ran out."""
        if self.closed:
            return self._drain()
        if name == AUTH_DEADLINE and self.state is not State.SESSION:
            seconds = self.settings.auth_timeout
            self._log(logging.WARNING, "not authenticated after %.0f s, closing", seconds)
            self._stream_error(errors.CONNECTION_TIMEOUT, "authenticate sooner")  # RFC 6120 §4.9.3.4
        elif name == KEEPALIVE and self.state is State.SESSION:
            self._keepalive()
        return self._drain()

    # == input pump ======================================================================================

    def _new_parser(self) -> StreamParser | None:
        # Framed input needs none: each message is read as a document of its own (parse_document).
        if self._framed:
            return None
        parser = StreamParser(self.settings.max_stanza_size)
        parser.keep_between_stanzas(self._state is not State.SESSION)  # negotiation keeps its (issue 17 §6)
        return parser

    def _pump(self) -> None:
        """Feed held bytes to the parser, a piece at a time, until they run out or the core must wait."""
        if self._framed:
            self._pump_framed()
            return
        while self._pos < len(self._pending) and self._parser is not None:
            if self.state in WAITING_FOR_ADAPTER or self.closed:
                return
            end = next_piece(self._pending, self._pos)
            piece = self._pending[self._pos : end]
            self._pos = end
            try:
                for event in self._parser.feed(piece):
                    self._dispatch(event)
                    if self.closed:
                        break
            except errors.StreamError as exc:
                self._stream_error(exc.condition, exc.text)
        if self._pos >= len(self._pending):
            self._pending, self._pos = b"", 0

    def _pump_framed(self) -> None:
        """Read held messages (and adapter-parsed elements) one at a time, until none is left or the core
        must wait for the adapter."""
        limit = self.settings.max_stanza_size
        while self._held and self._state not in WAITING_FOR_ADAPTER and not self.closed:
            item = self._held.pop(0)
            try:
                if isinstance(item, StanzaParsed):
                    self._held_size -= item.size
                    if item.size > limit:
                        raise stanza_too_large(limit)  # RFC 6120 §13.12
                    self._dispatch(item)
                    continue
                self._held_size -= len(item)
                for event in parse_document(item, limit):  # RFC 7395 §3.3.3: exactly one element
                    self._dispatch(event)
            except errors.StreamError as exc:
                self._stream_error(exc.condition, exc.text)

    def _dispatch(self, event: StreamOpen | StanzaParsed | StreamEnd) -> None:
        if isinstance(event, StreamOpen):
            self._on_stream_open(event.tag, event.attrs, event.prefix, event.default_ns)
        elif isinstance(event, StreamEnd):
            self._on_client_close()
        elif self._framed and event.element.tag == ns.WS_OPEN:
            if self.state is not State.WAIT_STREAM:
                raise errors.StreamError(errors.BAD_FORMAT, "<open/> in the middle of a stream")
            self._on_stream_open(event.element.tag, dict(event.element.attrib), None, None)
        elif self._framed and event.element.tag == ns.WS_CLOSE:
            self._on_client_close()
        elif self.state is State.WAIT_STREAM:
            raise errors.StreamError(errors.BAD_FORMAT, "expected <open/> first (RFC 7395 §3.4)")
        else:
            element = event.element
            handler = ACCEPTED[self._state].get(element.tag)
            if handler is None:
                self._unexpected(element)
            else:
                handler(self, element)

    def _unexpected(self, element: Element) -> None:
        namespace, local = ns.split_qname(element.tag)
        if element.tag in ns.STANZAS and self.state in BEFORE_SESSION:
            raise errors.StreamError(
                errors.NOT_AUTHORIZED, f"<{local}/> before {'binding' if self.jid else 'authentication'}"
            )
        raise errors.StreamError(
            errors.UNSUPPORTED_STANZA_TYPE, f"<{local} xmlns='{namespace}'/> is not accepted now"
        )

    # == stream header, restart, close ===================================================================

    def _on_stream_open(
        self, tag: str, attrs: dict[str, str], prefix: str | None, default_ns: str | None
    ) -> None:
        namespace, local = ns.split_qname(tag)
        if not self._framed:
            if namespace != ns.STREAMS:  # RFC 6120 §4.8.1
                raise errors.StreamError(errors.INVALID_NAMESPACE, f"stream namespace {namespace!r}")
            if local != "stream":
                raise errors.StreamError(errors.BAD_FORMAT, f"root element <{local}/> is not <stream/>")
            if prefix != "stream":  # RFC 6120 §4.8.5
                raise errors.StreamError(errors.BAD_NAMESPACE_PREFIX, "the stream prefix must be 'stream'")
            if default_ns != ns.CLIENT:  # RFC 6120 §4.8.2: the content namespace of c2s
                raise errors.StreamError(errors.INVALID_NAMESPACE, f"content namespace {default_ns!r}")
        version = attrs.get("version")
        if not _version_ok(version):  # RFC 6120 §4.7.5
            raise errors.StreamError(errors.UNSUPPORTED_VERSION, f"version {version!r}; we speak 1.0")
        to = attrs.get("to")
        if not to:  # RFC 6120 §4.7.2
            raise errors.StreamError(errors.HOST_UNKNOWN, "the stream header has no 'to'")
        try:
            domain = normalise_domain(to)
        except InvalidJid:
            domain = ""
        if not domain or not self._hosted(domain):
            raise errors.StreamError(errors.HOST_UNKNOWN, f"{to!r} is not served here")  # RFC 6120 §4.9.3.6
        if self.domain is not None and domain != self.domain:
            raise errors.StreamError(
                errors.HOST_UNKNOWN, f"the restarted stream names {domain}, not {self.domain}"
            )
        self.domain = domain
        self._send_header(to_attr=attrs.get("from"))
        self._goto(self._offer())
        self._log(logging.DEBUG, "stream %s opened to %s (%s)", self.stream_id, domain, self.state.name)
        self._events.append(StreamOpened(domain, self.stream_id or ""))
        if text := self._own_certificate_refusal():
            # RFC 6120 §4.9.3.12 (not authorized for stream negotiation), text per §4.9.2: a client offered
            # nothing would only say "no appropriate login method" (issue 18 §5)
            self._log(logging.INFO, "no SASL mechanism offered: %s", self._why_no_external())
            self._stream_error(errors.NOT_AUTHORIZED, text)
            return
        self._send_features()

    def _send_header(self, to_attr: str | None = None) -> None:
        """Our header (RFC 6120 §4.7): also sent before a stream error if none went out yet (§4.9.1.2)."""
        self.stream_id = self._token(16)
        attrs: dict[str, str | None] = {"from": self.domain, "id": self.stream_id}
        if to_attr:
            try:
                attrs["to"] = str(parse_jid(to_attr))  # RFC 6120 §4.7.1: echo the client's `from`
            except InvalidJid:
                pass
        attrs["version"] = "1.0"
        attrs["xml:lang"] = "en"
        self._out.append(stream_header(attrs, framed=self._framed))
        self._header_sent = True

    def _goto(self, trigger: Trigger) -> None:
        """The one place the state changes: the transition table of ``states.py`` says where to."""
        self._state = next_state(self._state, trigger)

    def _offer(self) -> Trigger:
        """What the next features offer: binding once authenticated, else STARTTLS while it is possible,
        else SASL (RFC 6120 §4.3)."""
        if self.jid is not None:
            return Trigger.OFFER_BIND
        if self._starttls_offered():
            return Trigger.OFFER_STARTTLS
        return Trigger.OFFER_SASL

    def _starttls_offered(self) -> bool:
        return (
            not self._framed
            and not self.tls_active
            and self.settings.tls_mode in ("starttls", "starttls_required")
        )

    def _restart(self, trigger: Trigger) -> None:
        """RFC 6120 §4.3.3: after TLS and after SASL the client opens a new stream on a new parser."""
        self._goto(trigger)
        self._header_sent = False
        self._parser = self._new_parser()

    def _on_client_close(self) -> None:
        self._log(logging.DEBUG, "the client closed the stream")  # the driver logs the Close at INFO
        self._out.append(stream_footer(self._framed))  # RFC 6120 §4.4: close ours too
        self._enter_closed(Close("the client closed the stream"))

    def _stream_error(self, condition: str, text: str = "") -> None:
        """RFC 6120 §4.9.1.1: <stream:error/>, then the closing tag, then the transport closes."""
        if self.closed:
            return
        self._log(logging.WARNING, "stream error %s: %s", condition, text or "-")
        if not self._header_sent:
            self._send_header()
        self._out.append(serialize(errors.stream_error_element(condition, text), declare_stream=self._framed))
        self._out.append(stream_footer(self._framed))
        self._enter_closed(Close(f"{condition}: {text}" if text else condition, condition))

    def _enter_closed(self, event: Close) -> None:
        self._goto(Trigger.CLOSE)
        self._parser = None
        self._pending, self._pos = b"", 0
        self._held.clear()
        self._events.append(event)

    # == features ========================================================================================

    def _mechanisms(self, *, if_verified: bool = False) -> list[str]:
        """SASL mechanisms to offer now: the one decision, ``mechanisms.offered_mechanisms`` (DESIGN §4).
        ``if_verified``: those it would offer were the client certificate verified."""
        return offered_mechanisms(
            self.settings.sasl_mechanisms,
            external_served=self.settings.external_auth,
            passwords_served=self.settings.password_auth,
            tls_active=self.tls_active,
            certificate_verified=(
                self.settings.client_certificates
                and self.peer_facts is not None
                and (self.peer_verified or if_verified)
            ),
            channel_bound=bool(self.channel_bindings),
        )

    def _own_certificate_refusal(self) -> str:
        """What a client may read of its own refused certificate (``peer_user_text``) when that refusal is
        all that stands between it and a login: SASL is next, nothing would be offered, and EXTERNAL would be
        with the certificate verified. "" otherwise (password mechanisms offered, no certificate, a
        refusal without a user text): the features go out as they are."""
        if self.state is not State.WAIT_AUTH or self.jid is not None or not self.peer_user_text:
            return ""
        if self.peer_facts is None or self.peer_verified or self._mechanisms():
            return ""
        return self.peer_user_text if "EXTERNAL" in self._mechanisms(if_verified=True) else ""

    def _send_features(self) -> None:
        """The features element for now (RFC 6120 §4.3.2), serialised once per distinct content (issue 17 §6):
        what it holds depends only on :meth:`_features_key`, so each listener's few variants are built and
        serialised once per process (``_FEATURES``), not at every stream open."""
        key = self._features_key()
        if not key.bound and not key.required:
            if not key.mechanisms:
                level = logging.INFO if self.tls_active else logging.DEBUG
                self._log(level, "no SASL mechanism offered: %s", self._why_no_external())
            self._plus_offered = key.plus_offered
        data = _FEATURES.get(key)
        if data is None:
            data = _serialize_out(_features_element(key), self._framed)
            if len(_FEATURES) >= _FEATURES_HELD:  # a bound for safety: a listener has a handful of variants
                _FEATURES.clear()
            _FEATURES[key] = data
        self._out.append(data)

    def _features_key(self) -> _FeaturesKey:
        starttls = self.state is State.WAIT_STARTTLS
        required = starttls and self.settings.tls_mode == "starttls_required"
        if self.jid is not None:
            return _FeaturesKey(
                self._framed, starttls, required, bound=True, legacy_session=self.settings.legacy_session
            )
        key = _FeaturesKey(
            self._framed,
            starttls,
            required,
            () if required else tuple(self._mechanisms()),
            empty_listing=self.state is State.WAIT_AUTH,
        )
        return key._replace(bindings=tuple(self.channel_bindings)) if key.plus_offered else key

    def _why_no_external(self) -> str:
        if "external" not in {name.lower() for name in self.settings.sasl_mechanisms}:
            return "EXTERNAL is not in auth.sasl_mechanisms"
        if not self.settings.external_auth:
            return "no auth method of auth.methods serves EXTERNAL"
        if not self.settings.client_certificates:
            return "this listener requests no client certificate (tls.verify_mode none)"
        if not self.tls_active:
            return "TLS is not on"
        if self.peer_facts is None:  # the check's own reason when it had one (unparsable, refused, ...)
            return self.peer_verify_error or "the client presented no certificate"
        return f"the client certificate did not pass verification ({self.peer_verify_error or 'no reason'})"

    # == STARTTLS (RFC 6120 §5) ==========================================================================

    def _on_starttls(self, element: Element) -> None:
        self._send(Element(ns.qname(ns.TLS, "proceed")))  # RFC 6120 §5.4.2.3
        dropped = self._pending[self._pos :]
        if dropped.strip():
            # RFC 6120 §5.4.3.3 / CVE-2011-0411 style injection: nothing sent in the clear after
            # <starttls/> may be read as if it came over TLS.
            self._log(logging.WARNING, "discarding %d bytes sent after <starttls/> before TLS", len(dropped))
        self._pending, self._pos = b"", 0
        self._parser = None
        self._goto(Trigger.STARTTLS)
        self._events.append(StartTls())

    def _on_starttls_refused(self, element: Element) -> None:
        why = "TLS is already on" if self.tls_active else "STARTTLS is not offered on this listener"
        raise errors.StreamError(errors.POLICY_VIOLATION, f"<starttls/> refused: {why}")

    # == SASL (RFC 6120 §6) ==============================================================================

    def _on_auth(self, element: Element) -> None:
        mechanism = element.get("mechanism", "")
        if self.settings.tls_mode == "starttls_required" and not self.tls_active:
            self._refuse(
                errors.SASL_ENCRYPTION_REQUIRED, "STARTTLS is required before authentication", mechanism
            )
            return
        if mechanism not in self._mechanisms():
            configured = {MECHANISM_NAMES.get(m.lower()) for m in self.settings.sasl_mechanisms}
            if mechanism == "EXTERNAL" and "EXTERNAL" in configured:
                reason = f"SASL EXTERNAL needs a verified client certificate: {self._why_no_external()}"
                # DESIGN §4; a certificate presented and refused: the client reads its own status
                self._refuse(errors.SASL_NOT_AUTHORIZED, reason, mechanism, self.peer_user_text)
            elif mechanism in configured and self.settings.password_auth and not self.tls_active:
                # RFC 6120 §6.5.3: this mechanism needs a confidential stream.
                self._refuse(
                    errors.SASL_ENCRYPTION_REQUIRED, f"{mechanism} is only offered over TLS", mechanism
                )
            else:
                self._refuse(
                    errors.SASL_INVALID_MECHANISM, f"mechanism {mechanism!r} is not offered", mechanism
                )
            return
        self._sasl_mechanism = mechanism
        self._sasl_first = True
        initial = (element.text or "").strip()
        if not initial:
            # RFC 6120 §6.4.2: no initial response -> an empty challenge; EXTERNAL's authzid, or the
            # password mechanism's first message, comes in <response/>.
            self._send(Element(ns.qname(ns.SASL, "challenge")))
            self._goto(Trigger.SASL_CHALLENGE)
            return
        if mechanism == "EXTERNAL":
            self._external(initial)
        else:
            self._password_step(initial)

    def _on_response(self, element: Element) -> None:
        if self._sasl_mechanism in PASSWORD_MECHANISMS:
            self._password_step((element.text or "").strip() or "=")
        else:
            self._external((element.text or "").strip() or "=")

    def _password_step(self, data: str) -> None:
        """One client message of PLAIN or SCRAM: decoded here, judged by the adapter's authenticator."""
        raw = b""
        if data != "=":  # RFC 6120 §6.4.2: '=' is a present but empty response
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                self._refuse(errors.SASL_INCORRECT_ENCODING, "the response is not valid base64")
                return
        first, self._sasl_first = self._sasl_first, False
        self._goto(Trigger.SASL_REQUEST)
        self._events.append(
            PasswordStepRequest(
                self._sasl_mechanism or "",
                raw,
                self.domain or "",
                first,
                dict(self.channel_bindings),
                self._plus_offered,
            )
        )

    def _on_abort(self, element: Element) -> None:
        self._sasl_failure(errors.SASL_ABORTED, "the client aborted the authentication")  # RFC 6120 §6.4.4

    def _external(self, data: str) -> None:
        """EXTERNAL's single message: '=' (no authzid) or the base64 of the authzid (RFC 4422 App. A)."""
        authzid: str | None = None
        if data != "=":  # RFC 6120 §6.4.2: '=' is a present but empty response
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                self._refuse(errors.SASL_INCORRECT_ENCODING, "the response is not valid base64")
                return
            try:
                authzid = raw.decode("utf-8") or None
            except UnicodeDecodeError:
                self._refuse(errors.SASL_INVALID_AUTHZID, "the authzid is not UTF-8")
                return
        if authzid is not None:
            try:
                parse_bare_jid(authzid)  # RFC 6120 §6.3.8: the authzid is a bare JID
            except InvalidJid as exc:
                self._refuse(errors.SASL_INVALID_AUTHZID, f"authzid {authzid!r} is not a JID: {exc}")
                return
        self._goto(Trigger.SASL_REQUEST)
        self._events.append(AuthenticateRequest(self.peer_facts, authzid, self.domain or ""))

    def _refuse(self, condition: str, reason: str, mechanism: str | None = None, text: str = "") -> None:
        """A SASL attempt the core refuses by itself: the adapter records it (:class:`AuthRefused`)."""
        mechanism = (self._sasl_mechanism or "") if mechanism is None else mechanism
        self._events.append(AuthRefused(condition, reason, mechanism))
        self._sasl_failure(condition, reason, text)

    def _sasl_failure(self, condition: str, reason: str, text: str = "") -> None:
        """``text``: for the client's ``<text/>`` (``errors.sasl_failure_element``); "" the generic one."""
        self._sasl_mechanism = None
        self._auth_failures += 1
        self._log(
            logging.INFO,
            "SASL failure %s (%d/%d): %s",
            condition,
            self._auth_failures,
            self.settings.max_auth_failures,
            reason,
        )
        self._send(
            errors.sasl_failure_element(condition, text)
        )  # RFC 6120 §6.4.5; the reason stays in the log
        if self._auth_failures >= self.settings.max_auth_failures:
            # RFC 6120 §6.4.5: past the allowed retries the stream ends, with <policy-violation/>.
            self._stream_error(
                errors.POLICY_VIOLATION, f"{self._auth_failures} failed authentication attempts"
            )
            return
        self._goto(self._offer())

    def _sasl_success(self, jid: Jid, additional: bytes | None = None) -> None:
        self._log(logging.DEBUG, "authenticated as %s", jid.bare)  # the authenticator logs it at INFO
        self._sasl_mechanism = None
        if additional:  # RFC 6120 §6.4.6: with additional data if any
            success = Element(ns.qname(ns.SASL, "success"))
            success.text = base64.b64encode(additional).decode("ascii")
            self._send(success)
        else:
            self._out.append(_SUCCESS[self._framed])
        self.jid = jid.bare
        self._events.append(Authenticated(jid.bare))
        self._restart(Trigger.SASL_SUCCESS)

    # == resource binding (RFC 6120 §7) ==================================================================

    def _on_iq_before_bind(self, iq: Element) -> None:
        children = list(iq)
        if iq.get("type") == "set" and len(children) == 1 and children[0].tag == ns.qname(ns.BIND, "bind"):
            self._bind(iq, children[0])
            return
        self._unexpected(iq)

    def _bind(self, iq: Element, bind: Element) -> None:
        if iq.get("id") is None:
            self._send(errors.stanza_error_reply(iq, errors.STANZA_BAD_REQUEST, "an IQ needs an id"))
            return
        requested = bind.findtext(ns.qname(ns.BIND, "resource"), default="").strip()
        if requested:
            try:
                resource = normalise_resource(requested)
            except InvalidJid as exc:
                self._log(logging.INFO, "refused resource %r: %s", requested, exc)
                self._send(errors.stanza_error_reply(iq, errors.STANZA_BAD_REQUEST, f"resource: {exc}"))
                return  # RFC 6120 §7.7.2.1: the client may try again
        else:
            resource = f"xmppauth-{self._token(8)}"  # RFC 6120 §7.6.2.1: server-generated
        self.resource = resource
        self._bind_id = iq.get("id", "")
        self._goto(Trigger.BIND_REQUEST)  # no result yet: the adapter checks the credentials again first
        self._events.append(BindRequest(f"{self.jid}/{resource}", resource))

    # == stanzas (RFC 6120 §8) ===========================================================================

    def _stamp_from(self, stanza: Element) -> None:
        """RFC 6120 §8.1.2.1: the server stamps the full JID; a foreign `from` is `invalid-from`."""
        given = stanza.get("from")
        if given:
            try:
                jid = parse_jid(given)
            except InvalidJid as exc:
                raise errors.StreamError(errors.INVALID_FROM, f"from {given!r}: {exc}") from None
            if jid.bare != self.jid or (jid.resource is not None and jid.resource != self.resource):
                raise errors.StreamError(errors.INVALID_FROM, f"from {given!r} is not {self.full_jid}")
        stanza.set("from", self.full_jid or "")

    def _parse_to(self, stanza: Element) -> Jid | None | bool:
        """The stanza's `to`, None without one, False after answering `jid-malformed` (RFC 6120 §8.3.3.8)."""
        to = stanza.get("to")
        if not to:
            return None
        try:
            return parse_jid(to)
        except InvalidJid as exc:
            self._reply_error(stanza, errors.STANZA_JID_MALFORMED, f"to {to!r}: {exc}")
            return False

    def _reply_error(self, stanza: Element, condition: str, text: str = "") -> None:
        """Answer with a stanza error, except to errors and IQ results (RFC 6120 §8.3.1)."""
        if stanza.get("type") in ("error", "result"):
            return
        self._log(logging.DEBUG, "stanza error %s: %s", condition, text)
        self._send(errors.stanza_error_reply(stanza, condition, text))

    def _on_routed(self, stanza: Element) -> None:
        self._stamp_from(stanza)
        if self._parse_to(stanza) is False:
            return
        self._events.append(StanzaReceived(stanza))

    def _on_iq(self, iq: Element) -> None:
        kind = iq.get("type")
        if kind not in ("get", "set", "result", "error"):  # RFC 6120 §8.2.3
            self._reply_error(iq, errors.STANZA_BAD_REQUEST, f"IQ type {kind!r}")
            return
        if iq.get("id") is None:
            self._reply_error(iq, errors.STANZA_BAD_REQUEST, "an IQ needs an id")
            return
        self._stamp_from(iq)
        to = self._parse_to(iq)
        if to is False:
            return
        if to is None or (to.resource is None and to.bare in (self.domain, self.jid)):
            # RFC 6120 §10.3 / RFC 6121 §8.5.1: the server answers for itself and for the bare account JID
            self._iq_to_server(iq, kind)
        else:
            self._events.append(StanzaReceived(iq))

    def _iq_to_server(self, iq: Element, kind: str) -> None:
        """IQs the server answers itself; anything else is service-unavailable (RFC 6120 §8.4)."""
        if kind in ("result", "error"):
            return  # never answer a response
        children = list(iq)
        if len(children) != 1:
            self._reply_error(iq, errors.STANZA_BAD_REQUEST, "an IQ get/set has exactly one child")
            return
        payload = children[0]
        if payload.tag == ns.ROSTER_QUERY and iq.get("to") in (None, "", self.jid):
            self._events.append(StanzaReceived(iq))  # RFC 6121 §2: the router keeps rosters
            return
        if payload.tag.startswith("{" + ns.SASLCERT + "}"):
            self._events.append(StanzaReceived(iq))  # XEP-0257: the router hands it to certauth
            return
        handler = _SERVER_IQ.get((kind, payload.tag))
        if handler is None:
            self._reply_error(iq, errors.STANZA_SERVICE_UNAVAILABLE)
            return
        handler(self, iq, payload)

    def _result(self, iq: Element) -> Element:
        reply = Element(ns.IQ, {"type": "result", "id": iq.get("id", "")})
        if iq.get("to"):
            reply.set("from", iq.get("to", ""))
        reply.set("to", self.full_jid or "")
        return reply

    def _iq_ping(self, iq: Element, payload: Element) -> None:
        self._send(self._result(iq))  # XEP-0199 §4.2

    def _iq_session(self, iq: Element, payload: Element) -> None:
        self._send(self._result(iq))  # RFC 3921 §3: a no-op today

    def _iq_bind_again(self, iq: Element, payload: Element) -> None:
        self._reply_error(iq, errors.STANZA_NOT_ALLOWED, "a resource is already bound")

    def _iq_disco_info(self, iq: Element, payload: Element) -> None:
        if payload.get("node"):
            self._reply_error(iq, "item-not-found", "no such node")
            return
        reply = self._result(iq)
        query = SubElement(reply, ns.qname(ns.DISCO_INFO, "query"))  # XEP-0030 §3.1
        SubElement(
            query,
            ns.qname(ns.DISCO_INFO, "identity"),
            {"category": "server", "type": "im", "name": self.settings.server_name},
        )
        for feature in SERVER_FEATURES:
            SubElement(query, ns.qname(ns.DISCO_INFO, "feature"), {"var": feature})
        self._send(reply)

    # == timers: the auth deadline and the XEP-0199 keepalive (the adapter keeps the clock) ==============

    def _session_timers(self) -> None:
        """The session exists: no more auth deadline; the keepalive clock starts."""
        if self._deadline_armed:
            self._deadline_armed = False
            self._events.append(CancelTimer(AUTH_DEADLINE))
        if self.settings.ping_interval:
            self._events.append(StartTimer(KEEPALIVE, self.settings.ping_interval))

    def _client_heard(self) -> None:
        """Any byte (a pong, a stanza, whitespace) shows the client is there: the silence clock restarts."""
        self._ping_outstanding = False
        self._events.append(StartTimer(KEEPALIVE, self.settings.ping_interval))

    def _keepalive(self) -> None:
        """Silent for ``ping_interval``: ping (XEP-0199 §4.2); still silent one interval later: close."""
        if self._ping_outstanding:
            seconds = self.settings.ping_interval
            self._log(logging.WARNING, "%s silent for %.0f s after a ping, closing", self.full_jid, seconds)
            self._stream_error(errors.CONNECTION_TIMEOUT, "no answer to ping")  # RFC 6120 §4.9.3.4
            return
        self._pings_sent += 1
        to = self.full_jid or ""
        ping = Element(ns.IQ, {"type": "get", "id": f"keepalive-{self._pings_sent}", "to": to})
        if self.domain:
            ping.set("from", self.domain)
        SubElement(ping, ns.qname(ns.PING, "ping"))
        self._send(ping)
        self._ping_outstanding = True
        self._events.append(StartTimer(KEEPALIVE, self.settings.ping_interval))

    # == helpers =========================================================================================

    def _send(self, element: Element) -> None:
        self._out.append(
            serialize(element, default_ns=None if self._framed else ns.CLIENT, declare_stream=self._framed)
        )

    def _drain(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _log(self, level: int, message: str, *args: object) -> None:
        if logger.isEnabledFor(level):  # issue 17 §6: a DEBUG line costs no string building when it is off
            logger.log(level, "%s: " + message, self.log_id, *args)


def _serialize_out(element: Element, framed: bool) -> bytes:
    """``element`` as :meth:`C2SConnection._send` writes it on a stream (framed: WebSocket) of this kind."""
    return serialize(element, default_ns=None if framed else ns.CLIENT, declare_stream=framed)


# <success/> without additional data (RFC 6120 §6.4.6), by framing: the same bytes for every login.
_SUCCESS = {framed: _serialize_out(Element(ns.qname(ns.SASL, "success")), framed) for framed in (False, True)}


def _bind_result(iq_id: str, full_jid: str, framed: bool) -> bytes:
    """The bind result (RFC 6120 §7.6.1) as ``serialize`` writes it, from a template: no element built."""
    xmlns = f' xmlns="{ns.CLIENT}"' if framed else ""  # no stream header declares it (RFC 7395 §3.3.3)
    return (
        f'<iq{xmlns} type="result" id="{_escape_attr(iq_id)}"><bind xmlns="{ns.BIND}">'
        f"<jid>{_escape_text(full_jid)}</jid></bind></iq>"
    ).encode()


class _FeaturesKey(NamedTuple):
    """Everything the features element depends on (RFC 6120 §4.3.2), and nothing else."""

    framed: bool  # WebSocket framing (RFC 7395): how it is serialised
    starttls: bool  # STARTTLS offered (RFC 6120 §5.4.1)
    required: bool  # ... and required: nothing else goes out before TLS (§5.3.1)
    mechanisms: tuple[str, ...] = ()  # the SASL mechanisms offered
    empty_listing: bool = False  # SASL is next: <mechanisms/> goes out even when empty (§6.4.1)
    bindings: tuple[str, ...] = ()  # channel-binding types, when a -PLUS mechanism is offered (XEP-0440 §3)
    bound: bool = False  # authenticated: resource binding is offered instead (§7.4)
    legacy_session: bool = False  # ... with RFC 3921's optional session

    @property
    def plus_offered(self) -> bool:
        """A SASL mechanism with channel binding is offered (RFC 5802 §6)."""
        return any(name.endswith("-PLUS") for name in self.mechanisms)


# C2SConnection._features_key() -> the serialised features element (issue 17 §6: built once per variant).
_FEATURES: dict[_FeaturesKey, bytes] = {}
_FEATURES_HELD = 256


def _features_element(key: _FeaturesKey) -> Element:
    """The features element of a :meth:`C2SConnection._features_key` (RFC 6120 §4.3.2)."""
    features = Element(ns.FEATURES)
    if key.starttls:
        starttls = SubElement(features, ns.STARTTLS)  # RFC 6120 §5.4.1
        if key.required:
            SubElement(starttls, ns.qname(ns.TLS, "required"))
            return features  # RFC 6120 §5.3.1: nothing else before TLS when it is mandatory
    if key.bound:
        SubElement(features, ns.qname(ns.BIND, "bind"))  # RFC 6120 §7.4
        if key.legacy_session:
            session = SubElement(features, ns.qname(ns.SESSION, "session"))
            SubElement(session, ns.qname(ns.SESSION, "optional"))
        return features
    if key.mechanisms or key.empty_listing:
        # RFC 6120 §6.4.1. With nothing to offer we still send an empty <mechanisms/> (the schema wants one
        # child): clients then give up at once ("no usable mechanism") instead of waiting for features that
        # never come (a refused certificate with a status of its own to tell gets a stream error instead:
        # _own_certificate_refusal). Before an optional STARTTLS it is left out.
        listing = SubElement(features, ns.qname(ns.SASL, "mechanisms"))
        for name in key.mechanisms:
            SubElement(listing, ns.qname(ns.SASL, "mechanism")).text = name
    if key.bindings:
        # XEP-0440 §3: the channel-binding types we support, so a client can pick one and tell a stripped
        # -PLUS from a server without channel binding.
        binding = SubElement(features, ns.SASL_CHANNEL_BINDING)
        for kind in key.bindings:
            SubElement(binding, ns.qname(ns.SASL_CB, "channel-binding"), {"type": kind})
    return features


Handler = Callable[[C2SConnection, Element], None]

# state -> {first-level element: the method that handles it}. What a state accepts is here and nowhere else;
# an element a state does not list is refused the same way everywhere (``_unexpected``): a stanza before the
# session exists is `not-authorized` (RFC 6120 §4.9.3.12), anything else `unsupported-stanza-type`
# (§4.9.3.20). A header is not an element: the parser reports it apart (``_dispatch``).
ACCEPTED: dict[State, dict[str, Handler]] = {
    State.WAIT_STREAM: {},
    State.WAIT_STARTTLS: {
        ns.STARTTLS: C2SConnection._on_starttls,  # RFC 6120 §5.4.2.1
        ns.AUTH: C2SConnection._on_auth,  # unless STARTTLS is required (then refused: encryption-required)
        ns.ABORT: C2SConnection._on_abort,
    },
    State.WAIT_TLS: {},
    State.WAIT_AUTH: {
        ns.AUTH: C2SConnection._on_auth,  # RFC 6120 §6.4.2
        ns.ABORT: C2SConnection._on_abort,  # RFC 6120 §6.4.4
        ns.STARTTLS: C2SConnection._on_starttls_refused,  # TLS is already on, or was not offered
    },
    State.SASL_CHALLENGE: {
        ns.RESPONSE: C2SConnection._on_response,  # RFC 6120 §6.4.3
        ns.ABORT: C2SConnection._on_abort,
    },
    State.SASL_PENDING: {},
    State.WAIT_BIND: {
        ns.IQ: C2SConnection._on_iq_before_bind,  # only <iq type='set'><bind/></iq> (RFC 6120 §7.6)
    },
    State.BIND_PENDING: {},
    State.SESSION: {
        ns.IQ: C2SConnection._on_iq,
        ns.MESSAGE: C2SConnection._on_routed,
        ns.PRESENCE: C2SConnection._on_routed,
    },
    State.CLOSED: {},
}

_SERVER_IQ: dict[tuple[str, str], Callable[[C2SConnection, Element, Element], None]] = {
    ("get", ns.qname(ns.PING, "ping")): C2SConnection._iq_ping,
    ("get", ns.qname(ns.DISCO_INFO, "query")): C2SConnection._iq_disco_info,
    ("set", ns.qname(ns.SESSION, "session")): C2SConnection._iq_session,
    ("set", ns.qname(ns.BIND, "bind")): C2SConnection._iq_bind_again,
}


def _version_ok(version: str | None) -> bool:
    """RFC 6120 §4.7.5: we speak 1.x; no version means pre-1.0, which we do not."""
    if not version:
        return False
    major, _, minor = version.partition(".")
    return major.isdigit() and minor.isdigit() and int(major) == 1


def settings_from_config(config: Any, listener: Any, framing: str = "stream") -> StreamSettings:
    """StreamSettings from ``xmppauth.config.Config`` and one listener (duck-typed: no import of Django)."""
    tls = getattr(listener, "tls", None)
    mode = getattr(tls, "mode", "none") if tls is not None else "none"
    # A listener without TLS options may still get a chain from a trusted proxy (transport.driver).
    client_certificates = tls is None or getattr(tls, "verify_mode", "peer") != "none"
    auth = config.auth
    served = auth.served_mechanisms  # what the configured auth methods serve (their registry)
    return StreamSettings(
        hosted_domains=tuple(config.hosts),
        tls_mode=mode if mode in TLS_MODES else "tls",
        sasl_mechanisms=tuple(auth.sasl_mechanisms),
        sasl_external=tuple(auth.sasl_external),
        cn_prefix=auth.common_name_prefix,
        cn_suffix=auth.common_name_suffix,
        max_stanza_size=getattr(listener, "max_stanza_size", 65536),
        framing=framing,
        client_certificates=client_certificates,
        password_auth=any(name != "external" for name in served),
        external_auth="external" in served,
        ping_interval=float(getattr(getattr(config, "options", None), "ping_interval_seconds", 0) or 0),
    )
