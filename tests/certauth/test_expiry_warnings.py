"""Issue 18 point 4: the beat job that tells the admins about certificates expiring soon.

Within ``[xmppauth] certificate_expiry_warning_days`` an active certificate is listed in one mail per run
(Django's ``mail_admins``), at most once a day; one outside the window, revoked or held, or already warned
about today is not. The dashboard lists the same window.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.utils import timezone

from accounts.models import Account, Domain
from certauth import services, tasks
from certauth.models import Certificate
from xmppauth import dashboard

pytestmark = pytest.mark.django_db

ADMINS = [("Ops", "ops@example.org")]


@pytest.fixture
def alice() -> Account:
    services.create_ca("Test CA")
    return Account.objects.create(localpart="alice", domain=Domain.objects.create(name="localhost"))


@pytest.fixture
def window(settings):
    """Set ``certificate_expiry_warning_days`` for the test (the running config's [xmppauth] table)."""

    def set_days(days: int) -> None:
        settings.XMPP = replace(
            settings.XMPP, options=replace(settings.XMPP.options, **{"certificate_expiry_warning_days": days})
        )

    return set_days


def test_an_expiring_certificate_is_mailed_to_the_admins(alice, settings):
    settings.ADMINS = ADMINS
    soon = services.issue_for_account(alice, days=10).row
    assert tasks.warn_expiring_certificates() == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.org"]
    assert message.subject == "[xmppauth] 1 certificate(s) expire within 30 days"
    assert (
        f"alice@localhost: serial {soon.serial}" in message.body and soon.fingerprint_sha256 in message.body
    )
    soon.refresh_from_db()
    assert soon.expiry_warned_at is not None


def test_one_mail_per_run_lists_every_expiring_certificate(alice, settings):
    settings.ADMINS = ADMINS
    first = services.issue_for_account(alice, days=5).row
    second = services.issue_for_account(alice, days=20).row
    assert tasks.warn_expiring_certificates() == 2
    assert len(mail.outbox) == 1
    body = mail.outbox[0].body
    assert body.index(first.serial) < body.index(second.serial)  # soonest first


def test_past_the_list_limit_the_mail_counts_the_rest(alice, settings, monkeypatch):
    settings.ADMINS = ADMINS
    monkeypatch.setattr(tasks, "MAIL_LIST_LIMIT", 2)
    for _ in range(3):
        services.issue_for_account(alice, days=10)
    assert tasks.warn_expiring_certificates() == 3
    body = mail.outbox[0].body
    assert body.count("alice@localhost: serial") == 2 and "... and 1 more" in body
    assert not Certificate.objects.filter(
        expiry_warned_at=None, not_after__lt=timezone.now() + timedelta(days=30)
    )


def test_a_certificate_outside_the_window_is_not_mailed(alice, settings):
    settings.ADMINS = ADMINS
    services.issue_for_account(alice, days=90)
    assert tasks.warn_expiring_certificates() == 0
    assert mail.outbox == []


def test_revoked_and_held_certificates_are_not_mailed(alice, settings):
    settings.ADMINS = ADMINS
    services.revoke(services.issue_for_account(alice, days=10).row, "superseded")
    services.hold(services.issue_for_account(alice, days=10).row)
    assert tasks.warn_expiring_certificates() == 0
    assert mail.outbox == []


def test_an_expired_certificate_is_not_mailed(alice, settings):
    settings.ADMINS = ADMINS
    row = services.issue_for_account(alice, days=10).row
    Certificate.objects.filter(pk=row.pk).update(not_after=timezone.now() - timedelta(minutes=1))
    assert tasks.warn_expiring_certificates() == 0
    assert mail.outbox == []


def test_a_certificate_is_not_mailed_twice_within_a_day(alice, settings):
    settings.ADMINS = ADMINS
    row = services.issue_for_account(alice, days=10).row
    assert tasks.warn_expiring_certificates() == 1
    assert tasks.warn_expiring_certificates() == 0
    assert len(mail.outbox) == 1
    # A day later it is mailed again, and a new one joins it in the same mail.
    Certificate.objects.filter(pk=row.pk).update(
        expiry_warned_at=timezone.now() - timedelta(days=1, minutes=1)
    )
    services.issue_for_account(alice, days=3)
    assert tasks.warn_expiring_certificates() == 2
    assert len(mail.outbox) == 2 and row.serial in mail.outbox[1].body


def test_a_failed_send_is_retried_next_run(alice, settings):
    settings.ADMINS = ADMINS
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # discard port: nothing listens
    row = services.issue_for_account(alice, days=10).row
    with pytest.raises(OSError):
        tasks.warn_expiring_certificates()
    row.refresh_from_db()
    assert row.expiry_warned_at is None


def test_without_admins_the_warning_goes_to_the_log(alice, settings, caplog):
    settings.ADMINS = []
    row = services.issue_for_account(alice, days=10).row
    with caplog.at_level(logging.WARNING, logger="certauth.tasks"):
        assert tasks.warn_expiring_certificates() == 1
    assert mail.outbox == []
    assert "set XMPPAUTH_ADMINS" in caplog.text and row.serial in caplog.text


def test_the_window_is_the_config_option_and_the_dashboard_uses_it(alice, settings, window):
    settings.ADMINS = ADMINS
    services.issue_for_account(alice, days=10)
    window(7)
    assert tasks.warn_expiring_certificates() == 0
    d = dashboard.collect()
    assert d.expiry_days == 7 and d.expiring_total == 0
    window(11)
    assert dashboard.collect().expiring_total == 1
    assert tasks.warn_expiring_certificates() == 1
    assert mail.outbox[0].subject.endswith("expire within 11 days")


def test_the_job_is_on_the_beat_schedule():
    tasks_scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "certauth.tasks.warn_expiring_certificates" in tasks_scheduled
