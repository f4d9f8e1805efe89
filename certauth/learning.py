"""What verified client chains teach us, learnt off the login path: intermediate CAs and distribution points.

Specs: RFC 5280 §6.1.3 (a)(3) (every certificate of the path is checked against its issuer's revocation
information, so an intermediate the client sends needs a ``CertificateAuthority`` row to hold its CRL) and
§4.2.1.13 (a CRL distribution point in a certificate names the CRL of that certificate's *issuer*).

After a chain verified at a login, :func:`offer` hands it to one background thread per process (on SQLite,
which allows one writer at a time, the login's own thread does it after its decision), which

- makes each intermediate of the path that is not a row yet a row with ``origin = learned`` and
  ``trusted_for_client_auth = False`` (it never becomes a trust anchor: the path still has to reach one);
- adds each http(s) distribution point named in a certificate of the path (leaf or intermediate) as a
  ``CrlSource`` of that certificate's issuer row (never of our own CAs: their revocations are
  ``Certificate.status``). The normal jobs (``certauth.tasks``) fetch new sources: they are unscheduled.

A login never waits for this. Bounded: only verified chains are offered; each intermediate fingerprint and
each (issuer, URL) pair is offered once per process (a set capped at ``SEEN_LIMIT``; a failed attempt is
forgotten so a later login offers it again); the queue holds ``QUEUE_SIZE`` chains and a full queue drops
the offer (the next login offers it again). While an intermediate is not a row, its CRL is unknown: logins
through it are treated as "sources not tried yet" (accepted) unless ``require_revocation`` is true.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.db import IntegrityError, connection, transaction

from accounts import changefeed
from certauth import crlsources, pki
from certauth.models import CertificateAuthority, CrlSource
from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256
SEEN_LIMIT = 50_000

# True: learn in the offering thread after its decision; None: only on SQLite (see _learn_inline). The test
# suite sets True for tests that run inside one transaction, which a background thread cannot see into.
INLINE: bool | None = None

_queue: queue.Queue[tuple[tuple[bytes, ...], frozenset[object]]] = queue.Queue(QUEUE_SIZE)
_seen: set[object] = set()
# Paths (their fingerprints, and which of them are known CA rows) whose every key is in _seen: a returning
# client's chain is answered from here, without reading its distribution points again (issue 17 §6).
# Emptied whenever _seen loses anything, so a key to offer again is always looked for.
_taught: set[tuple[tuple[str, ...], tuple[bool, ...]]] = set()
_lock = threading.Lock()
_worker: threading.Thread | None = None


@dataclass
class Learnt:
    """What one :func:`learn_path` call added."""

    cas: list[CertificateAuthority] = field(default_factory=list)
    sources: list[CrlSource] = field(default_factory=list)


def _keys(
    path: Sequence[x509.Certificate],
    known_ca: set[str] | dict[str, int],
    fingerprints: Sequence[str] | None = None,
) -> set[object]:
    """What this path could teach that this process has not offered yet (an empty set: nothing)."""
    keys: set[object] = set()
    if fingerprints is None:
        fingerprints = [pki.fingerprint_sha256(cert) for cert in path]
    for fingerprint in fingerprints[1:-1]:
        if fingerprint not in known_ca:
            keys.add(("ca", fingerprint))
    intermediates = set(fingerprints[1:-1])
    for cert, issuer_fingerprint in zip(path[:-1], fingerprints[1:], strict=True):
        if issuer_fingerprint not in known_ca and issuer_fingerprint not in intermediates:
            continue  # an anchor that is no row (yet): nothing to attach to; offered once it is one
        for url in pki.crl_distribution_urls(cert):
            keys.add(("cdp", issuer_fingerprint, url))
    return keys - _seen


def offer(
    path: Sequence[x509.Certificate],
    known_ca: set[str] | dict[str, int],
    fingerprints: Sequence[str] | None = None,
) -> bool:
    """Queue a verified ``path`` (leaf first, anchor last) when it may teach something; never blocks.

    ``known_ca``: fingerprints of the CA rows the caller knows (``TrustAnchors.ca_ids``); ``fingerprints``:
    the path's SHA-256 fingerprints, in order, when the caller has them (else computed). Returns whether the
    path was queued.
    """
    if len(path) < 2:
        return False
    if fingerprints is None:
        fingerprints = [pki.fingerprint_sha256(cert) for cert in path]
    elif len(fingerprints) != len(path):
        raise ValueError("one fingerprint per certificate of the path")
    taught = (tuple(fingerprints), tuple(fingerprint in known_ca for fingerprint in fingerprints))
    if taught in _taught:
        return False
    keys = _keys(path, known_ca, fingerprints)
    with _lock:
        keys -= _seen
        if len(_taught) >= SEEN_LIMIT:
            _taught.clear()
        if not keys:
            _taught.add(taught)
            return False
        changefeed.require_database()  # something to learn: never under changefeed.memory_only (the loop)
        if len(_seen) >= SEEN_LIMIT:
            _forget_seen()  # the database is the real record; offering again only repeats idempotent work
        _seen.update(keys)
        _taught.add(taught)  # every key of it is offered now (a failure forgets this with the keys)
    if INLINE or (INLINE is None and connection.vendor == "sqlite"):
        _learn_inline(path, keys)
        return True
    ders = tuple(cert.public_bytes(Encoding.DER) for cert in path)
    try:
        _queue.put_nowait((ders, frozenset(keys)))
    except queue.Full:
        with _lock:
            _forget_seen(keys)
        logger.debug("learning queue full: chain of %s not offered", path[0].subject.rfc4514_string())
        return False
    _ensure_worker()
    return True


def _ensure_worker() -> None:
    global _worker
    with _lock:
        if _worker is not None and _worker.is_alive():
            return
        _worker = threading.Thread(target=_run, name="certauth-learning", daemon=True)
        _worker.start()


def _run() -> None:
    while True:
        ders, keys = _queue.get()
        try:
            with_fresh_connections(_learn_atomically, [pki.load_certificate(der) for der in ders])
        except Exception:
            logger.exception("learning from a client chain failed; it will be offered again")
            with _lock:
                _forget_seen(keys)
        finally:
            _queue.task_done()


def _learn_atomically(path: Sequence[x509.Certificate]) -> Learnt:
    with transaction.atomic():  # the rows of one chain all or none
        return learn_path(path)


def _learn_inline(path: Sequence[x509.Certificate], keys: set[object]) -> None:
    """SQLite: one writer at a time, and in a shared in-memory database (the tests') a reader beside a
    writer fails at once instead of waiting. There the caller's thread learns, once per new intermediate or
    distribution point, after its decision; a failure is logged and forgotten, never the login's."""
    try:
        _learn_atomically(path)
    except Exception:
        logger.exception("learning from a client chain failed; it will be offered again")
        with _lock:
            _forget_seen(keys)


def wait_idle(timeout: float = 10.0) -> bool:
    """Whether every offered chain was processed within ``timeout`` seconds (for tests and benches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _queue.unfinished_tasks == 0:
            return True
        time.sleep(0.01)
    return _queue.unfinished_tasks == 0


def forget() -> None:
    """Forget what this process offered (tests: a new database holds none of it)."""
    with _lock:
        _forget_seen()


def _forget_seen(keys: set[object] | frozenset[object] | None = None) -> None:
    """Drop ``keys`` (None: all) from what was offered, and every path found to teach nothing new. Under
    ``_lock``."""
    if keys is None:
        _seen.clear()
    else:
        _seen.difference_update(keys)
    _taught.clear()


def _learned_name(cert: x509.Certificate, fingerprint: str) -> str:
    facts = pki.cert_facts(cert)
    label = facts.common_name or facts.subject
    return f"{label[:170]} (learnt {fingerprint[:16]})"


def _learn_ca(cert: x509.Certificate, fingerprint: str, result: Learnt) -> CertificateAuthority:
    existing = CertificateAuthority.objects.filter(fingerprint_sha256=fingerprint).first()
    if existing is not None:
        return existing
    facts = pki.cert_facts(cert)
    try:
        with transaction.atomic():
            ca = CertificateAuthority.objects.create(
                name=_learned_name(cert, fingerprint),
                origin=CertificateAuthority.Origin.LEARNED,
                trusted_for_client_auth=False,  # an intermediate is checked, never an anchor
                certificate_pem=pki.certificate_to_pem(cert),
                subject=facts.subject,
                fingerprint_sha256=fingerprint,
                not_before=facts.not_before,
                not_after=facts.not_after,
            )
    except IntegrityError:  # another process learnt it first
        return CertificateAuthority.objects.get(fingerprint_sha256=fingerprint)
    logger.info("intermediate CA %s learnt from a verified client chain (CA #%s)", facts.subject, ca.pk)
    result.cas.append(ca)
    return ca


def learn_path(path: Sequence[x509.Certificate]) -> Learnt:
    """Rows for the intermediates of a verified ``path`` and sources for its distribution points (see the
    module docstring); idempotent. Runs in the learning thread; tests call it directly."""
    result = Learnt()
    fingerprints = [pki.fingerprint_sha256(cert) for cert in path]
    known = CertificateAuthority.objects.filter(fingerprint_sha256__in=fingerprints)
    rows: dict[str, CertificateAuthority] = {ca.fingerprint_sha256: ca for ca in known}
    for cert, fingerprint in zip(path[1:-1], fingerprints[1:-1], strict=True):
        if fingerprint not in rows:
            rows[fingerprint] = _learn_ca(cert, fingerprint, result)
    for cert, issuer_fingerprint in zip(path[:-1], fingerprints[1:], strict=True):
        issuer = rows.get(issuer_fingerprint)
        if issuer is None or issuer.is_ours:
            continue  # RFC 5280 §4.2.1.13: the CDP is the issuer's; ours publish Certificate.status
        for url in pki.crl_distribution_urls(cert):
            source = crlsources.add_source(issuer, CrlSource.Kind.DISTRIBUTION_POINT, url)
            if source is not None:
                result.sources.append(source)
    return result
