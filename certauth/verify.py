"""Client certificate chain verification: does the presented chain lead to a CA we trust, today?

Pure (cryptography only). The path validation itself is ``cryptography.x509.verification`` (RFC 5280 §6, with
the CA/B Forum profile its ``webpki`` defaults implement), relaxed where client certificates differ from web
server certificates:

- the subjectAltName may be absent on the leaf, so certificates that only carry a CN (XEP-0178 ``common_name``
  verifier) are accepted; RFC 5280 §4.2.1.6 makes SAN optional when the subject is not empty;
- the leaf may lack authorityKeyIdentifier (RFC 5280 §4.2.1.1 only says "MUST" to the issuing CA, and many
  client certificates omit it; it is a chain building hint, not a security property);
- a CA certificate may lack keyUsage; when present it must allow keyCertSign (RFC 5280 §4.2.1.3). OpenSSL's
  own ``req -x509`` CAs carry no keyUsage, and MongooseIM (OpenSSL) accepts them.

The extended key usage rule is the verifier's: with an EKU extension on the leaf, it must list
id-kp-clientAuth (RFC 5280 §4.2.1.12); without one, any use is allowed.

X.509 v1 leaves (no extensions, so CN only): ``openssl x509 -req`` without ``-extfile`` makes them, as the
seed's Gajim recipe does. ``cryptography`` refuses every v1 certificate, so :func:`_verify_v1_leaf` checks the
one case we accept by hand: a v1 leaf whose issuer is itself a trust anchor (a one-link path), with the same
signature algorithms and anchor keys as the verifier's profile. A v1 leaf under an intermediate is refused
(we build no longer path by hand), and a v1 certificate is never a CA, anywhere on the path (RFC 5280 §6.1.4
(k)). A self-signed v1 leaf is a self-signed leaf like any other under ``selfsigned_peer``.

Modes follow MongooseIM's ``tls.verify_mode``: ``peer`` (a chain to a trust anchor), ``selfsigned_peer`` (also
a self-signed leaf whose own signature and dates check) and ``none``: the listener requests no client
certificate (``transport.tls.context``), so no certificate is ever accepted there; one that arrives anyway
(it cannot
over our own TLS) is refused, never counted as verified (fail closed; DESIGN §0).

Measured on the development box (``bench/verify_chain.py``): 0.04-0.07 ms per verification of a leaf issued
by a root (RSA-2048 / EC P-256), verifier construction included; 0.16 ms with 200 anchors passed as a list,
0.06 ms with the same 200 as a prebuilt ``Store`` (what ``certauth.trust`` hands in).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from certauth.pki import CertFacts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyMode:
    """One ``tls.verify_mode``: whether the handshake requests a client certificate
    (``transport.tls.context``) and whether a self-signed leaf may pass (pinned, ``certauth.pins``)."""

    name: str
    requests_certificate: bool
    accepts_self_signed: bool = False


# tls.verify_mode name -> mode: the one list (xmppauth.config validates against it, transport.tls.context
# builds the handshake from it). MongooseIM's modes; "none" asks for no certificate, so EXTERNAL is never
# offered there (DESIGN §0).
VERIFY_MODES: dict[str, VerifyMode] = {
    mode.name: mode
    for mode in (
        VerifyMode("peer", requests_certificate=True),
        VerifyMode("selfsigned_peer", requests_certificate=True, accepts_self_signed=True),
        VerifyMode("none", requests_certificate=False),
    )
}

REASON_OK = "chain verified"
REASON_SELF_SIGNED_OK = "self-signed certificate accepted (verify_mode selfsigned_peer)"
REASON_DISABLED = "client certificates are not requested on this listener (verify_mode none)"
REASON_NO_CERT = "no client certificate presented"
REASON_UNTRUSTED = "issuer not trusted"
REASON_SELF_SIGNED_UNTRUSTED = "self-signed certificate not trusted (verify_mode peer)"
REASON_BAD_SIGNATURE = "signature invalid"
REASON_EKU = "extended key usage lacks clientAuth"
REASON_CA_DATES = "a CA certificate of the chain is expired or not yet valid"
REASON_CA_AS_CLIENT = "a CA certificate (basicConstraints cA) is not a client certificate"
REASON_V1_CA = "an X.509 v1 certificate cannot be a CA (RFC 5280 §6.1.4 (k))"
REASON_V1_NOT_DIRECT = "an X.509 v1 certificate is accepted only when a trusted CA issued it directly"
REASON_V1_EXTENSIONS = "an X.509 v1 certificate cannot carry extensions (RFC 5280 §4.1.2.9)"
REASON_V1_NO_ANCHOR_LIST = "an X.509 v1 certificate needs the anchors' certificates, which were not given"
REASON_ISSUER_NOT_CA = "the issuer is not a CA (basicConstraints cA, keyUsage keyCertSign)"
REASON_WEAK_SIGNATURE = "signature algorithm or issuer key not accepted"

# The verifier's profile (cryptography's webpki defaults), for the v1 leaves it cannot take: the leaf's
# signature hash, and the issuer's key (RSA of at least 2048 bits, or one of the NIST curves).
_V1_SIGNATURE_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_V1_ISSUER_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_V1_MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class ChainVerdict:
    """The outcome of :func:`verify_client_chain`; ``reason`` is for people (logs, AuthEvent, admin)."""

    ok: bool
    reason: str
    chain: tuple[x509.Certificate, ...] = field(default=(), repr=False)  # verified path, leaf first
    self_signed: bool = False  # accepted as a self-signed leaf (selfsigned_peer), not through a CA

    @property
    def issuer_ca(self) -> x509.Certificate | None:
        """The leaf's direct issuer on the verified path (None: refused, or a self-signed leaf)."""
        return self.chain[1] if len(self.chain) > 1 else None


