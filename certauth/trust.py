"""The trust store for client certificates: the CAs that may vouch for a client (RFC 5280 §6.1.1 (d)).

Every anchor is a ``CertificateAuthority`` row (one kind of trust anchor, DESIGN §0). A listener trusts the
rows with ``trusted_for_client_auth`` that do not come from the config, plus the rows whose ``config_files``
include the listener's ``tls.cacertfile`` (``certauth.configcas`` turns the files into rows at start-up; no
file is read here). Parsing them on every login would cost more than verifying the chain, so the parsed set
is cached per ``cacertfile``:

- in this process, a ``post_save``/``post_delete`` on ``CertificateAuthority`` bumps a generation counter and
  the next lookup rebuilds;
- every change to a CA row, in any process and by any path (``update()`` too), bumps ``accounts.changefeed``,
  which each process reads at most every ``changefeed.POLL_INTERVAL`` seconds: other processes (the admin runs
  elsewhere in production) rebuild within that bound. Where the feed cannot be asked (an event-loop thread
  whose feed is stale), the anchors are kept at most ``CACHE_TTL`` seconds, as before the feed.

Revocation is not decided here (``certauth.revocation``, under the same feed).

Per-CA domains (issue 11 point 10) ride on the same cache: a CA may be limited to some hosted domains
(``CertificateAuthority.allowed_domains``; for ``tls.cacertfile`` CAs the listener's ``tls.cacert_domains``),
and :func:`domain_refusal` is the one rule that applies those limits to the JID a login asserts.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.verification import Store
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts import changefeed
from certauth import pki
from certauth.models import CertificateAuthority
from transport.xmpp.jid import InvalidJid, normalise_domain

logger = logging.getLogger(__name__)

CACHE_TTL = 5.0  # seconds the anchors are kept where the change feed cannot be asked (a stale event loop)

_lock = threading.Lock()
_generation = 0
_cache: dict[str | None, tuple[int, int | None, float, TrustAnchors]] = {}
# per cacertfile: the last Store built and the SHA-256 fingerprints of its anchors (see _store_for)
_stores: dict[str | None, tuple[frozenset[str], Store]] = {}


@dataclass(frozen=True)
class DomainLimit:
    """A CA that may vouch only for ``domains`` (normalised hosted domains); ``ca`` names it for people."""

    ca: str
    domains: frozenset[str]


def domain_refusal(limits: Iterable[DomainLimit], domain: str) -> str | None:
    """Why a JID in ``domain`` may not be asserted through CAs with these ``limits`` (None: it may).

    Every limit on the path applies: the trust anchor's and those of the CAs between it and the leaf.
    """
    for limit in limits:
        if domain not in limit.domains:
            allowed = ", ".join(sorted(limit.domains)) or "no domain"
            return f"CA {limit.ca!r} may vouch only for {allowed}, not for {domain}"
    return None


@dataclass(frozen=True)
class TrustAnchors:
    """The parsed anchors of one listener, with what the verifier and the revocation check need."""

    certificates: tuple[x509.Certificate, ...]
    store: Store | None  # None when there is no anchor at all (cryptography refuses an empty Store)
    ca_ids: dict[str, int] = field(default_factory=dict)  # SHA-256 fingerprint -> pk of every CA row
    generation: int = 0
    # SHA-256 fingerprint -> limit, for every CA row whose allowed_domains is not empty
    domain_limits: dict[str, DomainLimit] = field(default_factory=dict)
    # SHA-256 fingerprint -> name, for the anchors read from tls.cacertfile
    file_anchors: dict[str, str] = field(default_factory=dict)
    # anchor -> its SHA-256 fingerprint, hashed once per build: a verified path ends at an anchor, and the
    # certificate the verifier returns is equal to it (issue 17 §6: no hashing of the anchor at each login)
    anchor_fingerprints: dict[x509.Certificate, str] = field(default_factory=dict)

    def fingerprint_of(self, cert: x509.Certificate) -> str:
        """``pki.fingerprint_sha256(cert)``, looked up for an anchor instead of hashed again."""
        fingerprint = self.anchor_fingerprints.get(cert)
        return fingerprint if fingerprint is not None else pki.fingerprint_sha256(cert)

    def limits_on_path(
        self, ca_fingerprints: Sequence[str], cacert_domains: Sequence[str] = ()
    ) -> list[DomainLimit]:
        """The domain limits of the CAs on a verified path (their SHA-256 fingerprints, leaf excluded).

        ``cacert_domains`` is the listener's ``tls.cacert_domains``: it limits the anchors of its cacertfile.
        """
        limits = [self.domain_limits[fp] for fp in ca_fingerprints if fp in self.domain_limits]
        if cacert_domains:
            file_limit = _normalised(tuple(cacert_domains))
            limits += [
                DomainLimit(f"{self.file_anchors[fp]} (tls.cacertfile)", file_limit)
                for fp in ca_fingerprints
                if fp in self.file_anchors
            ]
        return limits

    def ca_row_id(self, cert: x509.Certificate | None) -> int | None:
        """The ``CertificateAuthority`` primary key of a CA certificate (``None`` when it is not a row)."""
        if cert is None:
            return None
        return self.ca_ids.get(pki.fingerprint_sha256(cert))


def generation() -> int:
    """Bumped on every change of a CertificateAuthority row in this process (listeners rebuild their TLS)."""
    return _generation


def invalidate() -> None:
    """Forget the cached anchors (called on CA changes; tests call it too)."""
    global _generation
    with _lock:
        _generation += 1
        _cache.clear()


@receiver(post_save, sender=CertificateAuthority, dispatch_uid="certauth.trust.ca_saved")
@receiver(post_delete, sender=CertificateAuthority, dispatch_uid="certauth.trust.ca_deleted")
def _ca_changed(sender: type, **kwargs: object) -> None:
    invalidate()


@functools.lru_cache(maxsize=64)
def _normalised(domains: tuple[str, ...]) -> frozenset[str]:
    """A listener's ``tls.cacert_domains`` compared as JID domains are (RFC 7622 §3.2, certauth.identity)."""
    normalised: set[str] = set()
    for domain in domains:
        try:
            normalised.add(normalise_domain(domain))
        except InvalidJid:
            normalised.add(domain)  # the config loader checked it is a host; compare it as written
    return frozenset(normalised)


