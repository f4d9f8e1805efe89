"""What adapters hand to the protocol core: the certificate check at TLS time and SASL EXTERNAL at auth time.

Specs: RFC 6120 §6.4 and §6.5 (SASL EXTERNAL outcome and failure conditions), XEP-0178 §3 (certificate →
JID, in ``certauth.identity``), RFC 5280 §6 (``certauth.verify``), DESIGN §4 and §5.

Per connection: ``CertificateAuthenticator(config, listener_tls, transport, peer)``.

1. :meth:`~CertificateAuthenticator.check_certificate` right after the handshake: chain verification against
   the listener's trust store, then revocation. Its :class:`CertCheck` tells the core whether EXTERNAL may be
   offered (:meth:`~CertificateAuthenticator.external_available`).
2. :meth:`~CertificateAuthenticator.authenticate_external` when the client sends EXTERNAL: revocation again
   (it may have changed since the handshake), the identity rules, the domain limits of the CAs on the
   verified path (``certauth.trust.domain_refusal``), then the auth methods in order.

Every attempt writes an ``AuthEvent`` and a log line with the human reason; so does a certificate refused at
the handshake. ``AuthEvent.jid_requested`` is the authzid, or when the client sent none, the JID the identity
rules derived from the certificate (empty when they derived none).

The calls touch the database and may block (``http`` method): from async code, run them in a thread
(``asgiref.sync.sync_to_async``). The core itself stays free of Django: it sees only this interface.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accounts.models import Domain
from certauth import pki
from certauth.authmethods import AuthMethod, ExternalAttempt, build_methods, run_methods, supports_external
from certauth.identity import NOT_AUTHORIZED, resolve_identity
from certauth.models import AuthEvent
from certauth.pki import CertFacts
from certauth.revocation import revocation_problem
from certauth.trust import domain_refusal, trust_anchors
from certauth.verify import verify_client_chain
from transport.stream.auth import AuthResult  # the core's verdict: we implement its Authenticator
from xmppauth import fastsql
from xmppauth.config import Config, TlsOptions

logger = logging.getLogger(__name__)

REASON_NO_TLS = "no TLS on this listener"
REASON_NO_CHECKED_CERT = "no verified client certificate on this connection"
REASON_NO_EXTERNAL = "SASL EXTERNAL is not enabled (auth.sasl_mechanisms)"

_ensured_hosts: set[str] = set()
_ensured_lock = threading.Lock()


@dataclass(frozen=True)
class CertCheck:
    """The handshake-time decision: ``verified`` means chain and revocation passed."""

    facts: CertFacts | None
    verified: bool
    reason: str


@dataclass(frozen=True)
class _Checked:
    facts: CertFacts
    der: bytes
    issuer_ca_id: int | None
    ca_fingerprints: tuple[str, ...] = ()  # the CAs on the verified path, leaf excluded, anchor last


def _as_certificates(chain: Sequence[bytes | x509.Certificate]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for item in chain:
        if isinstance(item, x509.Certificate):
            certs.append(item)
        else:
            certs.extend(pki.load_certificates(bytes(item)))  # DER, or PEM with one or more certificates
    return certs


def ensure_config_domains(hosts: Iterable[str]) -> None:
    """Make sure a ``Domain`` row exists for each configured host (once per process and host)."""
    missing = [host.lower() for host in hosts if host.lower() not in _ensured_hosts]
    if not missing:
        return
    for host in missing:
        Domain.objects.get_or_create(name=host)
    with _ensured_lock:
        _ensured_hosts.update(missing)


def hosted_domains(config: Config) -> set[str]:
    """The config's hosts plus the enabled ``Domain`` rows (the admin may add domains at run time), minus
    the rows an admin disabled: a disabled row refuses logins for its host even when the config lists it."""
    ensure_config_domains(config.hosts)
    sql = fastsql.statement(
        "authenticator.domain_rows",
        lambda: (
            f"SELECT {fastsql.column(Domain, 'name')}, {fastsql.column(Domain, 'enabled')}"
            f" FROM {fastsql.table(Domain)}"
        ),
    )
    rows = fastsql.fetch_all(sql, [])
    disabled = {name for name, enabled in rows if not enabled}
    enabled = {name for name, enabled in rows if enabled}
    return (enabled | {host.lower() for host in config.hosts}) - disabled


def _clip(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CertificateAuthenticator:
    """Certificate decisions for one client connection (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        listener_tls: TlsOptions | None,
        transport: str,
        peer: str,
        *,
        methods: Sequence[AuthMethod] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.listener_tls = listener_tls
        self.transport = transport
        self.peer = peer
        self.methods = list(methods) if methods is not None else build_methods(config.auth)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._checked: _Checked | None = None

    # --- TLS time ---------------------------------------------------------------------------------------

    def check_certificate(self, chain: Sequence[bytes | x509.Certificate]) -> CertCheck:
        """Verify the client's chain (leaf first, DER/PEM bytes or certificates) and its revocation status."""
        self._checked = None
        try:
            certs = _as_certificates(chain)
            facts = pki.cert_facts(certs[0]) if certs else None  # ValueError: e.g. a duplicate extension
        except ValueError as exc:
            reason = f"client certificate cannot be parsed: {exc}"
            self._record(None, None, None, None, reason)
            return CertCheck(None, False, reason)
        if not certs or facts is None:
            return CertCheck(None, False, "no client certificate presented")
        if self.listener_tls is None:
            return CertCheck(facts, False, REASON_NO_TLS)
        anchors = trust_anchors(self.listener_tls.cacertfile)
        verdict = verify_client_chain(
            certs,
            anchors.store if anchors.store is not None else [],
            mode=self.listener_tls.verify_mode,
            now=self._clock(),
        )
        if not verdict.ok:
            reason = f"certificate refused: {verdict.reason}"
            self._record(facts, None, None, None, reason)
            return CertCheck(facts, False, verdict.reason)
        issuer_ca_id = anchors.ca_row_id(verdict.issuer_ca)
        revoked = self._revocation(facts, issuer_ca_id)
        if revoked:
            self._record(facts, None, None, None, f"certificate refused: {revoked}")
            return CertCheck(facts, False, revoked)
        path_cas = tuple(pki.fingerprint_sha256(cert) for cert in verdict.chain[1:])
        self._checked = _Checked(facts, certs[0].public_bytes(Encoding.DER), issuer_ca_id, path_cas)
        logger.debug("client certificate %s from %s accepted: %s", facts.subject, self.peer, verdict.reason)
        return CertCheck(facts, True, verdict.reason)

    def _revocation(self, facts: CertFacts, issuer_ca_id: int | None) -> str | None:
        """DESIGN §5: revoked or held, or the issuer's CRL too old (fail closed); never cached."""
        options = self.config.options
        return revocation_problem(
            facts,
            issuer_ca_id,
            now=self._clock(),
            grace=timedelta(seconds=options.crl_grace_seconds),
            fail_open=options.crl_fail_open,
        )

    @property
    def issuer_ca_id(self) -> int | None:
        """The ``CertificateAuthority`` row that issued the checked certificate (None: none, or not a row)."""
        return self._checked.issuer_ca_id if self._checked is not None else None

    def external_available(self) -> bool:
        """Whether to offer EXTERNAL (DESIGN §4): enabled, served by a method, and a certificate passed."""
        return (
            self._checked is not None
            and "external" in self.config.auth.sasl_mechanisms
            and supports_external(self.methods)
        )

    # --- SASL time --------------------------------------------------------------------------------------

    def authenticate_external(self, facts: CertFacts | None, authzid: str | None, domain: str) -> AuthResult:
        """SASL EXTERNAL for the certificate checked at the handshake; ``authzid`` None when none was sent."""
        checked = self._checked
        if "external" not in self.config.auth.sasl_mechanisms:
            return self._refuse(facts, authzid, NOT_AUTHORIZED, REASON_NO_EXTERNAL)
        if checked is None or facts is None or facts.fingerprint_sha256 != checked.facts.fingerprint_sha256:
            return self._refuse(facts, authzid, NOT_AUTHORIZED, REASON_NO_CHECKED_CERT)
        facts = checked.facts
        revoked = self._revocation(facts, checked.issuer_ca_id)  # it may have changed since the handshake
        if revoked:
            return self._refuse(facts, authzid, NOT_AUTHORIZED, f"certificate {revoked}")
        auth = self.config.auth
        decision = resolve_identity(
            facts,
            authzid,
            domain,
            hosted_domains(self.config),
            auth.sasl_external,
            auth.common_name_prefix,
            auth.common_name_suffix,
        )
        if decision.jid is None:
            return self._refuse(facts, authzid, decision.condition or NOT_AUTHORIZED, decision.reason)
        limited = self._domain_refusal(checked, decision.jid)
        if limited:  # before the methods: `pki` would create the account
            return self._refuse(facts, authzid, NOT_AUTHORIZED, limited, jid=decision.jid)
        verdict = run_methods(self.methods, ExternalAttempt(decision.jid, facts, checked.der))
        if not verdict.accepted:
            return self._refuse(facts, authzid, NOT_AUTHORIZED, verdict.reason, jid=decision.jid)
        self._record(facts, authzid, decision.jid, None, verdict.reason, jid_tried=decision.jid)
        logger.info(
            "SASL EXTERNAL success: %s as %s via %s from %s (%s)",
            facts.subject, decision.jid, self.transport, self.peer, verdict.reason,
        )
        return AuthResult(jid=decision.jid, reason=verdict.reason)

    def _domain_refusal(self, checked: _Checked, jid: str) -> str | None:
        """Issue 11 point 10: every CA on the path limited to some domains must allow the JID's domain.

        The limits are read from the cached anchors now, not at the handshake, so a CA narrowed in the
        admin meanwhile applies (within ``certauth.trust.CACHE_TTL`` across processes); no query per login.
        """
        if not checked.ca_fingerprints or self.listener_tls is None:
            return None  # no CA vouched (verify_mode none, or a self-signed certificate)
        anchors = trust_anchors(self.listener_tls.cacertfile)
        limits = anchors.limits_on_path(checked.ca_fingerprints, self.listener_tls.cacert_domains)
        return domain_refusal(limits, jid.rpartition("@")[2])  # the JID is bare and normalised

    # --- the event log ----------------------------------------------------------------------------------

    def _refuse(
        self,
        facts: CertFacts | None,
        authzid: str | None,
        condition: str,
        reason: str,
        jid: str | None = None,
    ) -> AuthResult:
        self._record(facts, authzid, None, condition, reason, jid_tried=jid)
        logger.info(
            "SASL EXTERNAL failure (%s) for %s via %s from %s: %s",
            condition, facts.subject if facts else "no certificate", self.transport, self.peer, reason,
        )
        return AuthResult.refuse(condition, reason)

    def _record(
        self,
        facts: CertFacts | None,
        authzid: str | None,
        granted: str | None,
        condition: str | None,
        reason: str,
        *,
        jid_tried: str | None = None,
    ) -> None:
        success = granted is not None
        if not success and condition is None:
            logger.info("client certificate from %s via %s refused: %s", self.peer, self.transport, reason)
        fastsql.insert_row(  # at every login: no ORM query to build (xmppauth.fastsql)
            AuthEvent,
            transport=_clip(self.transport, 16),
            peer=_clip(self.peer, 100),
            cert_fingerprint=facts.fingerprint_sha256 if facts else "",
            cert_subject=_clip(facts.subject if facts else "", 1000),
            jid_requested=_clip(authzid or jid_tried or "", 3071),
            jid_granted=_clip(granted or "", 3071),
            outcome=AuthEvent.Outcome.SUCCESS if success else AuthEvent.Outcome.FAILURE,
            condition=_clip(condition or "", 64),
            reason=_clip(reason, 1000),
        )
