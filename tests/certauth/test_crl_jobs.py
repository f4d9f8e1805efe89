"""The CRL jobs (certauth.tasks), the in-process schedule of runxmpp (certauth.scheduler) and the admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from twisted.internet import defer
from twisted.internet.task import Clock

from certauth import scheduler, tasks
from certauth.models import CrlSource
from tests.certauth.crlhelpers import add_source, make_crl


def test_beat_runs_the_due_crl_sources_every_minute(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-due-crl-sources"]
    assert entry == {"task": "certauth.tasks.refresh_due_crl_sources", "schedule": 60.0}


@pytest.mark.django_db
def test_refresh_due_crl_sources_fetches_due_and_unscheduled_sources_only(server, ext_ca, ext_row):
    server.serve("/ca.crl", make_crl(ext_ca, [0x1]))
    now = datetime.now(UTC)
    due = add_source(ext_row, server.url("/ca.crl"), next_refresh_at=now - timedelta(seconds=1))
    unscheduled = add_source(ext_row, server.url("/ca.crl?new"))
    later = add_source(ext_row, server.url("/ca.crl?later"), next_refresh_at=now + timedelta(minutes=5))

    assert tasks.refresh_due_crl_sources() == 2

    for source in (due, unscheduled, later):
        source.refresh_from_db()
    assert due.state == CrlSource.State.OK
    assert unscheduled.state == CrlSource.State.FAILING  # the server knows no /ca.crl?new: 404
    assert later.last_attempt_at is None
    assert due.next_refresh_at > now and unscheduled.next_refresh_at > now


@pytest.mark.django_db
def test_a_source_taken_by_an_overlapping_run_is_not_fetched_twice(ext_row):
    source = add_source(ext_row, "http://127.0.0.1:9/ca.crl")
    assert tasks._claim(source)
    assert not tasks._claim(source)  # the first run moved next_refresh_at


@pytest.mark.django_db
def test_refresh_crl_source_task_reports_the_outcome(server, ext_ca, ext_row):
    source = add_source(ext_row, server.serve("/ca.crl", make_crl(ext_ca, [0x1, 0x2], number=4)))
    result = tasks.refresh_crl_source(source.pk)
    assert result == {
        "source": source.pk,
        "ok": True,
        "message": "CRL #4 accepted: 2 revoked serial(s), 2 new",
        "entries": 2,
    }
    assert tasks.refresh_crl_source(source.pk + 1000)["message"] == "no such CRL source"


# --- runxmpp without Redis -------------------------------------------------------------------------------


class FakeReactor(Clock):
    def getThreadPool(self):  # noqa: N802 (Twisted's name)
        return None


def test_in_process_jobs_tick_at_once_then_every_interval(monkeypatch):
    ran: list[str] = []
    monkeypatch.setattr(
        scheduler.threads, "deferToThreadPool", lambda reactor, pool, f: defer.maybeDeferred(f)
    )
    monkeypatch.setattr(scheduler, "with_fresh_connections", lambda function, *args: function(*args))
    monkeypatch.setattr(tasks, "refresh_due_crl_sources", lambda: ran.append("crl") or 0)
    monkeypatch.setattr(tasks, "republish_our_crls", lambda: ran.append("ours") or 0)
    reactor = FakeReactor()

    loop = scheduler.start_in_process_jobs(reactor, interval=60)
    try:
        reactor.advance(60)
        reactor.advance(60)
    finally:
        loop.stop()

    assert ran == ["crl", "ours", "crl", "crl"]  # our CRLs: at start, then hourly


def test_a_failing_tick_does_not_stop_the_schedule(monkeypatch):
    calls: list[int] = []

    def failing():
        calls.append(1)
        raise RuntimeError("database is locked")

    monkeypatch.setattr(
        scheduler.threads, "deferToThreadPool", lambda reactor, pool, f: defer.maybeDeferred(f)
    )
    monkeypatch.setattr(scheduler, "with_fresh_connections", lambda function, *args: function(*args))
    monkeypatch.setattr(tasks, "refresh_due_crl_sources", failing)
    reactor = FakeReactor()
    loop = scheduler.start_in_process_jobs(reactor, interval=60)
    try:
        reactor.advance(60)
        assert loop.running
    finally:
        loop.stop()
    assert len(calls) == 2


# --- admin -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_operator_adds_a_crl_url_in_the_admin(staff_client, ext_row):
    response = staff_client.post(
        reverse("admin:certauth_crlsource_add"),
        {"ca": ext_row.pk, "location": "https://pki.example/ext.crl", "refresh_interval_seconds": "900"},
    )
    assert response.status_code == 302, response.content
    source = CrlSource.objects.get()
    assert (source.kind, source.location, source.refresh_interval_seconds) == (
        CrlSource.Kind.OPERATOR_URL,
        "https://pki.example/ext.crl",
        900,
    )
    assert source.next_refresh_at is None  # due at the next run


@pytest.mark.django_db
def test_admin_refuses_a_crl_location_that_is_not_http(staff_client, ext_row):
    response = staff_client.post(
        reverse("admin:certauth_crlsource_add"), {"ca": ext_row.pk, "location": "file:///etc/passwd"}
    )
    assert response.status_code == 200
    assert b"Enter an http:// or https:// URL." in response.content
    assert not CrlSource.objects.exists()


@pytest.mark.django_db
def test_admin_refresh_now_action_fetches_and_reports(staff_client, server, ext_ca, ext_row):
    source = add_source(ext_row, server.serve("/ca.crl", make_crl(ext_ca, [0x1], number=9)))
    response = staff_client.post(
        reverse("admin:certauth_crlsource_changelist"),
        {"action": "refresh_now_action", "_selected_action": [source.pk]},
        follow=True,
    )
    shown = [str(message) for message in response.context["messages"]]
    assert shown == [f"{source.location}: CRL #9 accepted: 1 revoked serial(s), 1 new"]
    source.refresh_from_db()
    assert source.state == CrlSource.State.OK


@pytest.mark.django_db
def test_admin_shows_stale_sources_state_error_and_next_refresh(staff_client, ext_row):
    add_source(
        ext_row,
        "http://pki.example/ext.crl",
        state=CrlSource.State.FAILING,
        next_update=datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
        last_error="timed out after 10 s",
        next_refresh_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    page = staff_client.get(reverse("admin:certauth_crlsource_changelist")).content.decode()
    assert "stale since 2026-11-01 10:00 (nextUpdate)" in page
    assert "timed out after 10 s" in page
    assert "2030" in page
