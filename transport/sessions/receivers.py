"""Turns what makes a session invalid into ``SessionTermination`` commands for every listener process.

Specs: RFC 6120 §13.7.2.3 (a certificate revoked while its stream lives ends that stream), §4.9.3.16
(``reset``), DESIGN §5. Sources: our own revocations and holds
(``certauth.services.certificate_invalidated``), serials newly listed by an external CA's CRL
(``certauth.signals.external_revocations_found``, sent in the Celery worker or runxmpp's in-process jobs:
one command per live session the CRL lists, never one per serial), and an account saved inactive
(``post_save`` of ``Account``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save

from accounts.models import Account
from certauth.models import Certificate, CrlSource, RevocationReason
from certauth.revocation import subordinate_cas_listed
from certauth.services import certificate_invalidated
from certauth.signals import external_revocations_found
from transport.sessions import terminations as sessions

logger = logging.getLogger(__name__)


def revocation_text(certificate: Certificate) -> str:
    """``certificate revoked (keyCompromise)`` or ``certificate on hold``: the stream error's text."""
    if certificate.revocation_reason == RevocationReason.CERTIFICATE_HOLD:
        return "certificate on hold"
    reason = certificate.get_revocation_reason_display() if certificate.revocation_reason else ""
    return f"certificate revoked ({reason})" if reason else "certificate revoked"


def on_certificate_invalidated(sender: Any, certificate: Certificate, **_: Any) -> None:
    sessions.terminate_certificate(certificate.fingerprint_sha256, revocation_text(certificate))


def on_external_revocations(sender: Any, ca: Any, serials: Any, source: Any, **_: Any) -> None:
    text = f"certificate revoked (listed in the CRL of {ca.name})"[:255]
    sessions.terminate_listed(ca.pk, source.pk, serials, text)
    revoked_cas = subordinate_cas_listed(ca, serials)  # RFC 5280 §6.1.3 (a)(3): the whole path counts
    if revoked_cas:
        names = ", ".join(row.name for row in revoked_cas)
        sessions.terminate_issued_by([row.pk for row in revoked_cas], f"issuing CA revoked ({names})")


def on_account_saved(sender: Any, instance: Account, **_: Any) -> None:
    if not instance.active:
        jid = instance.jid
        transaction.on_commit(lambda: sessions.terminate_account(jid))


def connect_signals() -> None:
    """Called from ``TransportConfig.ready``; idempotent (dispatch uids)."""
    certificate_invalidated.connect(
        on_certificate_invalidated,
        sender=Certificate,
        dispatch_uid="transport.sessions.terminations.invalidated",
    )
    external_revocations_found.connect(
        on_external_revocations, sender=CrlSource, dispatch_uid="transport.sessions.terminations.external"
    )
    post_save.connect(
        on_account_saved, sender=Account, dispatch_uid="transport.sessions.terminations.account"
    )
