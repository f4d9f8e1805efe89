"""What adapters hand to the protocol core: the certificate check at TLS time and SASL EXTERNAL at auth time.

Specs: RFC 6120 §6.4 and §6.5 (SASL EXTERNAL outcome and failure conditions), XEP-0178 §3 (certificate →
JID, in ``certauth.identity``), RFC 5280 §6 (``certauth.verify``), DESIGN §4 and §5.

Per connection: ``CertificateAuthenticator(config, listener_tls, transport, peer)``.

1. :meth:`~CertificateAuthenticator.check_certificate` right after the handshake: chain verification against
   the listener's trust store, then revocation. Its :class:`CertCheck` tells the core whether the
   certificate passed; which mechanisms are offered is the core's one decision
   (``transport.xmpp.mechanisms.offered_mechanisms``).
2. :meth:`~CertificateAuthenticator.authenticate_external` when the client sends EXTERNAL: revocation again
   (it may have changed since the handshake), the identity rules, the domain limits of the CAs on the
   verified path (``certauth.trust.domain_refusal``), for a self-signed certificate (``selfsigned_peer``)
   its pin (``certauth.pins``), then the auth methods in order, and last the pin at first use.
3. :meth:`~CertificateAuthenticator.refusal_at_bind` when the client binds a resource, after the session is
   in the live registry (``transport.sessions.registry.bind_session``): the certificate's expiry and
   revocation (the whole
   path) and the account's active flag once more, so that nothing that changed since SASL success reaches a
   session.

Every attempt writes an ``AuthEvent`` and a log line with the human reason; so does a certificate refused at
the handshake, and (through :meth:`~CertificateAuthenticator.record_refusal`, called by ``transport.driver``)
a refusal the core decided by itself and a connection that presented no certificate and never logged in.
Refusals are capped per source address (``_record_refusal``). The rows are group-committed
(``xmppauth.groupcommit``): each call returns once its row is durable, and a success whose row could not be
committed becomes ``temporary-auth-failure`` (issue 17 §2). A refusal about the client's own certificate
carries ``user_text`` for the client (``certauth.userstatus``, issue 18 §5).

``AuthEvent.jid_requested`` is the authzid, or when the client sent none, the JID the identity rules derived
from the certificate (empty when they derived none).

The calls touch the database and may block (``http`` method): from async code, run them in a thread
(``transport.workers``). The core itself stays free of Django: it sees only this interface.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.core.exceptions import SynchronousOnlyOperation
from django.utils import timezone

from accounts import changefeed, domains
from certauth import learning, pins, pki
from certauth.authmethods import (
    AuthMethod,
    ExternalAttempt,
    account_is_active,
    build_methods,
    refuse_inactive,
    run_methods,
)
from certauth.identity import NOT_AUTHORIZED, resolve_identity
from certauth.models import AuthEvent
from certauth.pki import CertFacts
from certauth.revocation import PathLink, path_revocation_problem
from certauth.trust import TrustAnchors, domain_refusal, trust_anchors
from certauth.userstatus import user_text
from certauth.verify import NotVerifiedBefore, verify_client_chain
from transport.xmpp.decisions import IdentityDecision  # the one verdict type, shared with the core
from transport.xmpp.errors import SASL_TEMPORARY_AUTH_FAILURE
from xmppauth import groupcommit, limits, metrics
from xmppauth.config import Config, TlsOptions
from xmppauth.outage import DATABASE_UNAVAILABLE, OutageLog

logger = logging.getLogger(__name__)

REASON_NO_TLS = "no TLS on this listener"
REASON_NO_CHECKED_CERT = "no verified client certificate on this connection"
REASON_NO_EXTERNAL = "SASL EXTERNAL is not enabled (auth.sasl_mechanisms)"
REASON_DATABASE_DOWN = "the database is unavailable; try again later"
# The database could not be asked at the handshake (trust anchors, revocation): EXTERNAL is offered, and the
# whole check runs again when the client sends it; until the database answers, temporary-auth-failure.
REASON_DEFERRED = "not checked yet: the database was unavailable at the handshake, checked again at SASL time"

database = OutageLog(logger, "database (logins)")  # one line when it fails, one when it answers again

# Stream error conditions for a bind refused (RFC 6120 §4.9.3). A certificate expired, revoked or held (or
# whose revocation status became unknown) since the handshake: ``reset``, "the keys or certificates used to
# establish a secure context for the stream have expired or have been revoked" (§4.9.3.16; §13.7.2.3), as
# for a live session. An account disabled since SASL success: ``not-authorized``, "not authorized to perform
# an action related to stream negotiation" (§4.9.3.12): the certificate is still good, but binding, the
# last step of negotiation (§7), is not allowed to that account.
BIND_CREDENTIALS_GONE = "reset"
BIND_NOT_AUTHORIZED = "not-authorized"


@dataclass(frozen=True)
class CertCheck:
    """The handshake-time decision: ``verified`` means chain and revocation passed, or, with ``reason``
    :data:`REASON_DEFERRED`, that the database could not be asked and the check runs again at SASL time
    (the login then fails closed with ``temporary-auth-failure`` while it stays unavailable)."""

    facts: CertFacts | None
    verified: bool
    reason: str
    user_text: str = ""  # for the client when it attempts EXTERNAL anyway (certauth.userstatus)


@dataclass(frozen=True)
class BindRefusal:
    """Why a resource may not be bound after all: the stream error ``condition`` and the human ``reason``."""

    condition: str
    reason: str


@dataclass(frozen=True)
class _Checked:
    """What a certificate that passed the handshake check leaves for EXTERNAL and later re-checks."""

    facts: CertFacts
    der: bytes
    issuer_ca_id: int | None
    path: tuple[PathLink, ...]  # every certificate of the verified path below the anchor, leaf first
    ca_fingerprints: tuple[str, ...] = ()  # the CAs on the verified path, leaf excluded, anchor last
    self_signed: bool = False  # accepted as self-signed (selfsigned_peer): logs in only as its pinned account


def _path_links(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    anchors: TrustAnchors,
    fingerprints: Sequence[str],
    leaf_subject: str,
) -> list[PathLink]:
    """The verified ``chain`` (leaf first, anchor last; ``fingerprints`` theirs, in order) as links to check
    (RFC 5280 §6.1.3 (a)(3)); a leaf without a verified issuer (self-signed, or verification off) is one link
    without one. ``leaf_subject``: the leaf's subject as its facts give it."""

    def subject_of(cert: x509.Certificate, fingerprint: str) -> str:
        return leaf_subject if fingerprint == fingerprints[0] else _ca_subject(cert, fingerprint)

    if len(chain) < 2:
        return [
            PathLink.of(leaf, None, None, is_leaf=True, fingerprint=fingerprints[0], subject_of=subject_of)
        ]
    return [
        PathLink.of(
            cert,
            issuer,
            anchors.ca_ids.get(fingerprints[index + 1]),  # TrustAnchors.ca_row_id, without hashing again
            is_leaf=index == 0,
            fingerprint=fingerprints[index],
            issuer_fingerprint=fingerprints[index + 1],
            subject_of=subject_of,
        )
        for index, (cert, issuer) in enumerate(zip(chain[:-1], chain[1:], strict=True))
    ]


