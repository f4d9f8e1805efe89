"""Is this certificate revoked or on hold, and is its CA's CRL fresh? Acceptances held under the change feed.

Spec: RFC 5280 §3.3 and §5.3.1 (revocation and its reasons; certificateHold is a temporary revocation).
Sources, as DESIGN §5 lists them: our own status of the certificate (``Certificate.status``, set by the admin
or the ``pki`` command; it also covers certificates of imported CAs that an operator revoked by hand) and the
serials listed in the last good CRL of the issuing CA (``RevokedSerial``, filled by the CRL jobs).

A login asks three times (handshake, EXTERNAL, bind). The first answer that accepts a path is held in memory
(issue 17 §1) under ``accounts.changefeed``: any change to certificates, CRL entries, CRL sources or CAs, in
any process, bumps the feed's counter in its own transaction, and each process reads that counter at most
every ``changefeed.POLL_INTERVAL`` seconds, so a revocation reaches every process's logins within that bound
(and this process's at once). An acceptance is also dropped when a CRL of the path turns stale by the clock
(its nextUpdate plus grace), and when the feed cannot be read the database is asked (and fails as before).

:func:`path_revocation_problem` is what a login asks, for every certificate of the verified path below
its anchor (RFC 5280 §6.1.3 (a)(3): the leaf against its issuer's CRL, each intermediate the client sent
against its own issuer's). One SQL statement of four ``EXISTS`` (a certificate of the path revoked or held
here; a (CA, serial) pair of the path listed in a CRL; a CA of the path whose sources hold no fresh CRL; a CA
not ours without any CRL) answers the common case, nothing against the path, and only a hit runs the ORM
lookups that word the reason. Building the ORM queries was most of a login's revocation cost (a py-spy
profile put the checks at a quarter of the server's Python time). Refusals are not cached: each reads the
rows as they are. An intermediate that is not a ``CertificateAuthority`` row yet (``certauth.learning`` adds
it off the login path) has no CRL yet: like a source not tried yet, it is not refused, unless
``[xmppauth] require_revocation`` is true, which refuses a path with any CA (not ours) that holds no CRL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from django.db import connection
from django.db.models import Q

from accounts import changefeed
from certauth import crlpolicy, pki
from certauth.models import Certificate, CertificateAuthority, CrlSource, RevocationReason, RevokedSerial
from certauth.pki import CertFacts
from xmppauth import fastsql

logger = logging.getLogger(__name__)


def _day(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment else "(date unknown)"


def _minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _reason_label(reason: str) -> str:
    """The RFC 5280 §5.3.1 name (``keyCompromise``) of a stored reason value."""
    if not reason:
        return ""
    try:
        return f" {RevocationReason(reason).label}"
    except ValueError:
        return f" {reason}"


class _Identified(Protocol):
    """What :func:`revocation_status` reads of a certificate (``CertFacts`` and ``PathLink`` have it)."""

    @property
    def fingerprint_sha256(self) -> str: ...

    @property
    def serial(self) -> str: ...


def revocation_status(facts: _Identified, issuer_ca_row: CertificateAuthority | int | None) -> str | None:
    """``None`` when the certificate is not known to be revoked or held, else the human reason.

    ``issuer_ca_row`` is the issuing CA's row (or its primary key) when the issuer is one; without it only our
    own status of the certificate is checked. ``facts.serial`` is lower hex without leading zeros, the form
    ``RevokedSerial.serial`` and ``Certificate.serial`` are stored in.
    """
    row = (
        Certificate.objects.filter(fingerprint_sha256=facts.fingerprint_sha256)
        .values_list("status", "revoked_at", "revocation_reason")
        .first()
    )
    if row is not None:
        status, revoked_at, reason = row
        if status == Certificate.Status.REVOKED:
            return f"revoked {_day(revoked_at)}{_reason_label(reason)}"
        if status == Certificate.Status.ON_HOLD:
            return f"on hold since {_day(revoked_at)}"  # RFC 5280 §5.3.1 certificateHold
    if issuer_ca_row is None:
        return None
    ca_id = issuer_ca_row if isinstance(issuer_ca_row, int) else issuer_ca_row.pk
    listed = (
        RevokedSerial.objects.filter(ca_id=ca_id, serial=facts.serial)
        .order_by("revoked_at")
        .values_list("revoked_at", "reason", "source__location")
        .first()
    )
    if listed is not None:
        revoked_at, reason, location = listed
        if reason == RevocationReason.CERTIFICATE_HOLD:
            return f"on hold since {_day(revoked_at)} (CRL {location})"
        return f"revoked {_day(revoked_at)}{_reason_label(reason)} (CRL {location})"
    return None


def crl_staleness(
    issuer_ca_row: CertificateAuthority | int | None,
    *,
    now: datetime,
    grace: timedelta,
    fail_open: bool = False,
) -> str | None:
    """``None`` when the issuer's revocation information is usable, else why its certificates are refused.

    DESIGN §5 (fail closed), rules per source in ``certauth.crlpolicy``: the CA's certificates are refused
    when at least one of its CRL sources is stale (past nextUpdate (RFC 5280 §5.1.2.5) plus ``grace``, or
    never fetched and failing for longer than ``grace``) and none holds a CRL that is still fresh, unless the
    config (``fail_open``) or every stale source chose fail-open. A CA without CRL sources, or whose sources
    were not tried yet, is not refused here (the admin shows those); one fresh source is enough.
    """
    if issuer_ca_row is None:
        return None
    ca_id = issuer_ca_row if isinstance(issuer_ca_row, int) else issuer_ca_row.pk
    sources = list(
        CrlSource.objects.filter(ca_id=ca_id).values_list(
            "location", "next_update", "last_success_at", "failing_since", "fail_open", "ca__name"
        )
    )
    stale: list[tuple[crlpolicy.Staleness, str, bool, str]] = []
    for location, next_update, last_success_at, failing_since, source_fail_open, ca_name in sources:
        has_crl = last_success_at is not None or next_update is not None
        if crlpolicy.is_fresh(now, next_update=next_update, has_crl=has_crl, grace=grace):
            return None
        verdict = crlpolicy.staleness(
            now, next_update=next_update, failing_since=None if has_crl else failing_since, grace=grace
        )
        if verdict is not None:
            stale.append((verdict, location, source_fail_open, ca_name))
    if not stale:
        return None
    if fail_open or all(source_fail_open for _, _, source_fail_open, _ in stale):
        logger.warning("CRLs of CA #%s are stale; accepting anyway (fail-open)", ca_id)
        return None
    verdict, location, _, ca_name = max(stale, key=lambda item: item[0].since)
    if verdict.what == crlpolicy.NEXT_UPDATE:
        why = f"outdated since {_minute(verdict.since)} (nextUpdate)"
    else:
        why = f"never fetched, failing since {_minute(verdict.since)}"
    return f"revocation status unknown: CRL {location} {why}: CRL of CA {ca_name} stale, fail closed"


def revocation_problem(
    facts: CertFacts,
    issuer_ca_id: int | None,
    *,
    now: datetime,
    grace: timedelta,
    fail_open: bool = False,
) -> str | None:
    """``revocation_status(...) or crl_staleness(...)`` for one certificate and its issuer row: the path
    check below on a path of one link (what a caller without the whole path asks)."""
    link = PathLink(
        facts.fingerprint_sha256,
        facts.serial,
        facts.subject,
        facts.issuer if issuer_ca_id is not None else None,
        issuer_ca_id,
        is_leaf=True,
    )
    return path_revocation_problem([link], now=now, grace=grace, fail_open=fail_open)


# --- every certificate on the verified path (issue 11 point 3) --------------------------------------------


def _formatted_subject(cert: x509.Certificate, fingerprint: str | None) -> str:
    return cert.subject.rfc4514_string()


@dataclass(frozen=True)
class PathLink:
    """One certificate of a verified path below its trust anchor, with the CA row that issued it.

    RFC 5280 §6.1.3 (a)(3): each certificate of the path is checked for revocation against its own issuer's
    CRL. ``issuer_subject`` is None when the path has no issuer for it (a self-signed leaf, or verification
    off); ``issuer_ca_id`` is None when the issuer is not a ``CertificateAuthority`` row (yet).
    """

    fingerprint_sha256: str
    serial: str  # lower hex, no leading zeros (as RevokedSerial.serial)
    subject: str
    issuer_subject: str | None
    issuer_ca_id: int | None
    is_leaf: bool
    issuer_fingerprint: str | None = None  # to find the issuer's row once it has one (a learnt intermediate)

    @classmethod
    def of(
        cls,
        cert: x509.Certificate,
        issuer: x509.Certificate | None,
        issuer_ca_id: int | None,
        *,
        is_leaf: bool,
        fingerprint: str | None = None,
        issuer_fingerprint: str | None = None,
        subject_of: Callable[[x509.Certificate, str], str] | None = None,
    ) -> PathLink:
        """``fingerprint`` / ``issuer_fingerprint``: the SHA-256 fingerprints when the caller has them already
        (issue 17 §6: a login's path is hashed once); computed here otherwise. ``subject_of(cert,
        fingerprint)``: a certificate's subject as RFC 4514 text, when the caller holds it (a CA's, the
        same at every login); else formatted here."""
        if issuer is not None and issuer_fingerprint is None:
            issuer_fingerprint = pki.fingerprint_sha256(issuer)
        fingerprint = fingerprint or pki.fingerprint_sha256(cert)
        subject_of = subject_of or _formatted_subject
        return cls(
            fingerprint_sha256=fingerprint,
            serial=format(cert.serial_number, "x"),
            subject=subject_of(cert, fingerprint),
            issuer_subject=subject_of(issuer, issuer_fingerprint) if issuer is not None else None,
            issuer_ca_id=issuer_ca_id,
            is_leaf=is_leaf,
            issuer_fingerprint=issuer_fingerprint if issuer is not None else None,
        )

    def with_issuer_row(self, ca_ids: dict[str, int]) -> PathLink:
        """This link, with its issuer's row id when the issuer became a row since (else itself)."""
        if self.issuer_ca_id is not None or self.issuer_fingerprint is None:
            return self
        ca_id = ca_ids.get(self.issuer_fingerprint)
        return self if ca_id is None else replace(self, issuer_ca_id=ca_id)


