"""Issue 18 point 1: the dashboard, the admin's index.

Live sessions by transport and by process (only current leases), logins and failures per minute as server-side
SVG, failures grouped by reason, CA and CRL health, certificates expiring within 30 days, recent revocations.
Its queries are aggregates and bounded slices: their number does not grow with the rows.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from certauth import services
from certauth.models import AuthEvent, CrlSource
from tests.certauth.crlhelpers import add_ca_row
from tests.certs import make_ca
from transport.sessions import terminations as sessions
from transport.sessions.models import LiveSession
from xmppauth import dashboard

pytestmark = pytest.mark.django_db


def _session(jid: str, transport: str, process: str, *, expired: bool = False) -> None:
    sessions.save_session(sessions.SessionFacts(full_jid=jid, transport=transport), process=process)
    if expired:
        LiveSession.objects.filter(full_jid=jid).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )


def _event(outcome: str, minutes_ago: float, condition: str = "", reason: str = "") -> None:
    event = AuthEvent.objects.create(transport="tcp", outcome=outcome, condition=condition, reason=reason)
    AuthEvent.objects.filter(pk=event.pk).update(time=timezone.now() - timedelta(minutes=minutes_ago))


def test_sessions_by_transport_and_process_count_current_leases_only():
    _session("a@localhost/1", "websocket", "host:1:1")
    _session("a@localhost/2", "websocket", "host:2:1")
    _session("b@localhost/1", "tls", "host:2:1")
    _session("c@localhost/1", "bosh", "host:3:1", expired=True)
    d = dashboard.collect()
    assert d.sessions_total == 3
    assert [(c.label, c.count) for c in d.sessions_by_transport] == [
        ("WebSocket", 2),
        ("TCP (direct TLS)", 1),
    ]
    assert [(c.label, c.count) for c in d.sessions_by_process] == [("host:2:1", 2), ("host:1:1", 1)]


def test_logins_and_failures_per_minute_and_by_reason():
    for minutes_ago in (1, 1, 5):
        _event("success", minutes_ago)
    _event("failure", 2, "not-authorized", "certificate revoked")
    _event("failure", 3, "not-authorized", "certificate revoked")
    _event("failure", 4, "invalid-authzid", "no xmppAddr")
    _event("success", 60 * 4)  # outside the chart's 3 hours
    _event("failure", 60 * 30, "not-authorized", "too old")  # outside the 24 hours of the reasons
    d = dashboard.collect()
    assert (d.logins_total, d.failures_total) == (3, 3)
    assert d.failures_by_reason == [
        ("not-authorized", "certificate revoked", 2),
        ("invalid-authzid", "no xmppAddr", 1),
    ]
    svg = str(d.logins_chart)
    assert svg.startswith("<svg") and "peak 2/min" in svg
    assert len(re.findall(r'fill="#1a7f37"', svg)) == 2  # two minutes with successes
    assert len(re.findall(r'fill="#cf222e"', svg)) == 3  # three minutes with failures
    assert "<script" not in svg


def test_an_empty_chart_has_no_bars():
    svg = str(dashboard.minute_chart({}, timezone.now().replace(second=0, microsecond=0), 180))
    assert "<rect" not in svg and "peak 1/min" in svg


def test_expiring_and_revoked_certificates(alice, our_ca):
    soon = services.issue_for_account(alice, days=10).row
    later = services.issue_for_account(alice, days=90).row
    gone = services.issue_for_account(alice, days=10).row
    services.revoke(gone, "superseded")
    held = services.issue_for_account(alice, days=200).row
    services.hold(held)
    d = dashboard.collect()
    assert [row.pk for row in d.expiring] == [soon.pk] and d.expiring_total == 1
    assert later.pk not in [row.pk for row in d.expiring]
    assert [row.pk for row in d.revocations] == [held.pk, gone.pk]


def test_ca_and_crl_health(our_ca):
    row = add_ca_row(make_ca("External CA"), "External CA")
    now = timezone.now()
    CrlSource.objects.create(
        ca=row,
        kind=CrlSource.Kind.OPERATOR_URL,
        location="http://127.0.0.1:9/ext.crl",
        last_success_at=now - timedelta(days=3),
        this_update=now - timedelta(days=3),
        next_update=now - timedelta(days=2),
    )
    health = {h.ca.name: h for h in dashboard.collect().cas}
    assert health["Test CA"].fresh and health["Test CA"].freshness == "fresh (ours)"
    assert not health["External CA"].fresh and health["External CA"].freshness.startswith("stale since")
    assert health["External CA"].last_fetch == now - timedelta(days=3)


def test_dashboard_queries_do_not_grow_with_the_rows(alice, our_ca):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            dashboard.collect()
        return len(queries)

    base = count()
    for i in range(20):
        _session(f"u{i}@localhost/r", "tcp", f"host:{i}:1")
        _event("failure", i, "not-authorized", f"reason {i}")
        services.issue_for_account(alice, days=5)
    assert count() == base


def test_the_index_is_the_dashboard(staff_client, alice, our_ca):
    services.issue_for_account(alice, days=10)
    _event("failure", 1, "not-authorized", "certificate revoked")
    text = staff_client.get(reverse("admin:index")).content.decode()
    for section in ("dash-sessions", "dash-logins", "dash-cas", "dash-expiring", "dash-revocations"):
        assert f'id="{section}"' in text
    assert "<svg" in text and "certificate revoked" in text and "Expiring in the next 30 days: 1" in text
    assert "cdn" not in text.lower()


def test_the_dashboard_sends_non_staff_to_the_login(django_user_model):
    anonymous = Client()
    user = Client()
    user.force_login(django_user_model.objects.create_user(username="u", password="pw-u"))
    for outsider in (anonymous, user):
        response = outsider.get(reverse("admin:index"))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