# SHA-256 fingerprint -> subject (RFC 4514 text) of the CAs on verified paths: the same few at every login.
_CA_SUBJECTS: dict[str, str] = {}
CA_SUBJECTS_HELD = 1024


def _ca_subject(cert: x509.Certificate, fingerprint: str) -> str:
    subject = _CA_SUBJECTS.get(fingerprint)
    if subject is None:
        subject = _hold(_CA_SUBJECTS, CA_SUBJECTS_HELD, fingerprint, cert.subject.rfc4514_string())
    return subject


def _hold(table: dict[str, Any], held: int, key: str, value: Any) -> Any:
    """``value``, kept in ``table`` under ``key``; a table of ``held`` entries is emptied first (what it
    holds is recomputed from the certificate at the next miss, never trusted beyond it)."""
    if len(table) >= held:
        table.clear()
    table[key] = value
    return value


def _chain_fingerprints(
    leaf_fingerprint: str, chain: Sequence[x509.Certificate], anchors: TrustAnchors
) -> tuple[str, ...]:
    """The SHA-256 fingerprints of a verified ``chain`` (leaf first), hashed once for the whole check: the
    leaf's is its facts' (the verifier returns the leaf it was given), an anchor's the anchors' own."""
    return (leaf_fingerprint, *(anchors.fingerprint_of(cert) for cert in chain[1:]))


