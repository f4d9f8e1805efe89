"""Server-side TLS for every listener: a pyOpenSSL context that asks for a client certificate (DESIGN §3).

Specs: RFC 8446 §4.3.2 / RFC 5246 §7.4.4 (CertificateRequest, certificate_authorities), RFC 6120 §5 and §13.8
(TLS 1.2+), XEP-0178 (the client certificate carries the identity), XEP-0368 (direct TLS).

Who decides. The handshake asks for a certificate and advertises our trust anchors; the verify callback
records what OpenSSL thought of the chain. Whether a certificate lets anyone in is decided after the handshake
by our own verification (``certauth``), on every connection. The handshake only ever *refuses*, and only
when ``disconnect_on_failure`` is true, which mirrors MongooseIM's ``just_tls``:

- ``verify_mode = "none"``: no client certificate is requested (no CertificateRequest, as MongooseIM), so
  the connection never carries one and SASL EXTERNAL is never offered on the listener (DESIGN §0).
- ``peer`` / ``selfsigned_peer`` with ``disconnect_on_failure = true``: no certificate, or one OpenSSL cannot
  chain to a trust anchor (``selfsigned_peer`` forgives only "self-signed leaf"), fails the handshake with a
  TLS alert; a certificate that OpenSSL accepts but our verification refuses (e.g. revoked) is cut right
  after the handshake (``transport.tls.policy.must_disconnect``, applied by ``transport.driver``).
- ``disconnect_on_failure = false``: the handshake always completes; an invalid certificate counts as none.

A handshake we refuse (a fatal alert we send before it completes) never reaches a session driver, so it is
recorded here as an ``AuthEvent`` (issue 18 §3: ``certauth.authenticator.record_handshake_refusal``, in a
thread, capped per address), with the leaf the verify callback saw, if any.

Session resumption (issue 17 §4). A returning client skips the full handshake with a stateless ticket (TLS
1.3 tickets, RFC 8446 §4.6.1; TLS 1.2 tickets, RFC 5077): the session travels with the client, encrypted
under this context's own ticket key, and the server keeps nothing per session (issue 17 §5: a cached session
with the client's certificate cost about 7 KiB per session, bench/RESULTS.md stop 26). A ticket restores the
client's leaf but not the intermediates it sent, so :func:`peer_chain` puts back, for a resumed session, the
CA certificates this process verified above that leaf before (``certauth.verify.known_intermediates``:
candidates for path building, never trust). What resumption never skips is our own decision: OpenSSL does
not run the verify callback on a resumed session, but the driver verifies the restored chain, its revocation
and the account on every connection exactly as after a full handshake, so a certificate revoked since the
full handshake is refused on its next resumption. The ticket key belongs to one context: a listener whose
trust anchors change gets a new context (``ServerTls.update_trust_anchors``) and every client a full
handshake; one process does not resume another's sessions, nor its own from before a restart. A ticket is
good for ``RESUMPTION_LIFETIME``; a session stays resumable however its connection ended (a phone that
changed networks resumes), which RFC 8446 allows and RFC 5246 §7.2.2 asks only after a fatal alert.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from certauth.verify import VERIFY_MODES, known_intermediates
from transport.tls.policy import requests_certificate, requires_certificate
from transport.tls.records import ALERT_NAMES, FATAL, SUITES
from xmppauth.config import TlsOptions

logger = logging.getLogger(__name__)


# OpenSSL x509_vfy.h codes we name in logs; any other code is logged by number.
X509_V_ERR_NAMES: dict[int, str] = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
    79: "invalid or inconsistent certificate extension",
}
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18

# How long a session may be resumed (RFC 8446 §4.6.1 ticket_lifetime; OpenSSL's default). A resumed login is
# verified in full, so this bounds how long a ticket works, not how stale a decision can be.
RESUMPTION_LIFETIME = 7200
# The session ID context (RFC 5246 §7.4.1.2, OpenSSL's sid_ctx): required by OpenSSL to resume a session that
# carries a client certificate; each context has its own ticket key, so one constant is enough.
SESSION_ID_CONTEXT = b"xmppauth-c2s"


class TlsConfigError(Exception):
    """The TLS files of a listener cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class VerifyError:
    """One complaint of OpenSSL's chain verification, as the verify callback saw it."""

    depth: int
    code: int
    subject: str

    @property
    def reason(self) -> str:
        return X509_V_ERR_NAMES.get(self.code, f"X509_V_ERR {self.code}")

    def __str__(self) -> str:
        return f"depth {self.depth} ({self.subject}): {self.reason}"