def _domain_limit(name: str, allowed: object) -> DomainLimit:
    """A row's ``allowed_domains`` as a limit; an entry that is not a domain matches nothing (fail closed)."""
    if not isinstance(allowed, list):
        logger.error("CA %r: allowed_domains is not a list (%r); it may vouch for no domain", name, allowed)
        return DomainLimit(name, frozenset())
    domains: set[str] = set()
    for entry in allowed:
        try:
            if not isinstance(entry, str):
                raise InvalidJid("not a string")
            domains.add(normalise_domain(entry))
        except InvalidJid as exc:
            logger.error("CA %r: allowed_domains entry %r is not a domain (%s); ignored", name, entry, exc)
    return DomainLimit(name, frozenset(domains))


def _anchor_of(cacertfile: str | None, trusted: bool, origin: str, config_files: list[str] | None) -> bool:
    """Whether a row is an anchor for the listener whose ``tls.cacertfile`` is ``cacertfile``."""
    if cacertfile is not None and cacertfile in (config_files or ()):
        return True  # listed in this listener's file, whatever its origin (as when the file was read here)
    return trusted and origin != CertificateAuthority.Origin.CONFIG  # a config CA: only where it is listed


def _build(cacertfile: str | None, gen: int) -> TrustAnchors:
    """The listener's anchors, parsed; the primary key of *every* CA row by fingerprint (an intermediate may
    be a row that is not itself an anchor, and its revocations still live there); the domain limit of every
    row that has one (an intermediate's limit applies as much as an anchor's); and the names of the anchors
    listed in this listener's ``tls.cacertfile`` (its ``tls.cacert_domains`` limits them)."""
    certs: list[x509.Certificate] = []
    ids: dict[str, int] = {}
    limits: dict[str, DomainLimit] = {}
    file_names: dict[str, str] = {}
    rows = CertificateAuthority.objects.values_list(
        "pk",
        "name",
        "fingerprint_sha256",
        "trusted_for_client_auth",
        "origin",
        "config_files",
        "certificate_pem",
        "allowed_domains",
    )
    for pk, name, fingerprint, trusted, origin, config_files, pem, allowed in rows:
        fingerprint = fingerprint.lower()
        ids[fingerprint] = pk
        if allowed:
            limits[fingerprint] = _domain_limit(name, allowed)
        if not _anchor_of(cacertfile, trusted, origin, config_files):
            continue
        try:
            cert = pki.load_certificate(pem.encode("ascii"))
        except ValueError as exc:
            logger.error("CA %r: stored certificate cannot be parsed (%s); not trusted", name, exc)
            continue
        certs.append(cert)
        if cacertfile is not None and cacertfile in (config_files or ()):
            file_names[fingerprint] = cert.subject.rfc4514_string()
    logger.debug("trust store for %s: %d anchors", cacertfile, len(certs))
    fingerprints = {cert: pki.fingerprint_sha256(cert) for cert in certs}
    store = _store_for(cacertfile, certs, frozenset(fingerprints.values()))
    return TrustAnchors(tuple(certs), store, ids, gen, limits, file_names, fingerprints)


def _store_for(
    cacertfile: str | None, certs: list[x509.Certificate], anchors: frozenset[str]
) -> Store | None:
    """A ``Store`` of ``certs``: the one built last for this listener when it holds the same anchors (by
    SHA-256), else a new one. Paths the verifier accepted are kept under the Store object
    (``certauth.verify.verified_paths``), so a rebuild that changed no anchor (a change feed bump for another
    row, the feed's ``MAX_AGE``, a CA row's domains or name edited) keeps them; a changed anchor set, a CA
    distrusted or added, makes a new Store, under which every chain is verified again."""
    if not certs:
        return None  # cryptography refuses an empty Store
    with _lock:
        kept = _stores.get(cacertfile)
        if kept is not None and kept[0] == anchors:
            return kept[1]
    store = Store(certs)
    with _lock:
        _stores[cacertfile] = (anchors, store)
    return store


def trust_anchors(cacertfile: str | None) -> TrustAnchors:
    """The anchors for a listener whose ``tls.cacertfile`` is ``cacertfile`` (cached, see the module doc)."""
    now = time.monotonic()
    feed = changefeed.generation()  # None: on an event loop with a stale feed; CACHE_TTL bounds it there
    with _lock:
        gen = _generation
        hit = _cache.get(cacertfile)
        if hit is not None and hit[0] == gen:
            if (feed is not None and hit[1] == feed) or (feed is None and now - hit[2] < CACHE_TTL):
                return hit[3]
    changefeed.require_database()
    anchors = _build(cacertfile, gen)
    with _lock:
        if _generation == gen:
            _cache[cacertfile] = (gen, feed, now, anchors)
    return anchors