def _ca_key_usage(policy: Policy, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    # RFC 5280 §4.2.1.3: a CA key that signs certificates has keyCertSign, when keyUsage is present.
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("keyUsage of a CA certificate lacks keyCertSign")


def _ee_policy() -> ExtensionPolicy:
    return (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
    )


def _ca_policy() -> ExtensionPolicy:
    return ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage
    )


_EE_POLICY = _ee_policy()
_CA_POLICY = _ca_policy()


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _dates_reason(cert: x509.Certificate, now: datetime) -> str | None:
    """RFC 5280 §4.1.2.5: ``now`` must lie within notBefore..notAfter (inclusive)."""
    if now < cert.not_valid_before_utc:
        return f"not yet valid (valid from {_day(cert.not_valid_before_utc)})"
    if now > cert.not_valid_after_utc:
        return f"expired {_day(cert.not_valid_after_utc)}"
    return None


def _eku_refusal(usages: Iterable[str] | None) -> str | None:
    """RFC 5280 §4.2.1.12: when the leaf restricts its key's purposes (``usages``: dotted OIDs; None without
    the extension), clientAuth must be one of them. The one rule, for a parsed leaf and for its facts."""
    if usages is None or ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string in usages:
        return None
    return REASON_EKU


def _eku_reason(cert: x509.Certificate) -> str | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return _eku_refusal(None)
    return _eku_refusal(oid.dotted_string for oid in eku)


def _is_ca(cert: x509.Certificate) -> bool:
    """RFC 5280 §4.2.1.9: cA TRUE marks a CA key; an end entity's certificate never has it."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _is_v1(cert: x509.Certificate) -> bool:
    return cert.version is x509.Version.v1


def _issuer_refusal(issuer: x509.Certificate) -> str | None:
    """Why a trust anchor cannot have issued a v1 leaf; ``None`` when it can. RFC 5280 §6.1.4 (k): only a v3
    certificate with basicConstraints cA TRUE is a CA; (n): with keyUsage, keyCertSign must be set."""
    if _is_v1(issuer):
        return REASON_V1_CA
    if not _is_ca(issuer):
        return REASON_ISSUER_NOT_CA
    try:
        if not issuer.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            return REASON_ISSUER_NOT_CA
    except x509.ExtensionNotFound:
        pass
    return None


def _algorithms_refusal(leaf: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """The verifier's algorithm profile on the leaf's signature and the issuer's key."""
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_ok = key.key_size >= _V1_MIN_RSA_BITS
    else:
        key_ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _V1_ISSUER_CURVES)
    if not key_ok or not isinstance(leaf.signature_hash_algorithm, _V1_SIGNATURE_HASHES):
        return REASON_WEAK_SIGNATURE
    return None