def _path_flags_sql(links: int, require_revocation: bool) -> str:
    column, table = fastsql.column, fastsql.table
    marks = ", ".join(["%s"] * links)
    sources, source_ca = table(CrlSource), column(CrlSource, "ca")
    last_success, next_update = column(CrlSource, "last_success_at"), column(CrlSource, "next_update")
    failing = column(CrlSource, "failing_since")

    def holds_crl(alias: str) -> str:  # crlpolicy.is_fresh's has_crl
        return f"({alias}.{last_success} IS NOT NULL OR {alias}.{next_update} IS NOT NULL)"

    pairs = " OR ".join(
        [f"({column(RevokedSerial, 'ca')} = %s AND {column(RevokedSerial, 'serial')} = %s)"] * links
    )
    ca_pk = column(CertificateAuthority, "id")
    # a CA on the path, not ours, of which no source holds a CRL (asked only under require_revocation)
    without_crl = (
        f"EXISTS (SELECT 1 FROM {table(CertificateAuthority)} c WHERE c.{ca_pk} IN ({marks})"
        f" AND c.{column(CertificateAuthority, 'encrypted_private_key')} IS NULL"
        f" AND NOT EXISTS (SELECT 1 FROM {sources} h WHERE h.{source_ca} = c.{ca_pk} AND {holds_crl('h')}))"
        if require_revocation
        else "NULL"
    )
    return (
        f"SELECT EXISTS (SELECT 1 FROM {table(Certificate)}"
        f" WHERE {column(Certificate, 'fingerprint_sha256')} IN ({marks})"
        f" AND {column(Certificate, 'status')} IN (%s, %s)),"
        f" EXISTS (SELECT 1 FROM {table(RevokedSerial)} WHERE {pairs}),"
        # a CA on the path with sources of which none holds a fresh CRL: crl_staleness must decide
        f" EXISTS (SELECT 1 FROM {sources} s WHERE s.{source_ca} IN ({marks})"
        f" AND NOT EXISTS (SELECT 1 FROM {sources} f WHERE f.{source_ca} = s.{source_ca} AND {holds_crl('f')}"
        f" AND (f.{next_update} IS NULL OR f.{next_update} >= %s))),"
        f" {without_crl},"
        # the earliest date from which a source of the path may turn stale by the clock (crlpolicy.staleness:
        # nextUpdate or failing_since, plus grace): how long an acceptance may be held (_accepted_until)
        f" (SELECT MIN(n.{next_update}) FROM {sources} n WHERE n.{source_ca} IN ({marks})"
        f" AND n.{next_update} >= %s),"
        f" (SELECT MIN(g.{failing}) FROM {sources} g WHERE g.{source_ca} IN ({marks}) AND g.{failing} >= %s)"
    )


