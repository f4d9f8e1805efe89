"""Prometheus metrics for the operator's monitoring (issue 18 point 8), in the text exposition format.

What is counted, and where:

- ``xmppauth_logins_total{transport, outcome, condition}``: every login attempt, counted where its
  ``AuthEvent`` is decided (``certauth.authenticator``), before the per-address cap on rows, so a flood shows
  here in full. ``condition`` is the SASL or stream condition (RFC 6120 §6.5, §4.9.3), ``certificate`` for a
  certificate refused at the handshake, empty on success.
- ``xmppauth_stanzas_total{kind, direction}``: stanzas clients sent (``in``) and stanzas delivered to clients
  (``out``), by ``message``/``presence``/``iq``, counted by each session's bridge (``transport.im.bridge``).
- ``xmppauth_live_sessions{transport, process}`` and ``xmppauth_crl_age_seconds{ca}`` /
  ``xmppauth_crl_next_update_seconds{ca}`` / ``xmppauth_crl_fresh{ca}``: read from the database at each
  scrape (the session registry's lease rows, the CRL state), so they cover every process and a dead
  process's sessions drop out with their lease, as on the dashboard.

Every process counts into its own files under ``PROMETHEUS_MULTIPROC_DIR`` (``var/metrics`` by default, set
in settings before ``prometheus_client`` is imported); the endpoint sums them (prometheus-client's
multiprocess mode). Chosen over one port per process because daphne, runc2s, runworker and the Celery worker
then need no port of their own, one scrape sees them all, and the endpoint stays behind the admin's
credentials on the HTTPS listener. Counter files outlive their process, so totals never go back.

The endpoint is ``[xmppauth] metrics_path`` (default ``/metrics``; ``""`` serves none) on the
``[[listen.http]]`` listeners that serve the admin. It answers an active staff user only: a logged-in admin
session, or HTTP Basic with a staff user's password (rate-limited by django-axes as the admin login is), and
with ``admin_requires_certificate`` the client certificate of that same user.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator

import prometheus_client
from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

if settings.PROMETHEUS_MULTIPROC_DIR and not getattr(
    prometheus_client.values.ValueClass, "_multiprocess", False
):
    raise ImproperlyConfigured(
        "prometheus_client was imported before settings set PROMETHEUS_MULTIPROC_DIR: its counters would "
        "stay in this process"
    )

LOGINS = Counter(
    "xmppauth_logins",
    "Login attempts by transport, outcome and condition.",
    ["transport", "outcome", "condition"],
)
STANZAS = Counter("xmppauth_stanzas", "Client stanzas by kind and direction.", ["kind", "direction"])
STANZA_KINDS = ("message", "presence", "iq")  # RFC 6120 §8
REFUSED_CERTIFICATE = "certificate"  # the condition label of a certificate refused at the handshake


def count_login(transport: str, success: bool, condition: str | None) -> None:
    """One login attempt (``certauth.authenticator``, wherever an ``AuthEvent`` is decided)."""
    outcome = "success" if success else "failure"
    LOGINS.labels(transport, outcome, "" if success else (condition or REFUSED_CERTIFICATE)).inc()


def count_stanza(kind: str, direction: str) -> None:
    """One stanza a client sent (``in``) or was given (``out``); ``kind``: message, presence or iq."""
    STANZAS.labels(kind if kind in STANZA_KINDS else "other", direction).inc()


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