def _verify_v1_leaf(
    chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], now: datetime
) -> ChainVerdict:
    """A v1 leaf (dates already checked) on a one-link path: its issuer must be one of ``anchors``."""
    leaf = chain[0]
    if len(leaf.extensions):
        return ChainVerdict(False, REASON_V1_EXTENSIONS)
    reason = REASON_UNTRUSTED
    if any(cert.subject == leaf.issuer and not _is_self_issued(cert) for cert in chain[1:]):
        reason = REASON_V1_NOT_DIRECT  # the client sent an intermediate: a longer path than we accept
    if _is_self_issued(leaf) and _self_signature_ok(leaf):
        reason = REASON_SELF_SIGNED_UNTRUSTED
    for anchor in anchors:
        if anchor.subject != leaf.issuer:  # RFC 5280 §6.1.3 (a)(4): name chaining
            continue
        # Another anchor with this name (a re-keyed CA) may have signed it: a mismatch tries the next one.
        weak = _algorithms_refusal(leaf, anchor)
        if weak:
            reason = weak
            continue
        try:
            leaf.verify_directly_issued_by(anchor)
        except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
            reason = REASON_BAD_SIGNATURE
            continue
        refusal = _issuer_refusal(anchor)
        if refusal is None and _dates_reason(anchor, now):
            refusal = REASON_CA_DATES
        if refusal:
            return ChainVerdict(False, refusal)
        return ChainVerdict(True, REASON_OK, (leaf, anchor))
    logger.debug("X.509 v1 certificate %s refused: %s", leaf.subject.rfc4514_string(), reason)
    return ChainVerdict(False, reason)


def _is_self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer  # RFC 5280 §3.2


def _self_signature_ok(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    """Self-issued (RFC 5280 §3.2) and signed by its own key: what ``selfsigned_peer`` may accept."""
    return _is_self_issued(cert) and _self_signature_ok(cert)


def _reason_from_error(error: VerificationError) -> str:
    """Turn cryptography's message into one of our human reasons (the raw text goes to the debug log)."""
    text = str(error)
    if "signature does not match" in text:
        return REASON_BAD_SIGNATURE
    if "not valid at validation time" in text:
        return REASON_CA_DATES
    if "required EKU not found" in text:
        return REASON_EKU
    if "must be an X509v3 certificate" in text:
        return REASON_V1_CA  # the leaf never gets here as v1 (_verify_v1_leaf): a CA on the path is v1
    if "all candidates exhausted with no interior errors" in text:
        return REASON_UNTRUSTED
    detail = text.removeprefix("validation failed: ").split(" (encountered processing", 1)[0]
    return f"chain invalid: {detail}"


def _verify_self_signed(leaf: x509.Certificate, now: datetime) -> ChainVerdict:
    if not _self_signature_ok(leaf):
        return ChainVerdict(False, REASON_BAD_SIGNATURE)
    dates = _dates_reason(leaf, now)
    if dates:
        return ChainVerdict(False, dates)
    return ChainVerdict(True, REASON_SELF_SIGNED_OK, (leaf,), self_signed=True)


class NotVerifiedBefore(Exception):
    """``verify_client_chain(..., verified_before=True)``: this chain is not among the paths accepted."""


def verify_client_chain(
    chain: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate] | Store,
    *,
    mode: str,
    now: datetime,
    anchor_certificates: Sequence[x509.Certificate] | None = None,
    leaf_facts: CertFacts | None = None,
    verified_before: bool = False,
) -> ChainVerdict:
    """Verify a client's certificate chain (leaf first) against ``trust_anchors`` at ``now`` (aware UTC).

    ``trust_anchors`` may be a prebuilt :class:`Store` (``certauth.trust`` caches one); a Store cannot be
    listed, so pass its certificates as ``anchor_certificates`` too (the v1 rule reads them). Never raises
    for a bad certificate: every refusal is a verdict with a reason. ``leaf_facts``: the leaf's
    ``certauth.pki.CertFacts`` when the caller has them (issue 17 §6): the leaf's cA flag and extended key
    usages are read there instead of from its extensions, which then need not be parsed into Python objects
    (the verifier reads them itself).

    ``verified_before``: answer only from :data:`verified_paths`; a chain that would need the verifier (or the
    v1 rule's signature checks) raises :class:`NotVerifiedBefore` instead (the event loop's check, issue 17:
    a chain seen for the first time, or refused, is verified once, in a worker thread, not twice).
    """
    verify_mode = VERIFY_MODES.get(mode)
    if verify_mode is None:
        raise ValueError(f"unknown verify_mode {mode!r}; accepted values: {', '.join(VERIFY_MODES)}")
    if not chain:
        return ChainVerdict(False, REASON_NO_CERT)
    if not verify_mode.requests_certificate:
        return ChainVerdict(False, REASON_DISABLED)
    leaf = chain[0]
    if leaf_facts.is_ca if leaf_facts is not None else _is_ca(leaf):
        return ChainVerdict(False, REASON_CA_AS_CLIENT)  # also in selfsigned_peer: a root is no login

    if verify_mode.accepts_self_signed and _is_self_issued(leaf) and _self_signature_ok(leaf):
        return _verify_self_signed(leaf, now)

    # Our own checks first on the leaf, for reasons that name the date; the verifier repeats them.
    eku = _eku_refusal(leaf_facts.extended_key_usages) if leaf_facts is not None else _eku_reason(leaf)
    reason = _dates_reason(leaf, now) or eku
    if reason:
        return ChainVerdict(False, reason)

    if _is_v1(leaf):
        if verified_before:
            raise NotVerifiedBefore
        if not isinstance(trust_anchors, Store):
            return _verify_v1_leaf(chain, trust_anchors, now)
        if anchor_certificates is None:
            logger.error("X.509 v1 certificate %s refused: %s", leaf.subject, REASON_V1_NO_ANCHOR_LIST)
            return ChainVerdict(False, REASON_V1_NO_ANCHOR_LIST)
        return _verify_v1_leaf(chain, anchor_certificates, now)

    store = trust_anchors if isinstance(trust_anchors, Store) else None
    if store is None:
        if not trust_anchors:
            return ChainVerdict(False, f"{REASON_UNTRUSTED} (no trust anchors configured)")
        store = Store(list(trust_anchors))
        key = None  # a store made for this call: no later call can present it again
    else:
        key = _chain_key(store, chain)
        path = verified_paths.get(key, store, now)
        if path is not None:
            return ChainVerdict(True, REASON_OK, path)
    if verified_before:
        raise NotVerifiedBefore
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(now)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, list(chain[1:]))
    except VerificationError as exc:
        reason = _reason_from_error(exc)
        if _is_self_issued(leaf):
            # A self-signed leaf can only be trusted as an anchor of its own; say what it is.
            if _self_signature_ok(leaf):
                reason = REASON_SELF_SIGNED_UNTRUSTED
            elif reason == REASON_UNTRUSTED or reason.startswith("chain invalid"):
                reason = REASON_BAD_SIGNATURE
        logger.debug("chain of %s refused: %s (%s)", leaf.subject.rfc4514_string(), reason, exc)
        return ChainVerdict(False, reason)
    path = tuple(verified.chain)
    if key is not None:
        verified_paths.put(key, store, path)
    known_intermediates.remember(path)
    return ChainVerdict(True, REASON_OK, path)


