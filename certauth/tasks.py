"""Periodic certificate jobs (Celery tasks; in-process under runxmpp when there is no Redis)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from certauth import services
from certauth.models import CertificateAuthority

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

