"""The Prometheus endpoint (``[xmppauth] metrics_path``): the counters of ``xmppauth.metrics`` summed over
every process, plus what the database knows at scrape time. Part of the composition root, like the admin's
dashboard: the one view that reads every app (certificates and CRLs, live sessions).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator

import prometheus_client
from django.conf import settings
from django.contrib.auth import authenticate
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from xmppauth.metrics import LOGINS, STANZAS

logger = logging.getLogger(__name__)


class DatabaseCollector(Collector):
    """What the database knows at scrape time: live sessions (lease rows) and each trusted CA's CRL."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from certauth.admin import revocation_overview
        from certauth.models import CertificateAuthority
        from transport.sessions.models import LiveSession

        now = timezone.now()
        sessions = GaugeMetricFamily(
            "xmppauth_live_sessions",
            "Bound sessions by transport and listener process.",
            labels=["transport", "process"],
        )
        rows = (
            LiveSession.objects.filter(lease_expires_at__gte=now)
            .values("transport", "process_id")
            .annotate(n=Count("id"))
        )
        for row in rows:
            sessions.add_metric([row["transport"], row["process_id"]], row["n"])
        yield sessions
        age = GaugeMetricFamily(
            "xmppauth_crl_age_seconds",
            "Seconds since the thisUpdate of the newest CRL held, per CA.",
            labels=["ca"],
        )
        next_update = GaugeMetricFamily(
            "xmppauth_crl_next_update_seconds",
            "Seconds until the CRL's nextUpdate (negative: past it), per CA.",
            labels=["ca"],
        )
        fresh = GaugeMetricFamily(
            "xmppauth_crl_fresh",
            "1 when logins treat the CA's revocation data as fresh, else 0.",
            labels=["ca"],
        )
        for ca in CertificateAuthority.objects.filter(trusted_for_client_auth=True).prefetch_related(
            "crl_sources"
        ):
            overview = revocation_overview(ca, now)
            updates = [s.this_update for s in ca.crl_sources.all() if s.this_update is not None]
            this_update = ca.crl_updated_at if ca.is_ours else max(updates, default=None)
            if this_update is not None:
                age.add_metric([ca.name], (now - this_update).total_seconds())
            if overview.next_update is not None:
                next_update.add_metric([ca.name], (overview.next_update - now).total_seconds())
            fresh.add_metric([ca.name], 1.0 if overview.freshness.startswith("fresh") else 0.0)
        yield from (age, next_update, fresh)


def exposition() -> bytes:
    """Every process's counters (multiprocess files) and the database's gauges, as Prometheus text."""
    registry = CollectorRegistry()
    if settings.PROMETHEUS_MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(LOGINS)
        registry.register(STANZAS)
    registry.register(DatabaseCollector())
    return generate_latest(registry)


def _basic_auth_user(request: HttpRequest) -> object | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        username, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return authenticate(request, username=username, password=password)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None when an active staff user asks; else the answer (401 asks for credentials, 403 refuses)."""
    user = request.user if request.user.is_authenticated else _basic_auth_user(request)
    if user is None:
        response = HttpResponse(
            "metrics: log in to the admin, or send a staff user's credentials\n", status=401
        )
        response["WWW-Authenticate"] = 'Basic realm="xmppauth metrics", charset="UTF-8"'
        return response
    if not (user.is_active and user.is_staff):
        logger.warning("metrics refused to %s: not an active staff user", user.get_username())
        return HttpResponse("metrics: staff users only\n", status=403)
    if settings.XMPP.options.admin_requires_certificate:
        from certauth.adminguard import certificate_staff_user

        certificate_user, why = certificate_staff_user(request)
        if certificate_user is None or certificate_user.pk != user.pk:
            logger.warning(
                "metrics refused to %s: %s", user.get_username(), why or "another user's certificate"
            )
            return HttpResponse("metrics: this needs your admin client certificate\n", status=403)
    return None


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET [xmppauth] metrics_path``: the exposition, to active staff users only."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(exposition(), content_type=prometheus_client.CONTENT_TYPE_LATEST)