@dataclass
class PeerTlsState:
    """Per-connection state the verify callback fills (see :func:`peer_state`)."""

    errors: list[VerifyError] = field(default_factory=list)
    leaf: crypto.X509 | None = None  # the client's certificate, as the verify callback saw it (depth 0)
    peer: str | None = None  # "host:port" of the client (ServerTls.connection_for: the c2s adapter)
    protocol: Any = None  # else Twisted's TLS protocol of the connection, asked for its peer when needed
    refused: Any = None  # ServerTls's report of a refused handshake, called at most once
    # TLS 1.3 application traffic secrets ("client", "server"), for a connection whose records are handed over
    # to transport.tls.records after the handshake (issue 17 §5); filled only on contexts that hand over.
    traffic_secrets: dict[str, bytes] = field(default_factory=dict, repr=False)


# Twisted's TLSMemoryBIOFactory (the HTTP listeners) replaces a connection's app data with its protocol after
# serverConnectionForTLS, so the state is kept here, by connection, for as long as the connection lives.
_peer_states: weakref.WeakKeyDictionary[SSL.Connection, PeerTlsState] = weakref.WeakKeyDictionary()


def peer_state(connection: SSL.Connection) -> PeerTlsState | None:
    """The verify callback's record for ``connection`` (a bare connection may carry it as app data)."""
    state = _peer_states.get(connection)
    if state is None:
        app_data = connection.get_app_data()
        state = app_data if isinstance(app_data, PeerTlsState) else None
    return state


def with_default_credentials(options: TlsOptions, certfile: Path, keyfile: Path) -> TlsOptions:
    """``options`` with the bootstrap's server certificate when the listener names none."""
    if options.certfile:
        return options
    if not certfile.is_file() or not keyfile.is_file():
        raise TlsConfigError(
            f"the listener has no tls.certfile and the default server certificate {certfile} / {keyfile} "
            "does not exist: run `manage.py bootstrap` or set tls.certfile and tls.keyfile"
        )
    return replace(options, certfile=str(certfile), keyfile=str(keyfile))


def _subject(cert: crypto.X509) -> str:
    try:
        return cert.to_cryptography().subject.rfc4514_string()
    except Exception:  # a malformed name must not break the handshake's bookkeeping
        return "<unreadable subject>"


def _make_verify_callback(options: TlsOptions):
    """The verify callback: record every error; refuse only when the config says the handshake must."""
    decide = requires_certificate(options)
    forgive_self_signed = VERIFY_MODES[options.verify_mode].accepts_self_signed

    def callback(conn: SSL.Connection, cert: crypto.X509, code: int, depth: int, ok: int) -> bool:
        state = peer_state(conn)
        if depth == 0 and state is not None:
            state.leaf = cert
        if not ok and state is not None:
            state.errors.append(VerifyError(depth=depth, code=code, subject=_subject(cert)))
        if ok or not decide:
            return True
        # MongooseIM selfsigned_peer: a self-signed leaf is forgiven, nothing else is.
        return forgive_self_signed and depth == 0 and code == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT

    return callback


