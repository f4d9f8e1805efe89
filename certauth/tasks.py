"""Periodic certificate jobs (Celery tasks; in-process under runxmpp when there is no Redis)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.mail import mail_admins
from django.utils import timezone

from certauth import crlfetch, crlsources, services
from certauth.models import AuthEvent, Certificate, CertificateAuthority, CrlSource
from xmppauth import limits

logger = logging.getLogger(__name__)


@shared_task
def republish_our_crls() -> int:
    """Re-sign our CAs' CRLs before they go stale: at half their validity (services.CRL_VALIDITY)."""
    due_before = timezone.now() - services.CRL_VALIDITY / 2
    republished = 0
    for ca in CertificateAuthority.objects.exclude(encrypted_private_key=None):
        if ca.crl_updated_at is None or ca.crl_updated_at <= due_before:
            services.publish_crl(ca)
            republished += 1
    return republished


# --- CRLs of external CAs (certauth.crlsources, certauth.crlfetch) ----------------------------------------

SYNC_INTERVAL = 3600.0  # seconds between two discoveries of sources in one process
CLAIM_SECONDS = 300  # a source being fetched is not picked again by an overlapping run for this long
_last_sync: float | None = None


def _sync_if_due() -> None:
    global _last_sync
    if _last_sync is None or time.monotonic() - _last_sync >= SYNC_INTERVAL:
        _last_sync = time.monotonic()
        crlsources.sync_crl_sources()


def _claim(source: CrlSource) -> bool:
    """Move the source's next refresh out of reach of an overlapping run; False if another run took it."""
    claimed_until = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
    return bool(
        CrlSource.objects.filter(pk=source.pk, next_refresh_at=source.next_refresh_at).update(
            next_refresh_at=claimed_until
        )
    )


@shared_task
def refresh_crl_source(source_id: int) -> dict:
    """Fetch one source now (admin "refresh now", or a worker); returns the outcome as a dict."""
    source = CrlSource.objects.filter(pk=source_id).first()
    if source is None:
        return {"source": source_id, "ok": False, "message": "no such CRL source"}
    outcome = crlfetch.refresh_source(source)
    return {"source": source_id, "ok": outcome.ok, "message": outcome.message, "entries": outcome.entries}


@shared_task
def refresh_due_crl_sources() -> int:
    """Discover sources (hourly), mark stale ones, and fetch every source whose next refresh has come."""
    _sync_if_due()
    crlfetch.mark_stale_sources()
    refreshed = 0
    for source in crlfetch.due_sources():
        if _claim(source):
            crlfetch.refresh_source(source)
            refreshed += 1
    return refreshed


@shared_task
def purge_auth_events() -> int:
    """Delete the ``AuthEvent`` rows older than ``[xmppauth] auth_event_retention_days`` (hourly, beat)."""
    horizon = timezone.now() - timedelta(days=limits.option("auth_event_retention_days"))
    deleted, _ = AuthEvent.objects.filter(time__lt=horizon).delete()
    if deleted:
        logger.info("purged %d auth event(s) older than %s", deleted, horizon.isoformat(timespec="seconds"))
    return deleted


# --- Certificates about to expire (issue 18 point 4) -----------------------------------------------------

WARNING_REPEAT = timedelta(days=1)  # a certificate is mailed about at most once within this
MAIL_LIST_LIMIT = 500  # certificates named in one mail; the rest are counted (the dashboard lists them all)


def _expiry_line(row: Certificate, now: datetime) -> str:
    owner = row.account.jid if row.account is not None else (row.subject or "no subject")
    days = (row.not_after - now).days
    return (
        f"- {owner}: serial {row.serial}, expires {row.not_after:%Y-%m-%d %H:%M} UTC (in {days} day(s)), "
        f"issuer {row.issuer_name}, SHA-256 {row.fingerprint_sha256}"
    )


@shared_task
def warn_expiring_certificates() -> int:
    """Tell the admins about active certificates expiring within ``certificate_expiry_warning_days``.

    One mail per run (Django's ``mail_admins``, when ``ADMINS`` is set) lists every such certificate not
    already warned about within :data:`WARNING_REPEAT`; without ``ADMINS`` the list goes to the log. A
    certificate is marked as warned only once the mail went out, so a failed send is retried next run.
    Returns how many certificates were listed.
    """
    now = timezone.now()
    days = limits.option("certificate_expiry_warning_days")
    due = (
        Certificate.objects.expiring(now, days)
        .exclude(expiry_warned_at__gt=now - WARNING_REPEAT)
        .select_related("account__domain")
        .order_by("not_after")
    )
    total = due.count()
    if not total:
        return 0
    rows = list(due[:MAIL_LIST_LIMIT])
    lines = [_expiry_line(row, now) for row in rows]
    if total > len(rows):
        lines.append(f"... and {total - len(rows)} more: see the admin's dashboard")
    subject = f"{total} certificate(s) expire within {days} days"
    if settings.ADMINS:
        body = "\n".join(
            [f"These client certificates expire within {days} days (certificate_expiry_warning_days):", ""]
            + lines
            + ["", 'Issue new ones from the admin (an account\'s page, "Issue a certificate").']
        )
        mail_admins(subject, body, fail_silently=False)
        logger.info("%s: mailed to %d admin address(es)", subject, len(settings.ADMINS))
    else:
        logger.warning("%s (no ADMINS to mail; set XMPPAUTH_ADMINS):\n%s", subject, "\n".join(lines))
    due.update(expiry_warned_at=now)
    return total