def _as_certificates(chain: Sequence[bytes | x509.Certificate]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for item in chain:
        if isinstance(item, x509.Certificate):
            certs.append(item)
        else:
            certs.extend(pki.load_certificates(bytes(item)))  # DER, or PEM with one or more certificates
    return certs


# SHA-256 fingerprint -> the certificate's facts (issue 17 §6): a returning user's leaf is not parsed again.
# Facts are a function of the certificate's DER alone, which its SHA-256 names; bounded, emptied when full.
# As many as certauth.verify keeps verified paths: a leaf whose facts are not held is not tried on the loop.
_FACTS: dict[str, CertFacts] = {}
FACTS_HELD = 4096


def _facts_of(cert: x509.Certificate) -> CertFacts:
    """``pki.cert_facts(cert)``, parsed once per certificate (``ValueError`` as it, and then not held). In a
    ``changefeed.memory_only`` block (the check on the event loop) a leaf not held raises ``NotInMemory``
    instead of being parsed: its path is not among the verified ones either, and the worker's check, which
    follows, parses it once."""
    fingerprint = pki.fingerprint_sha256(cert)
    facts = _FACTS.get(fingerprint)
    if facts is None:
        changefeed.require_database()  # under memory_only: NotInMemory, nothing parsed
        facts = _hold(_FACTS, FACTS_HELD, fingerprint, pki.cert_facts(cert, fingerprint))
    return facts


def _hosted_domains(config: Config) -> frozenset[str]:
    """The hosted domains (``accounts.domains``: config hosts minus the rows an admin disabled), with a
    ``Domain`` row made for each config host."""
    domains.ensure_rows(config.hosts)
    return domains.hosted_domains(config.hosts)


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
        self._deferred: list[bytes | x509.Certificate] | None = None  # the chain to check at SASL time
        self._passwords: Any = None  # accounts.passwords.PasswordExchange, made at the first password step
        self._password_jid: str | None = None  # the bare JID a password (not a certificate) authenticated
        self.attempts = 0  # attempts recorded (or capped) on this connection, successes included

    # --- TLS time ---------------------------------------------------------------------------------------

    def check_certificate(self, chain: Sequence[bytes | x509.Certificate]) -> CertCheck:
        """Verify the client's chain (leaf first, DER/PEM bytes or certificates) and its revocation status.

        With the database unavailable the verdict waits for SASL time (:data:`REASON_DEFERRED`): a check
        that cannot run never passes, and a login that cannot be decided is refused as temporary."""
        self._checked = None
        self._deferred = None
        try:
            return self._check_certificate(chain)
        except DATABASE_UNAVAILABLE as exc:
            database.failed(exc)
            self._deferred = list(chain)
            facts = pki.cert_facts(_as_certificates(chain)[0])  # parsed before any query: cannot fail here
            logger.warning("client certificate %s from %s: %s", facts.subject, self.peer, REASON_DEFERRED)
            return CertCheck(facts, True, REASON_DEFERRED)

    def accepted_from_memory(self, chain: Sequence[bytes | x509.Certificate]) -> CertCheck | None:
        """On the event loop, without a worker thread: the acceptance :meth:`check_certificate` would give,
        when this process can decide it from memory alone; otherwise None, and the caller runs
        :meth:`check_certificate` in a worker thread, which decides as always (issue 17: one thread hand-off
        fewer for a returning client).

        The same code decides, on the same facts: the trust anchors, the verified-path cache and the
        revocation cache, each valid only under a change feed read within ``changefeed.POLL_INTERVAL``
        (on an event loop a staler feed answers nothing from cache). None as soon as anything else is
        needed: a chain not verified before (the verifier runs once, in the worker), a database read
        (``changefeed.memory_only``: a cache miss raises before any connection is made; Django would refuse
        the query on an event loop anyway), an auth event to record, a path to learn from. Only
        acceptances: every refusal is left to the worker, which records it (issue 18 §3)."""
        self._checked = None
        self._deferred = None
        if changefeed.generation() is None:  # the feed is not fresh here: no cache may answer at all
            return None
        try:
            with changefeed.memory_only():  # a miss, a record or a path to learn raises before any query
                check = self._check_certificate(chain, verified_before=True)
        except (changefeed.NotInMemory, NotVerifiedBefore, SynchronousOnlyOperation, *DATABASE_UNAVAILABLE):
            check = None
        if check is None or not check.verified:
            self._checked = None
            return None
        return check

    def _check_certificate(
        self, chain: Sequence[bytes | x509.Certificate], *, verified_before: bool = False
    ) -> CertCheck:
        """``verified_before``: the chain only from the verified-path cache (``verify_client_chain``)."""
        try:
            certs = _as_certificates(chain)
            facts = _facts_of(certs[0]) if certs else None  # ValueError: e.g. a duplicate extension
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
            anchor_certificates=anchors.certificates,
            leaf_facts=facts,
            verified_before=verified_before,
        )
        if not verdict.ok:
            reason = f"certificate refused: {verdict.reason}"
            self._record(facts, None, None, None, reason)
            return CertCheck(facts, False, verdict.reason, user_text(verdict.reason))
        fingerprints = _chain_fingerprints(facts.fingerprint_sha256, verdict.chain, anchors)
        links = tuple(_path_links(certs[0], verdict.chain, anchors, fingerprints, facts.subject))
        checked = _Checked(
            facts,
            certs[0].public_bytes(Encoding.DER),
            links[0].issuer_ca_id,  # the leaf's link: its direct issuer's CA row
            links,
            fingerprints[1:],
            self_signed=verdict.self_signed,
        )
        revoked = self._revocation(checked)
        # After the decision, off the login path: verified chains only, refused or not (under
        # require_revocation an intermediate must become a row, with its CRL, before anything below passes).
        learning.offer(verdict.chain, anchors.ca_ids, fingerprints)
        if revoked:
            self._record(facts, None, None, None, f"certificate refused: {revoked}")
            return CertCheck(facts, False, revoked, user_text(revoked))
        self._checked = checked
        logger.debug("client certificate %s from %s accepted: %s", facts.subject, self.peer, verdict.reason)
        return CertCheck(facts, True, verdict.reason)

    def _revocation(self, checked: _Checked | None = None) -> str | None:
        """Is anything on this connection's verified path revoked, held or stale now? ``None`` when not, else
        the reason (DESIGN §5, fail closed; acceptances held under the change feed, ``certauth.revocation``).
        ``checked`` defaults to the connection's checked certificate; without one there is nothing that may
        log in: a reason."""
        checked = checked or self._checked
        if checked is None:
            return REASON_NO_CHECKED_CERT
        if any(link.issuer_ca_id is None and link.issuer_fingerprint for link in checked.path):
            checked = self._with_new_rows(checked)
        options = self.config.options
        return path_revocation_problem(
            checked.path,
            now=self._clock(),
            grace=timedelta(seconds=options.crl_grace_seconds),
            fail_open=options.crl_fail_open,
            require_revocation=options.require_revocation,
        )

    def _with_new_rows(self, checked: _Checked) -> _Checked:
        """``checked`` with the row ids of issuers that became rows since the handshake (an intermediate
        learnt meanwhile): its CRL counts from then on, for re-checks and for the session's issuer."""
        if self.listener_tls is None:
            return checked
        ca_ids = trust_anchors(self.listener_tls.cacertfile).ca_ids
        path = tuple(link.with_issuer_row(ca_ids) for link in checked.path)
        if path == checked.path:
            return checked
        updated = dataclasses.replace(checked, path=path, issuer_ca_id=path[0].issuer_ca_id)
        if self._checked is checked:
            self._checked = updated
        return updated

    def revocation_problem_now(self) -> str | None:
        """The revocation verdict on the whole path checked at the handshake, as of now (None: none, or no
        checked certificate). The same rule as at the handshake and at SASL time."""
        if self._checked is None:
            return None
        return self._revocation()

    @property
    def issuer_ca_id(self) -> int | None:
        """The ``CertificateAuthority`` row that issued the checked certificate (None: none, or not a row)."""
        return self._checked.issuer_ca_id if self._checked is not None else None

    # --- SASL time --------------------------------------------------------------------------------------

    def authenticate_external(
        self, facts: CertFacts | None, authzid: str | None, domain: str
    ) -> IdentityDecision:
        """SASL EXTERNAL for the certificate checked at the handshake; ``authzid`` None when none was sent.
        The database unavailable: ``temporary-auth-failure`` (RFC 6120 §6.5.12), whatever the certificate."""
        try:
            if self._checked is None and self._deferred is not None:
                check = self._check_certificate(self._deferred)  # the handshake's check, now
                self._deferred = None
                if not check.verified:  # recorded by the check
                    logger.info("SASL EXTERNAL failure (%s) from %s: certificate refused: %s",
                                NOT_AUTHORIZED, self.peer, check.reason)  # fmt: skip
                    reason = f"certificate refused: {check.reason}"
                    return IdentityDecision.refuse(NOT_AUTHORIZED, reason, check.user_text)
            result = self._authenticate_external(facts, authzid, domain)
        except groupcommit.NotRecorded:  # the success's row: no success without it (logged by record_attempt)
            return self._temporary_failure("EXTERNAL", facts)
        except DATABASE_UNAVAILABLE as exc:
            database.failed(exc)
            return self._temporary_failure("EXTERNAL", facts)
        database.ok()
        return result

    def _temporary_failure(self, mechanism: str, facts: CertFacts | None) -> IdentityDecision:
        """RFC 6120 §6.5.12: the database cannot be asked. Logged; not recorded (no database to record in)
        nor counted as the address's failure (XEP-0205 limits are for wrong credentials, not our outage)."""
        logger.info("SASL %s failure (%s) for %s via %s from %s: %s", mechanism, SASL_TEMPORARY_AUTH_FAILURE,
                    facts.subject if facts else "no certificate", self.transport, self.peer,
                    REASON_DATABASE_DOWN)  # fmt: skip
        return IdentityDecision.refuse(SASL_TEMPORARY_AUTH_FAILURE, REASON_DATABASE_DOWN)

    def _authenticate_external(
        self, facts: CertFacts | None, authzid: str | None, domain: str
    ) -> IdentityDecision:
        checked = self._checked
        if "external" not in self.config.auth.sasl_mechanisms:
            return self._refuse(facts, authzid, NOT_AUTHORIZED, REASON_NO_EXTERNAL)
        if checked is None or facts is None or facts.fingerprint_sha256 != checked.facts.fingerprint_sha256:
            return self._refuse(facts, authzid, NOT_AUTHORIZED, REASON_NO_CHECKED_CERT)
        facts = checked.facts
        revoked = self._revocation(checked)  # it may have changed since the handshake
        if revoked:
            return self._refuse(
                facts, authzid, NOT_AUTHORIZED, f"certificate {revoked}", text=user_text(revoked)
            )
        auth = self.config.auth
        decision = resolve_identity(
            facts,
            authzid,
            domain,
            _hosted_domains(self.config),
            auth.sasl_external,
            auth.common_name_prefix,
            auth.common_name_suffix,
        )
        if decision.jid is None:
            return self._refuse(facts, authzid, decision.condition or NOT_AUTHORIZED, decision.reason)
        limited = self._domain_refusal(checked, decision.jid)
        if limited:  # before the methods: `pki` would create the account
            return self._refuse(facts, authzid, NOT_AUTHORIZED, limited, jid=decision.jid)
        pin = pins.check_pin(decision.jid, facts.fingerprint_sha256) if checked.self_signed else None
        if pin is not None and pin.refusal:  # before the methods: `pki` would create the account
            return self._refuse(facts, authzid, NOT_AUTHORIZED, pin.refusal, jid=decision.jid)
        verdict = run_methods(self.methods, ExternalAttempt(decision.jid, facts, checked.der))
        if not verdict.accepted:
            condition = verdict.condition or NOT_AUTHORIZED
            return self._refuse(facts, authzid, condition, verdict.reason, jid=decision.jid)
        reason = verdict.reason
        if pin is not None and pin.pinned:
            reason = f"{reason}; self-signed certificate pinned to {decision.jid}"
        elif pin is not None:  # the account holds no pin: trust on first use (after `pki` made the account)
            refused = pins.pin_first_use(decision.jid, facts, peer=self.peer, transport=self.transport)
            if refused:
                return self._refuse(facts, authzid, NOT_AUTHORIZED, refused, jid=decision.jid)
            reason = f"{reason}; {pins.REASON_FIRST_USE.format(jid=decision.jid)}"
        self._record(facts, authzid, decision.jid, None, reason, jid_tried=decision.jid)
        logger.info(
            "SASL EXTERNAL success: %s as %s via %s from %s (%s; verifier %s)",
            facts.subject,
            decision.jid,
            self.transport,
            self.peer,
            reason,
            decision.verifier,
        )
        return IdentityDecision(jid=decision.jid, reason=reason, verifier=decision.verifier)

    def authenticate_password(self, request: Any) -> IdentityDecision:
        """One step of PLAIN or SCRAM (a ``transport.xmpp.events.PasswordStepRequest``), method ``rdbms``.

        The exchange lives in ``accounts.passwords``; each finished attempt writes an ``AuthEvent`` here,
        with the mechanism and the reason (never the password). The database unavailable:
        ``temporary-auth-failure`` (RFC 6120 §6.5.12).
        """
        try:
            result = self._authenticate_password(request)
        except groupcommit.NotRecorded:  # the success's row: no success without it (logged by record_attempt)
            return self._temporary_failure(str(getattr(request, "mechanism", "password")), None)
        except DATABASE_UNAVAILABLE as exc:
            database.failed(exc)
            return self._temporary_failure(str(getattr(request, "mechanism", "password")), None)
        database.ok()
        return result

    def _authenticate_password(self, request: Any) -> IdentityDecision:
        if self._passwords is None:
            from accounts.passwords import PasswordExchange  # only for password logins

            self._passwords = PasswordExchange(
                self.config.auth, self._record_password, plain_checks=_directory_plain_checks(self.config)
            )
        if request.first and request.domain not in _hosted_domains(self.config):
            return self._refuse(None, None, NOT_AUTHORIZED, f"{request.domain} is not a hosted domain")
        step = self._passwords.step(
            request.mechanism,
            request.data,
            request.domain,
            first=request.first,
            channel_bindings=request.channel_bindings,
            plus_offered=request.plus_offered,
        )
        if step.jid is not None:
            self._password_jid = str(step.jid)
        return IdentityDecision(
            jid=step.jid,
            condition=step.condition,
            reason=step.reason,
            challenge=step.challenge,
            additional_data=step.additional,
        )

    def _record_password(self, jid_tried: str, step: Any) -> None:
        if step.jid is not None:
            logger.info(
                "SASL success: %s as %s via %s from %s", step.reason, step.jid, self.transport, self.peer
            )
            self._record(None, None, step.jid, None, step.reason, jid_tried=jid_tried)
            return
        logger.info(
            "SASL password failure (%s) via %s from %s: %s",
            step.condition,
            self.transport,
            self.peer,
            step.reason,
        )
        self._record(None, None, None, step.condition or NOT_AUTHORIZED, step.reason, jid_tried=jid_tried)

    def _domain_refusal(self, checked: _Checked, jid: str) -> str | None:
        """Issue 11 point 10: every CA on the path limited to some domains must allow the JID's domain.

        The limits are read from the cached anchors now, not at the handshake, so a CA narrowed in the
        admin meanwhile applies (within ``accounts.changefeed.POLL_INTERVAL`` across processes); no query
        per login.
        """
        if not checked.ca_fingerprints or self.listener_tls is None:
            return None  # no CA vouched (verify_mode none, or a self-signed certificate)
        anchors = trust_anchors(self.listener_tls.cacertfile)
        limits = anchors.limits_on_path(checked.ca_fingerprints, self.listener_tls.cacert_domains)
        return domain_refusal(limits, jid.rpartition("@")[2])  # the JID is bare and normalised

    # --- bind time -------------------------------------------------------------------------------------

    def refusal_at_bind(self, full_jid: str) -> BindRefusal | None:
        """None when ``full_jid`` may be bound now; else the refusal, logged and recorded as an AuthEvent.

        Run in a worker thread after the session entered the live registry (``transport.sessions.registry``),
        so that a
        revocation committed after this read reaches the session through the termination watcher, and one
        committed before it is seen here: however long the client waited between SASL success and bind.
        """
        bare = full_jid.split("/", 1)[0]
        if self._password_jid is not None:
            # A password session: no certificate vouches for it, so only the account is asked again.
            if bare != self._password_jid:
                mismatch = "not the JID the password proved"
                return self._refuse_bind(None, full_jid, BIND_NOT_AUTHORIZED, mismatch)
            if not account_is_active(bare):
                reason = f"account {bare} is disabled or gone"
                return self._refuse_bind(None, full_jid, BIND_NOT_AUTHORIZED, reason)
            return None
        checked = self._checked
        if checked is None:
            return self._refuse_bind(None, full_jid, BIND_NOT_AUTHORIZED, REASON_NO_CHECKED_CERT)
        facts = checked.facts
        now = self._clock()
        # RFC 5280 §4.1.2.5; as the registry's expiry timer (transport.sessions.registry)
        if facts.not_after < now:
            expired = f"certificate expired {facts.not_after:%Y-%m-%d %H:%M:%S} UTC"
            return self._refuse_bind(facts, full_jid, BIND_CREDENTIALS_GONE, expired)
        revoked = self.revocation_problem_now()
        if revoked:
            return self._refuse_bind(facts, full_jid, BIND_CREDENTIALS_GONE, f"certificate {revoked}")
        inactive = refuse_inactive(ExternalAttempt(bare, facts, checked.der))  # the rule of every auth method
        if inactive is not None:
            return self._refuse_bind(facts, full_jid, BIND_NOT_AUTHORIZED, inactive.reason)
        return None

    def _refuse_bind(
        self, facts: CertFacts | None, full_jid: str, condition: str, reason: str
    ) -> BindRefusal:
        reason = f"bind refused: {reason}"
        self._record(facts, None, None, condition, reason, jid_tried=full_jid)
        logger.info(
            "resource binding refused (%s) for %s via %s from %s: %s",
            condition,
            full_jid,
            self.transport,
            self.peer,
            reason,
        )
        return BindRefusal(condition, reason)

    # --- the event log ----------------------------------------------------------------------------------

    def _refuse(
        self,
        facts: CertFacts | None,
        authzid: str | None,
        condition: str,
        reason: str,
        jid: str | None = None,
        *,
        text: str = "",
    ) -> IdentityDecision:
        self._record(facts, authzid, None, condition, reason, jid_tried=jid)
        logger.info(
            "SASL EXTERNAL failure (%s) for %s via %s from %s: %s",
            condition,
            facts.subject if facts else "no certificate",
            self.transport,
            self.peer,
            reason,
        )
        return IdentityDecision.refuse(condition, reason, text)

    def record_refusal(self, facts: CertFacts | None, condition: str | None, reason: str) -> None:
        """An attempt decided outside this class (``transport.driver``): a SASL refusal of the core's own
        (``condition``), or a connection that ended without any attempt (``condition`` None). Logged and
        recorded, within the per-address cap; a database that is down loses it (logged)."""
        if condition is not None:  # record_attempt logs a refusal without a condition itself
            subject = facts.subject if facts else "no certificate"
            logger.info("SASL failure (%s) for %s via %s from %s: %s",
                        condition, subject, self.transport, self.peer, reason)  # fmt: skip
        self._record(facts, None, None, condition, reason)

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
        changefeed.require_database()  # never under changefeed.memory_only: a refusal is the worker's
        self.attempts += 1
        record_attempt(
            self.transport, self.peer, facts, authzid, granted, condition, reason, jid_tried=jid_tried
        )