def build_context(
    options: TlsOptions, trust_anchors: list[x509.Certificate], *, hand_over_records: bool = False
) -> SSL.Context:
    """A server context for one listener: TLS 1.2+, our certificate, a client-certificate request (none
    with ``verify_mode = "none"``). ``hand_over_records``: keep each connection's TLS 1.3 application
    traffic secrets, so that its records can be protected without OpenSSL after the handshake
    (:func:`record_keys`)."""
    if options.verify_mode not in VERIFY_MODES:
        raise TlsConfigError(
            f"tls.verify_mode = {options.verify_mode!r}; accepted values: {', '.join(VERIFY_MODES)}"
        )
    if not options.certfile:
        raise TlsConfigError("tls.certfile is not set")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)  # RFC 8996 retires TLS 1.0/1.1
    ctx.set_options(
        SSL.OP_NO_COMPRESSION  # CRIME; RFC 7525 §3.3
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_RENEGOTIATION
    )
    # Resumption by stateless tickets only, verified in full anyway; no session kept here (module doc).
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_session_id(SESSION_ID_CONTEXT)
    ctx.set_timeout(RESUMPTION_LIFETIME)
    # An idle connection gives its read and write buffers back (~24 KiB per idle session, bench/RESULTS.md).
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if hand_over_records:
        ctx.set_keylog_callback(_keep_traffic_secret)
    try:
        ctx.use_certificate_chain_file(options.certfile)
        ctx.use_privatekey_file(options.keyfile or options.certfile)
        ctx.check_privatekey()
    except (SSL.Error, OSError) as exc:
        raise TlsConfigError(
            f"tls.certfile {options.certfile} / tls.keyfile {options.keyfile or options.certfile}: "
            f"cannot load the server certificate and key ({exc})"
        ) from exc

    if not requests_certificate(options):
        # RFC 8446 §4.3.2 / RFC 5246 §7.4.4: a server that sends no CertificateRequest gets no certificate.
        ctx.set_verify(SSL.VERIFY_NONE)
        return ctx
    store = ctx.get_cert_store()
    assert store is not None
    # Any configured CA is a trust anchor, root or not, as in cryptography's verifier.
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    for anchor in trust_anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
        ctx.add_client_ca(anchor)  # RFC 8446 §4.2.4: certificate_authorities tell clients which cert to pick

    mode = SSL.VERIFY_PEER
    if requires_certificate(options):
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.set_info_callback(_alert_sent)  # the handshake may refuse: record when it does
    ctx.set_verify(mode, _make_verify_callback(options))
    ctx.set_verify_depth(10)
    return ctx


# RFC 8446 §6 / RFC 5246 §7.2: the alerts that refuse a client certificate (or its absence). Any other fatal
# alert (a probe that connects and closes: decode_error; no common cipher) is not a login attempt.
CERTIFICATE_ALERTS: dict[int, str] = {
    code: ALERT_NAMES[code]
    for code in (42, 43, 44, 45, 46, 48, 116)  # bad_certificate ... certificate_required
}


def _alert_sent(conn: SSL.Connection, where: int, value: int) -> None:
    """OpenSSL's info callback: a fatal alert we write before the handshake completed is a refusal."""
    if where & SSL.SSL_CB_HANDSHAKE_DONE:
        state = peer_state(conn)
        if state is not None:
            state.refused = None  # later alerts end a connection, not a handshake (the driver's business)
        return
    if where & SSL.SSL_CB_WRITE_ALERT != SSL.SSL_CB_WRITE_ALERT or value >> 8 != FATAL:
        return
    state = peer_state(conn)
    alert = CERTIFICATE_ALERTS.get(value & 0xFF)
    if state is None or state.refused is None or alert is None:
        return
    report, state.refused = state.refused, None  # once per connection
    if state.errors:
        alert = f"{alert} ({'; '.join(str(error) for error in state.errors)})"
    try:
        report(state, alert)
    except Exception:  # bookkeeping must never break OpenSSL's handshake
        logger.exception("cannot report a refused TLS handshake")


# == handing a TLS 1.3 connection's records over to transport.tls.records (issue 17 §5) ======================

