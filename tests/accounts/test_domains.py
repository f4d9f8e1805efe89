"""accounts.domains: the one hosted-domain rule (config hosts minus the Domain rows an admin disabled), its
cache and its bound (issue 13 §3). Transports are tested in tests/transport/test_offered_mechanisms.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from accounts import changefeed, domains
from accounts.models import ChangeFeed, Domain
from xmppauth import fastsql

pytestmark = pytest.mark.django_db(transaction=True)  # the event-loop case reads from another thread

HOSTS = ("a.example", "B.Example.")


def test_config_hosts_are_hosted_normalised_with_or_without_a_row():
    Domain.objects.create(name="a.example", enabled=True)
    assert domains.hosted_domains(HOSTS) == {"a.example", "b.example"}


def test_a_disabled_row_unhosts_its_config_host_and_a_row_alone_hosts_nothing():
    Domain.objects.create(name="b.example", enabled=False)
    Domain.objects.create(name="c.example", enabled=True)  # added in the admin, not in the config
    assert domains.hosted_domains(HOSTS) == {"a.example"}
    hosted = domains.checker(HOSTS)
    assert hosted("a.example") and not hosted("b.example") and not hosted("c.example")


def test_a_save_applies_at_once_in_this_process():
    row = Domain.objects.create(name="a.example")
    assert domains.is_hosted("a.example", HOSTS)
    row.enabled = False
    row.save()
    assert not domains.is_hosted("a.example", HOSTS)
    row.delete()
    assert domains.is_hosted("a.example", HOSTS)


def test_a_queryset_update_applies_at_once_in_this_process():
    Domain.objects.create(name="a.example")
    assert domains.is_hosted("a.example", HOSTS)
    Domain.objects.filter(name="a.example").update(enabled=False)  # no post_save: the feed's bulk path
    assert not domains.is_hosted("a.example", HOSTS)


def test_the_names_are_not_read_again_while_the_change_feed_stands_still():
    Domain.objects.create(name="b.example", enabled=False)
    assert not domains.is_hosted("b.example", HOSTS)
    with CaptureQueriesContext(connection) as captured:
        assert domains.is_hosted("a.example", HOSTS) and not domains.is_hosted("b.example", HOSTS)
    assert [q["sql"] for q in captured if "accounts_changefeed" not in q["sql"]] == []


def test_a_change_in_another_process_applies_once_the_change_feed_is_read():
    """Another process's change: the row and the feed's counter, by SQL (no signal reaches this process);
    this process reads the counter at most changefeed.POLL_INTERVAL later and reads the names again."""
    Domain.objects.create(name="a.example")
    assert domains.is_hosted("a.example", HOSTS)
    before = changefeed.generation()
    domain, feed = fastsql.table(Domain), fastsql.table(ChangeFeed)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {domain} SET enabled = %s WHERE name = %s", [False, "a.example"])
        cursor.execute(f"UPDATE {feed} SET generation = generation + 1 WHERE id = 1")
    deadline = time.monotonic() + 30  # a guard against a hang, not a measure
    while changefeed.generation() == before:
        assert time.monotonic() < deadline, "the change feed was not read again"
        time.sleep(0.02)
    assert not domains.is_hosted("a.example", HOSTS)


def test_asked_on_an_event_loop_it_reads_in_a_thread_instead_of_failing():
    """Django refuses queries on an event-loop thread (SynchronousOnlyOperation); the core asks there."""
    Domain.objects.create(name="b.example", enabled=False)
    hosted = domains.checker(HOSTS)

    async def ask() -> tuple[bool, bool]:
        domains.invalidate()
        return hosted("a.example"), hosted("b.example")

    assert asyncio.run(ask()) == (True, False)


def database_down(monkeypatch):
    def read():
        raise OperationalError("connection refused")

    monkeypatch.setattr(domains, "_read", read)


def test_on_an_event_loop_with_the_database_down_the_names_last_read_stand(monkeypatch):
    """A stream opening while the database is down (issue 16 §4): the names last read decide, so a config
    host still opens (its login then gets temporary-auth-failure) and a disabled one is still refused."""
    Domain.objects.create(name="b.example", enabled=False)
    assert domains.is_hosted("a.example", HOSTS) and not domains.is_hosted("b.example", HOSTS)  # held
    database_down(monkeypatch)
    hosted = domains.checker(HOSTS)

    async def ask() -> tuple[bool, bool]:
        changefeed.reset()  # the feed is stale: the names would be read again
        return hosted("a.example"), hosted("b.example")

    assert asyncio.run(ask()) == (True, False)


def test_on_an_event_loop_with_the_database_down_and_no_names_read_nothing_is_hosted(monkeypatch):
    database_down(monkeypatch)
    hosted = domains.checker(HOSTS)

    async def ask() -> tuple[bool, bool]:
        domains.invalidate()
        changefeed.reset()
        return hosted("a.example"), hosted("b.example")

    assert asyncio.run(ask()) == (False, False)  # fail closed: host-unknown


def test_off_an_event_loop_the_outage_reaches_the_caller(monkeypatch):
    """The authenticator and the router ask off the loop: the database error is theirs to answer
    (temporary-auth-failure), never a stale name."""
    assert domains.is_hosted("a.example", HOSTS)
    database_down(monkeypatch)
    changefeed.forget()
    with pytest.raises(OperationalError):
        domains.is_hosted("a.example", HOSTS)


def test_config_hosts_get_a_row_once():
    assert domains.ensure_rows(HOSTS) == ["a.example", "b.example"]
    assert domains.ensure_rows(HOSTS) == []
    Domain.objects.filter(name="a.example").delete()
    assert domains.ensure_rows(HOSTS) == ["a.example"]  # a deleted row is made again when next asked