@dataclass(frozen=True)
class _Flags:
    held_here: bool  # a certificate of the path revoked or held here
    listed: bool  # a (CA, serial) pair of the path listed in a CRL
    maybe_stale: bool  # a CA whose sources hold no fresh CRL
    without_crl: bool  # a CA not ours without any CRL (asked only under require_revocation)
    next_update: datetime | None  # the earliest nextUpdate of the path's sources not past grace yet
    failing_since: datetime | None  # the earliest failing_since of those sources not past grace yet


def _moment(value: object) -> datetime | None:
    """A datetime column read by raw SQL (SQLite gives text, in UTC), as an aware datetime."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _path_flags(links: Sequence[PathLink], fresh_after: datetime, require_revocation: bool) -> _Flags:
    """One statement for the whole path (see :class:`_Flags`). A CA id of None never matches (``= NULL``,
    ``IN (NULL)``)."""
    count = len(links)
    key = f"revocation.path_flags:{count}:{require_revocation}"
    sql = fastsql.statement(key, lambda: _path_flags_sql(count, require_revocation))
    held = (Certificate.Status.REVOKED.value, Certificate.Status.ON_HOLD.value)
    ca_ids = [link.issuer_ca_id for link in links]
    pairs = [value for link in links for value in (link.issuer_ca_id, link.serial)]
    fresh = connection.ops.adapt_datetimefield_value(fresh_after)
    params = [*(link.fingerprint_sha256 for link in links), *held, *pairs, *ca_ids, fresh]
    if require_revocation:
        params += ca_ids
    params += [*ca_ids, fresh, *ca_ids, fresh]
    (row,) = fastsql.fetch_all(sql, params)  # a SELECT without FROM: one row
    held_here, listed, maybe_stale, without_crl, next_update, failing_since = row
    return _Flags(
        bool(held_here),
        bool(listed),
        bool(maybe_stale),
        bool(without_crl),
        _moment(next_update),
        _moment(failing_since),
    )


def _what(link: PathLink) -> str:
    """Who the reason is about: nothing for the leaf (the reason follows "certificate"), else the CA."""
    return "" if link.is_leaf else f"chain through intermediate CA {link.subject}, which is "


def _revoked_on_path(links: Sequence[PathLink]) -> str | None:
    for link in links:
        reason = revocation_status(link, link.issuer_ca_id)
        if reason:
            return f"{_what(link)}{reason}"
    return None


def _without_crl(links: Sequence[PathLink]) -> str | None:
    """require_revocation: the first CA on the path that has no usable CRL, worded; None when all have one."""
    for link in links:
        if link.issuer_subject is None:
            continue  # no CA on the path for it (self-signed): our own status is its revocation
        if link.issuer_ca_id is None:
            return (
                f"revocation required (require_revocation) and CA {link.issuer_subject} is not known yet:"
                " no CRL of it held"
            )
    ids = list(dict.fromkeys(link.issuer_ca_id for link in links if link.issuer_ca_id is not None))
    holding = set(
        CrlSource.objects.filter(ca_id__in=ids)
        .filter(Q(last_success_at__isnull=False) | Q(next_update__isnull=False))
        .values_list("ca_id", flat=True)
    )
    for pk, name in CertificateAuthority.objects.filter(pk__in=ids, encrypted_private_key=None).values_list(
        "pk", "name"
    ):
        if pk not in holding:
            return f"revocation required (require_revocation) and CA {name} has no CRL"
    return None


def path_revocation_problem(
    links: Sequence[PathLink],
    *,
    now: datetime,
    grace: timedelta,
    fail_open: bool = False,
    require_revocation: bool = False,
) -> str | None:
    """``None`` when no certificate of the path is revoked or held and every CA on it has usable revocation
    information; else the human reason (for the AuthEvent and the log).

    Checked for each link: our own ``Certificate.status``, the issuer's CRL entries, the issuer's CRL
    freshness (``crl_staleness``: past nextUpdate plus grace, fail closed); with ``require_revocation``, an
    issuer that is not ours and holds no CRL at all (or is not a row yet, e.g. an intermediate not learnt
    yet) refuses too. One statement answers the common case; only a hit runs the ORM lookups that word it.

    An acceptance is held in memory (:data:`_accepted`) under ``accounts.changefeed``'s generation, so a
    revocation, a hold, a new CRL or a CA change anywhere is seen within ``changefeed.POLL_INTERVAL``; and
    only until the earliest time a CRL of the path turns stale by the clock alone (:func:`_accepted_until`).
    Refusals are never held: each is asked again.
    """
    if not links:
        return None
    key = (tuple(links), grace, fail_open, require_revocation)
    gen = changefeed.generation()  # raises when the feed cannot be read: the query below would too
    held = _accepted.get(key, gen)
    if held is not None and held[0] <= now < held[1]:
        return None
    changefeed.require_database()
    flags = _path_flags(links, now - grace, require_revocation)
    problem = _problem(
        links, flags, now=now, grace=grace, fail_open=fail_open, require_revocation=require_revocation
    )
    if problem is None and gen is not None:
        _accepted.put(key, (now, _accepted_until(flags, now, grace)), gen)
    return problem


# Acceptances of whole paths: a path (its certificates, serials and issuer rows) and the rules' options ->
# (checked at, good until). LRU-bounded; one entry per certificate that logs in often.
_accepted = changefeed.FeedCache("revocation.accepted", 8192)


def _accepted_until(flags: _Flags, now: datetime, grace: timedelta) -> datetime:
    """Until when an acceptance of this path may be reused by the clock alone: the earliest moment a CRL
    source of a CA on the path could turn stale (``crlpolicy.staleness``: its nextUpdate plus grace, or for
    a source without a CRL its failing_since plus grace), at most ``changefeed.MAX_AGE`` from ``now`` (the
    feed's own bound for every cache). A change to the rows themselves (a new CRL, a source failing) bumps
    the change feed instead."""
    until = now + timedelta(seconds=changefeed.MAX_AGE)
    for moment in (flags.next_update, flags.failing_since):
        if moment is not None:
            until = min(until, moment + grace)
    return until


def _problem(
    links: Sequence[PathLink],
    flags: _Flags,
    *,
    now: datetime,
    grace: timedelta,
    fail_open: bool,
    require_revocation: bool,
) -> str | None:
    """The verdict of :func:`path_revocation_problem` from the path's flags (the ORM words a hit)."""
    if flags.held_here or flags.listed:
        reason = _revoked_on_path(links)
        if reason:
            return reason
    if flags.maybe_stale:
        for ca_id in dict.fromkeys(link.issuer_ca_id for link in links if link.issuer_ca_id is not None):
            reason = crl_staleness(ca_id, now=now, grace=grace, fail_open=fail_open)
            if reason:
                return reason
    unknown_issuer = any(link.issuer_subject is not None and link.issuer_ca_id is None for link in links)
    if require_revocation and (flags.without_crl or unknown_issuer):
        return _without_crl(links)
    return None


def subordinate_cas_listed(ca: CertificateAuthority, serials: Iterable[str]) -> list[CertificateAuthority]:
    """The CA rows (learnt intermediates, imported ones) that ``ca`` issued and whose serial ``serials``
    lists: revoking one revokes every certificate below it (RFC 5280 §6.1.3 (a)(3)). CA rows are few, so
    their certificates are read here, off the login path (the CRL refresh)."""
    wanted = {serial.lower() for serial in serials}
    if not wanted:
        return []
    try:
        issuer = pki.load_certificate(ca.certificate_pem.encode())
    except ValueError:
        return []
    found: list[CertificateAuthority] = []
    for row in CertificateAuthority.objects.exclude(pk=ca.pk):
        try:
            cert = pki.load_certificate(row.certificate_pem.encode())
        except ValueError:
            continue
        if format(cert.serial_number, "x") not in wanted or cert.issuer != issuer.subject:
            continue
        try:
            cert.verify_directly_issued_by(issuer)  # the same name and serial under another key is not it
        except (InvalidSignature, ValueError, TypeError):
            continue
        found.append(row)
    return found