# RFC 8446 §7.1: the application traffic secrets, as OpenSSL's key log names them (NSS key log format).
_TRAFFIC_SECRETS = {b"CLIENT_TRAFFIC_SECRET_0": "client", b"SERVER_TRAFFIC_SECRET_0": "server"}


def _keep_traffic_secret(conn: SSL.Connection, line: bytes) -> None:
    """OpenSSL's key log callback: keep the two application traffic secrets in the connection's state.
    Never logged; the handshake and exporter secrets are not kept."""
    label, _, rest = line.partition(b" ")
    name = _TRAFFIC_SECRETS.get(label)
    state = peer_state(conn) if name is not None else None
    if state is not None and name is not None:
        state.traffic_secrets[name] = bytes.fromhex(rest.partition(b" ")[2].decode("ascii"))


@dataclass(frozen=True, repr=False)
class RecordKeys:
    """What a handshake OpenSSL finished leaves for :class:`transport.tls.records.RecordLayer`."""

    suite: str
    client_secret: bytes
    server_secret: bytes


def record_keys(connection: SSL.Connection) -> RecordKeys | None:
    """The suite and traffic secrets of a finished TLS 1.3 handshake whose records we can protect ourselves
    (taken out of the connection's state: asked once); None when OpenSSL must keep the connection (TLS 1.2, a
    suite :mod:`transport.tls.records` does not have, a context that does not hand over)."""
    state = peer_state(connection)
    if state is None:
        return None
    secrets, state.traffic_secrets = state.traffic_secrets, {}
    suite = connection.get_cipher_name()
    if connection.get_protocol_version_name() != "TLSv1.3" or suite not in SUITES:
        return None
    if "client" not in secrets or "server" not in secrets:
        return None
    return RecordKeys(suite, secrets["client"], secrets["server"])


def unread_input(connection: SSL.Connection) -> bytes:
    """Take back what was written into the connection's input BIO and OpenSSL has not read: after the
    handshake, the client's first records, which OpenSSL (reading one record at a time from a memory BIO,
    without read-ahead) leaves there once its Finished is read."""
    from OpenSSL._util import ffi, lib  # no public wrapper: pyOpenSSL reads only the output BIO

    into = connection._into_ssl  # noqa: SLF001
    pending = lib.BIO_get_mem_data(into, ffi.new("char **"))
    if pending <= 0:
        return b""
    buffer = ffi.new("char[]", pending)
    taken = lib.BIO_read(into, buffer, pending)
    return ffi.buffer(buffer, max(taken, 0))[:]


