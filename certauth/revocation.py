"""Is this certificate revoked or on hold, and is its CA's CRL fresh? Asked of the database every login.

Spec: RFC 5280 §3.3 and §5.3.1 (revocation and its reasons; certificateHold is a temporary revocation).
Sources, as DESIGN §5 lists them: our own status of the certificate (``Certificate.status``, set by the admin
or the ``pki`` command; it also covers certificates of imported CAs that an operator revoked by hand) and the
serials listed in the last good CRL of the issuing CA (``RevokedSerial``, filled by the CRL jobs).

A cache here could let a revoked certificate in; the two lookups hit the unique fingerprint index and the
(ca, serial) index. Measured on the development box with SQLite and 10 000 rows in each table: about 0.4 ms
for both (``bench/revocation.py``), called twice per login (handshake and EXTERNAL).

:func:`revocation_problem` is what a login asks: one SQL statement of three ``EXISTS`` (revoked or held
here, listed in a CRL, any CRL source) answers the common case, nothing against the certificate, and only a
hit runs the ORM lookups that word the reason. Building the ORM queries was most of a login's revocation
cost (a py-spy profile put the checks at a quarter of the server's Python time). Nothing is cached: every
call reads the rows as they are.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection

from certauth import crlpolicy
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


def revocation_status(
    facts: CertFacts, issuer_ca_row: CertificateAuthority | int | None
) -> str | None:
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


def _quick_flags_sql() -> str:
    column, table = fastsql.column, fastsql.table
    source_ca, next_update = column(CrlSource, "ca"), column(CrlSource, "next_update")
    return (
        f"SELECT EXISTS (SELECT 1 FROM {table(Certificate)}"
        f" WHERE {column(Certificate, 'fingerprint_sha256')} = %s"
        f" AND {column(Certificate, 'status')} IN (%s, %s)),"
        f" EXISTS (SELECT 1 FROM {table(RevokedSerial)}"
        f" WHERE {column(RevokedSerial, 'ca')} = %s AND {column(RevokedSerial, 'serial')} = %s),"
        f" EXISTS (SELECT 1 FROM {table(CrlSource)} WHERE {source_ca} = %s),"
        f" EXISTS (SELECT 1 FROM {table(CrlSource)} WHERE {source_ca} = %s"
        f" AND ({column(CrlSource, 'last_success_at')} IS NOT NULL OR {next_update} IS NOT NULL)"
        f" AND ({next_update} IS NULL OR {next_update} >= %s))"
    )


def _quick_flags(
    fingerprint: str, ca_id: int | None, serial: str, fresh_after: datetime
) -> tuple[bool, bool, bool, bool]:
    """One statement: (revoked or held here, listed in a CRL of ``ca_id``, ``ca_id`` has CRL sources, one of
    them holds a CRL whose nextUpdate is absent or not before ``fresh_after``: ``crlpolicy.is_fresh``)."""
    sql = fastsql.statement("revocation.quick_flags", _quick_flags_sql)
    held = (Certificate.Status.REVOKED.value, Certificate.Status.ON_HOLD.value)
    fresh = connection.ops.adapt_datetimefield_value(fresh_after)
    with connection.cursor() as cursor:
        cursor.execute(sql, [fingerprint, *held, ca_id, serial, ca_id, ca_id, fresh])
        held_here, listed, has_sources, has_fresh = cursor.fetchone()
    return bool(held_here), bool(listed), bool(has_sources), bool(has_fresh)


def revocation_problem(
    facts: CertFacts,
    issuer_ca_id: int | None,
    *,
    now: datetime,
    grace: timedelta,
    fail_open: bool = False,
) -> str | None:
    """``revocation_status(...) or crl_staleness(...)``, with one statement when neither has anything to say.

    A ``ca_id`` of None never matches (``= NULL``), as both functions skip the CRL checks without an issuer
    row. ``crl_staleness`` refuses nothing when the CA has no source or one fresh source, so only a CA whose
    sources are all not fresh runs it.
    """
    held_here, listed, has_sources, has_fresh = _quick_flags(
        facts.fingerprint_sha256, issuer_ca_id, facts.serial, now - grace
    )
    if held_here or listed:
        reason = revocation_status(facts, issuer_ca_id)
        if reason:
            return reason
    if not has_sources or has_fresh:
        return None
    return crl_staleness(issuer_ca_id, now=now, grace=grace, fail_open=fail_open)