# == verified paths, reused (issue 17) ======================================================================

VERIFIED_PATHS_KEPT = 4096  # per process; the oldest goes first (an entry: the path's certificates, ~2 KiB)
_PathKey = tuple[int, tuple[bytes, ...]]  # id of the Store, SHA-256 of each certificate the client sent


@dataclass(frozen=True)
class _VerifiedPath:
    store: Store  # held, so the store's id in the key cannot pass to another object while the entry lives
    path: tuple[x509.Certificate, ...]
    valid_from: datetime  # the latest notBefore on the path
    valid_until: datetime  # the earliest notAfter on the path


class VerifiedPaths:
    """Paths the verifier accepted, by trust store and by the SHA-256 of every certificate the client sent.

    Only acceptances are kept, and one is reused only for the same chain, byte for byte, under the same
    ``Store`` object (``certauth.trust`` builds a new one whenever a listener's anchors change: a CA
    distrusted in the admin is never met by an old entry) and while ``now`` lies within the dates of every
    certificate on the path (RFC 5280 §4.1.2.5; the leaf's are checked before, on every call). Nothing else
    enters the verifier's decision: its policy is this module's constants. Revocation is not the verifier's
    business and is checked on every connection by the caller (``certauth.authenticator``).
    """

    def __init__(self, kept: int = VERIFIED_PATHS_KEPT) -> None:
        self.kept = kept
        self._paths: dict[_PathKey, _VerifiedPath] = {}
        self._lock = threading.Lock()

    def get(self, key: _PathKey, store: Store, now: datetime) -> tuple[x509.Certificate, ...] | None:
        entry = self._paths.get(key)
        if entry is None or entry.store is not store or not entry.valid_from <= now <= entry.valid_until:
            return None
        return entry.path

    def put(self, key: _PathKey, store: Store, path: tuple[x509.Certificate, ...]) -> None:
        entry = _VerifiedPath(
            store,
            path,
            max(cert.not_valid_before_utc for cert in path),
            min(cert.not_valid_after_utc for cert in path),
        )
        with self._lock:
            _make_room(self._paths, self.kept)
            self._paths[key] = entry

    def clear(self) -> None:
        with self._lock:
            self._paths.clear()

    def __len__(self) -> int:
        return len(self._paths)