def let_go_keeping_session(connection: SSL.Connection) -> None:
    """Before a handed-over connection's ``SSL`` is freed: mark it shut down, so that a context with a session
    cache keeps its session (``SSL_free`` drops the session of a connection that was not). Ours run without
    one (stateless tickets), but the hand-over must not depend on that."""
    connection.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTls:
    """One listener's TLS: holds the context (rebuilt when the trust anchors change) and makes connections.

    The c2s adapter (``transport.tcp.protocol``) calls :meth:`connection_for` for each connection it drives;
    Twisted calls :meth:`serverConnectionForTLS` for each of the HTTP endpoint's (``transport.http``).
    """

    def __init__(
        self, options: TlsOptions, trust_anchors: list[x509.Certificate], *, transport: str = "https"
    ) -> None:
        """``transport``: the name of the listener's connections in auth events (tcp, tls, https)."""
        self.options = options
        self.transport = transport
        self.update_trust_anchors(trust_anchors)

    def update_trust_anchors(self, trust_anchors: list[x509.Certificate]) -> None:
        """New connections use the new anchors; live ones keep theirs."""
        # The c2s adapter (transport.tcp.tls) hands TLS 1.3 records over after the handshake; Twisted (https)
        # keeps OpenSSL's.
        self.context = build_context(self.options, trust_anchors, hand_over_records=self.transport != "https")
        self.anchor_fingerprints = {a.fingerprint(hashes.SHA256()).hex() for a in trust_anchors}

    def connection_for(self, peer: str) -> SSL.Connection:
        """A server connection over memory BIOs for the client at ``peer`` ("host:port", the name a refused
        handshake is recorded under)."""
        return self._connection(PeerTlsState(peer=peer, refused=self._handshake_refused))

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802 (Twisted's name)
        return self._connection(PeerTlsState(protocol=tlsProtocol, refused=self._handshake_refused))

    def _connection(self, state: PeerTlsState) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        _peer_states[connection] = state
        connection.set_app_data(state)  # for callers that drive the connection themselves (tests)
        return connection

    def _handshake_refused(self, state: PeerTlsState, alert: str) -> None:
        """Record the refusal off the reactor thread (issue 18 §3); the log line says it at once."""
        from twisted.internet import reactor

        from certauth.authenticator import record_handshake_refusal  # Django models: at run time
        from transport.workers import defer_to_worker
        from xmppauth.dbconn import with_fresh_connections

        peer = state.peer
        if peer is None:
            address = state.protocol.getPeer() if state.protocol is not None else None
            peer = f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
        leaf = state.leaf.to_cryptography() if state.leaf is not None else None
        logger.info("%s %s: TLS handshake refused: %s", self.transport, peer, alert)
        deferred = defer_to_worker(
            reactor, with_fresh_connections, record_handshake_refusal, self.transport, peer, leaf, alert
        )
        deferred.addErrback(lambda failure: logger.error("recording a refused handshake failed: %s", failure))

    def getContext(self) -> SSL.Context:  # noqa: N802 (IOpenSSLContextFactory, for old-style callers)
        return self.context


def release_bio_buffers(connection: SSL.Connection) -> bool:
    """Swap the connection's two memory BIOs for new, empty ones, when both are empty (issue 17 §5).

    A memory BIO never gives back the buffer it grew to, so after the handshake (the server's certificate
    flight, the client's certificate and Finished) each connection keeps about 5 KiB that an idle session
    never uses again. ``SSL_set_bio`` frees the old pair. Only when both hold no byte: what the client sent
    and OpenSSL has not read, or what OpenSSL wrote and the adapter has not sent, would be lost. False
    (nothing changed) when one is not empty or the connection has no memory BIOs (pyOpenSSL exposes no API
    for this; ``_into_ssl`` / ``_from_ssl`` are the BIOs its ``bio_write`` / ``bio_read`` use)."""
    from OpenSSL._util import ffi, lib  # no public wrapper: see the docstring

    into, out = getattr(connection, "_into_ssl", None), getattr(connection, "_from_ssl", None)
    if into is None or out is None or into == ffi.NULL or out == ffi.NULL:
        return False
    data = ffi.new("char **")
    if lib.BIO_get_mem_data(into, data) != 0 or lib.BIO_get_mem_data(out, data) != 0:
        return False
    new_into, new_out = lib.BIO_new(lib.BIO_s_mem()), lib.BIO_new(lib.BIO_s_mem())
    if new_into == ffi.NULL or new_out == ffi.NULL:
        for bio in (new_into, new_out):
            if bio != ffi.NULL:
                lib.BIO_free(bio)
        return False
    lib.SSL_set_bio(connection._ssl, new_into, new_out)  # frees the old pair  # noqa: SLF001
    connection._into_ssl, connection._from_ssl = new_into, new_out  # noqa: SLF001
    return True


def session_resumed(connection: SSL.Connection) -> bool:
    """Whether this connection resumed an earlier session (an abbreviated handshake, RFC 8446 §2.2)."""
    from OpenSSL._util import lib  # pyOpenSSL exposes no wrapper for SSL_session_reused

    return bool(lib.SSL_session_reused(connection._ssl) == 1)  # noqa: SLF001


def peer_chain(connection: SSL.Connection) -> list[x509.Certificate]:
    """The chain the client sent, leaf first, as cryptography certificates (empty when it sent none).

    On the server side OpenSSL's ``SSL_get_peer_cert_chain`` leaves the leaf out (it holds only what the
    client sent after it), so the leaf comes from ``get_peer_certificate`` and the rest is appended. A
    resumed session has the leaf only: the rest is what this process verified above it before.
    """
    leaf = connection.get_peer_certificate(as_cryptography=True)
    if leaf is None:
        return []
    rest = list(connection.get_peer_cert_chain(as_cryptography=True) or [])
    if rest and rest[0] == leaf:  # the client side of a connection, where OpenSSL includes the leaf
        rest = rest[1:]
    if not rest and session_resumed(connection):  # a ticket brings back the leaf alone (module doc)
        rest = known_intermediates.above(leaf)
    return [leaf, *rest]


def verify_errors(connection: SSL.Connection) -> tuple[VerifyError, ...]:
    """What the verify callback recorded for this connection."""
    state = peer_state(connection)
    return tuple(state.errors) if state is not None else ()


# == channel bindings for SCRAM -PLUS (issue 14) ===========================================================

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 §2


def channel_bindings(connection: SSL.Connection) -> dict[str, bytes]:
    """The channel-binding types this TLS connection supports, with their data (RFC 5802 §6).

    - ``tls-exporter`` (RFC 9266 §2): 32 bytes of exported keying material, no context; TLS 1.3 only
      (RFC 9266 §3 leaves TLS 1.2 to ``tls-unique``).
    - ``tls-unique`` (RFC 5929 §3.1): the first Finished message of the latest handshake: the client's in a
      full handshake, ours in a resumed one (the server sends its Finished first there); TLS 1.2 only, and
      only with the extended master secret (RFC 7627), which closes the triple handshake attack that
      otherwise breaks it (a resumed session keeps the flag of the handshake that made it, §5.3).
    - ``tls-server-end-point`` (RFC 5929 §4.1): our certificate hashed with its signature's hash (SHA-256
      for MD5 and SHA-1); none for a certificate whose signature has no separate hash (Ed25519).
    """
    bindings: dict[str, bytes] = {}
    version = connection.get_protocol_version_name()
    if version == "TLSv1.3":
        bindings["tls-exporter"] = connection.export_keying_material(EXPORTER_LABEL, 32)
    elif version == "TLSv1.2" and _extended_master_secret(connection):
        # RFC 5929 §3.1: the first Finished sent; in a resumed handshake the server's (ours) comes first.
        resumed = session_resumed(connection)
        finished = connection.get_finished() if resumed else connection.get_peer_finished()
        if finished:
            bindings["tls-unique"] = finished
    end_point = _server_end_point(connection)
    if end_point is not None:
        bindings["tls-server-end-point"] = end_point
    return bindings


# tls-server-end-point by context: a context's certificate is loaded once (build_context) and every
# connection of the context presents it, so its hash is worked out once, not at every login.
_end_points: weakref.WeakKeyDictionary[SSL.Context, bytes | None] = weakref.WeakKeyDictionary()


def _server_end_point(connection: SSL.Connection) -> bytes | None:
    """RFC 5929 §4.1: our certificate hashed with its signature's hash (SHA-256 for MD5 and SHA-1)."""
    context = connection.get_context()
    if context in _end_points:
        return _end_points[context]
    own = connection.get_certificate()
    end_point = None
    if own is not None:
        certificate = own.to_cryptography()
        algorithm = certificate.signature_hash_algorithm
        if algorithm is not None:
            if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
                algorithm = hashes.SHA256()
            digest = hashes.Hash(algorithm)
            digest.update(certificate.public_bytes(Encoding.DER))
            end_point = digest.finalize()
        _end_points[context] = end_point  # a connection without a certificate yet (none) is not kept
    return end_point


def _extended_master_secret(connection: SSL.Connection) -> bool:
    from OpenSSL._util import lib  # pyOpenSSL exposes no wrapper for SSL_get_extms_support

    return bool(lib.SSL_get_extms_support(connection._ssl) == 1)
