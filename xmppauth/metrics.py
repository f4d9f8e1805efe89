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

import logging

import prometheus_client
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import Counter

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