_EVENT_COLUMNS = (
    "time",
    "transport",
    "peer",
    "cert_fingerprint",
    "cert_subject",
    "jid_requested",
    "jid_granted",
    "outcome",
    "condition",
    "reason",
)
# Auth events are group-committed (issue 17 §2): one transaction for the rows of many logins, and each caller
# waits for its own row's commit, so no login is answered before its row is durable.
events = groupcommit.stop_at_exit(groupcommit.GroupCommit(AuthEvent, _EVENT_COLUMNS, what="auth events"))


def record_attempt(
    transport: str,
    peer: str,
    facts: CertFacts | None,
    authzid: str | None,
    granted: str | None,
    condition: str | None,
    reason: str,
    *,
    jid_tried: str | None = None,
) -> None:
    """The one place an attempt becomes a metric and an ``AuthEvent`` (refusals capped per address).

    Returns once the row is committed (``xmppauth.groupcommit``). A success whose row could not be committed
    raises ``NotRecorded``: the caller answers ``temporary-auth-failure``, never success without its row. A
    refusal's row that could not be written is logged and lost (the refusal goes out all the same)."""
    success = granted is not None
    metrics.count_login(transport, success, condition)  # every attempt, before the rows' cap
    if not success and condition is None:
        logger.info("client certificate from %s via %s refused: %s", peer, transport, reason)
    if not success and not _record_refusal(peer):
        return
    row = (
        timezone.now(),  # the attempt's time, not its batch's
        _clip(transport, 16),
        _clip(peer, 100),
        facts.fingerprint_sha256 if facts else "",
        _clip(facts.subject if facts else "", 1000),
        _clip(authzid or jid_tried or "", 3071),
        _clip(granted or "", 3071),
        AuthEvent.Outcome.SUCCESS if success else AuthEvent.Outcome.FAILURE,
        _clip(condition or "", 64),
        _clip(reason, 1000),
    )
    try:
        events.write(row)
    except groupcommit.NotRecorded as exc:
        if success:
            logger.error("SASL success for %s from %s withdrawn: its auth event was not recorded (%s)",
                         granted, peer, exc)  # fmt: skip
            raise
        logger.warning("auth event from %s not recorded: %s", peer, exc)