verified_paths = VerifiedPaths()


def _make_room(entries: dict[Any, Any], kept: int) -> None:
    """Drop the oldest entries (a dict keeps insertion order) until one more fits within ``kept``."""
    while len(entries) >= kept:
        del entries[next(iter(entries))]


def _chain_key(store: Store, chain: Sequence[x509.Certificate]) -> _PathKey:
    """The store, and every certificate the client sent (leaf first, in its order) by SHA-256 of its DER,
    hashed here, not taken from the caller's facts: a key must name exactly the bytes that were verified."""
    return id(store), tuple(cert.fingerprint(hashes.SHA256()) for cert in chain)


# == intermediates of verified paths, for resumed TLS sessions (issue 17 §5) ===============================

INTERMEDIATES_KEPT = 1024  # subjects; CAs between a leaf and its anchor are few, whatever the users
CANDIDATES_PER_SUBJECT = 4  # certificates of one subject kept (a CA's key rollover)
MAX_INTERMEDIATES = 10  # as OpenSSL's verify depth (transport.tls.context)


class KnownIntermediates:
    """The CA certificates that stood between a leaf and its trust anchor on a path this process verified,
    by subject.

    A resumed TLS session restores the client's leaf alone (a stateless ticket carries the peer's certificate,
    not the rest of its chain: RFC 8446 §4.6.1 leaves the ticket's content to the server, OpenSSL keeps the
    leaf), so the certificates above it come from here (``transport.tls.context.peer_chain``). They are
    candidates for path building, never trust: the verifier still needs a signature from each to the next up
    to a trust anchor, under the same policy and dates, and revocation is checked on the path it builds.
    Only for resumed sessions: a full handshake is verified with what the client sent. Held per process, as
    the tickets' keys are (a ticket of another process, or of before a restart, is a full handshake).
    """

    def __init__(self, kept: int = INTERMEDIATES_KEPT) -> None:
        self.kept = kept
        self._by_subject: dict[bytes, dict[bytes, x509.Certificate]] = {}
        self._lock = threading.Lock()

    def remember(self, path: Sequence[x509.Certificate]) -> None:
        """Keep the certificates of a verified ``path`` between its leaf and its anchor."""
        for cert in path[1:-1]:
            subject, fingerprint = cert.subject.public_bytes(), cert.fingerprint(hashes.SHA256())
            with self._lock:
                known = self._by_subject.get(subject)
                if known is not None and fingerprint in known:
                    continue
                if known is None:
                    _make_room(self._by_subject, self.kept)
                    known = self._by_subject[subject] = {}
                _make_room(known, CANDIDATES_PER_SUBJECT)
                known[fingerprint] = cert

    def above(self, leaf: x509.Certificate) -> list[x509.Certificate]:
        """The known certificates whose subject is the leaf's issuer, then theirs, and so on (at most
        :data:`MAX_INTERMEDIATES`); empty when the leaf's issuer is none of them (e.g. a trust anchor)."""
        found: list[x509.Certificate] = []
        seen: set[bytes] = set()
        wanted = [leaf.issuer.public_bytes()] if leaf.issuer != leaf.subject else []
        while wanted and len(found) < MAX_INTERMEDIATES:
            issuers: list[bytes] = []
            for subject in wanted:
                with self._lock:
                    candidates = list(self._by_subject.get(subject, {}).items())
                for fingerprint, cert in candidates:
                    if fingerprint in seen or len(found) >= MAX_INTERMEDIATES:
                        continue
                    seen.add(fingerprint)
                    found.append(cert)
                    if cert.issuer != cert.subject:
                        issuers.append(cert.issuer.public_bytes())
            wanted = issuers
        return found

    def clear(self) -> None:
        with self._lock:
            self._by_subject.clear()

    def __len__(self) -> int:
        return len(self._by_subject)


known_intermediates = KnownIntermediates()
