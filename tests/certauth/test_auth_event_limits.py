"""The AuthEvent table cannot be filled from outside (issue 16 point 3): refusals recorded per source address
and minute up to ``[xmppauth] auth_events_per_minute``, every refusal counted for ``auth_failures_per_minute``
(XEP-0205), rows purged after ``auth_event_retention_days`` by the Celery beat job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from certauth import tasks
from certauth.models import AuthEvent
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.test_authenticator import authenticator, login
from tests.certs import Issued, make_ca, make_client
from xmppauth import limits
from xmppauth.config import ConfigError, parse_config

pytestmark = pytest.mark.django_db


@pytest.fixture
def ca() -> Issued:
    return make_ca("DB CA")


@pytest.fixture
def ca_row(ca):
    return add_ca_row(ca, name="DB CA")


def refuse(auth, times: int) -> None:
    stranger = make_client(make_ca("Unknown CA"))
    for _ in range(times):
        auth.check_certificate([stranger.der])


def from_address(peer: str):
    auth = authenticator()
    auth.peer = peer
    return auth


def test_refusals_past_the_per_address_limit_are_counted_in_one_log_line_not_stored(
    ca_row, xmpp_options, caplog
):
    xmpp_options(auth_events_per_minute=3)
    refuse(from_address("192.0.2.7:4000"), 5)
    assert AuthEvent.objects.filter(peer="192.0.2.7:4000").count() == 3
    assert caplog.text.count("more than 3 refusals from 192.0.2.7 within a minute") == 1


def test_another_address_is_still_recorded_when_one_is_over_its_limit(ca_row, xmpp_options):
    xmpp_options(auth_events_per_minute=2)
    refuse(from_address("192.0.2.7:4000"), 4)
    refuse(from_address("198.51.100.1:5000"), 1)
    assert AuthEvent.objects.filter(peer="198.51.100.1:5000").count() == 1


def test_a_success_is_recorded_even_past_the_refusal_limit(ca, ca_row, xmpp_options):
    xmpp_options(auth_events_per_minute=1)
    auth = from_address("192.0.2.9:1")
    refuse(auth, 3)
    _, result = login(auth, make_client(ca))
    assert result.accepted
    assert AuthEvent.objects.filter(peer="192.0.2.9:1", outcome=AuthEvent.Outcome.SUCCESS).count() == 1


def test_refusals_count_towards_the_auth_failure_limit_of_their_address(ca_row, xmpp_options):
    xmpp_options(auth_failures_per_minute=3)
    refuse(from_address("192.0.2.7:4000"), 2)
    assert not limits.too_many_auth_failures("192.0.2.7:5555")
    refuse(from_address("192.0.2.7:4001"), 1)  # another port, same address
    assert limits.too_many_auth_failures("192.0.2.7:5555")
    assert not limits.too_many_auth_failures("192.0.2.8:5555")


def test_a_zero_auth_failure_limit_never_refuses(ca_row, xmpp_options):
    xmpp_options(auth_failures_per_minute=0)
    refuse(from_address("192.0.2.7:4000"), 5)
    assert not limits.too_many_auth_failures("192.0.2.7:4000")


def test_the_purge_job_deletes_events_older_than_the_retention_and_keeps_the_rest(xmpp_options):
    xmpp_options(auth_event_retention_days=7)
    old, recent = (AuthEvent.objects.create(transport="tcp", outcome=AuthEvent.Outcome.FAILURE) for _ in "ab")
    AuthEvent.objects.filter(pk=old.pk).update(time=timezone.now() - timedelta(days=7, minutes=1))
    AuthEvent.objects.filter(pk=recent.pk).update(time=timezone.now() - timedelta(days=6, hours=23))
    assert tasks.purge_auth_events() == 1
    assert list(AuthEvent.objects.values_list("pk", flat=True)) == [recent.pk]


def test_the_purge_job_is_on_the_beat_schedule():
    entries = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()]
    assert "certauth.tasks.purge_auth_events" in entries


def test_peer_addresses_are_read_from_ipv4_and_ipv6_peers():
    assert limits.address_of("192.0.2.7:4000") == "192.0.2.7"
    assert limits.address_of("[2001:db8::1]:4000") == "2001:db8::1"
    assert limits.address_of("2001:db8::1") == "2001:db8::1"


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("max_offline_messages", 100),
        ("session_queue_stanzas", 1000),
        ("session_queue_bytes", 1048576),
        ("max_connections_per_address", 100),
        ("auth_failures_per_minute", 10),
        ("auth_failure_delay_seconds", 2),
        ("auth_events_per_minute", 30),
        ("auth_event_retention_days", 30),
        ("process_liveness_seconds", 5),
    ],
)
def test_each_bound_is_read_from_the_xmppauth_table_with_its_default(name, default):
    base = {"general": {"hosts": ["localhost"]}}
    assert getattr(parse_config(base).options, name) == default
    assert getattr(parse_config({**base, "xmppauth": {name: 4242}}).options, name) == 4242
    with pytest.raises(ConfigError, match=f"xmppauth.{name}"):
        parse_config({**base, "xmppauth": {name: -1}})