def record_handshake_refusal(transport: str, peer: str, leaf: x509.Certificate | None, reason: str) -> None:
    """A TLS handshake the listener refused (``disconnect_on_failure``: no certificate, or one OpenSSL cannot
    chain), reported by ``transport.tls.context``: no session, no driver, so recorded here (issue 18 §3)."""
    try:
        facts = pki.cert_facts(leaf) if leaf is not None else None
    except ValueError:  # a certificate we cannot read: the event without its facts
        facts = None
    record_attempt(transport, peer, facts, None, None, None, f"TLS handshake refused: {reason}")


def _record_refusal(peer: str) -> bool:
    """Count a refusal from ``peer``'s address (``auth_failures_per_minute``, XEP-0205) and say whether it
    gets an ``AuthEvent`` row: at most ``[xmppauth] auth_events_per_minute`` per address and minute, so an
    unauthenticated peer cannot fill the disk; one log line says when an address's rows stop."""
    address = limits.address_of(peer)
    limits.auth_failures.add(address)
    seen = limits.auth_events.add(address)
    allowed = limits.option("auth_events_per_minute")
    if seen == allowed + 1:
        logger.warning(
            "auth events: more than %d refusals from %s within a minute, not all recorded", allowed, address
        )
    return seen <= allowed


def _directory_plain_checks(config: Config) -> dict[str, Any]:
    """PLAIN checkers of the methods whose passwords live outside our database (``ldap``)."""
    if config.auth.ldap is None or "ldap" not in config.auth.methods:
        return {}
    from certauth.ldapauth import plain_check  # only with the ldap method (python-ldap)

    options = config.auth.ldap
    return {"ldap": lambda domain: plain_check(options, domain)}
