"""xmppauth.fastsql: the lean statements give the same rows as the ORM, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Domain
from certauth.models import AuthEvent
from transport.sessions.models import LiveSession
from xmppauth import fastsql

pytestmark = pytest.mark.django_db


def session_values(**overrides):
    now = timezone.now()
    values = dict(
        full_jid="alice@localhost/desk",
        bare_jid="alice@localhost",
        resource="desk",
        transport="tcp",
        process_id="test:1:1",
        started_at=now,
        lease_expires_at=now + timedelta(seconds=30),
    )
    values.update(overrides)
    return values


def test_insert_row_stores_what_the_orm_reads_back_with_defaults_for_the_rest():
    session_id = uuid.uuid4()
    values = session_values(cert_not_after=timezone.now() + timedelta(days=1))
    fastsql.insert_row(LiveSession, id=session_id, **values)
    row = LiveSession.objects.get(id=session_id)  # the UUID key as the ORM stores it (hex on SQLite)
    assert row.full_jid == values["full_jid"] and row.started_at == values["started_at"]
    assert row.cert_not_after == values["cert_not_after"]
    assert (row.peer, row.channel_name, row.priority, row.presence) == ("", "", None, "")


def test_insert_row_fills_auto_now_add_and_leaves_the_auto_key_to_the_database():
    before = timezone.now()
    fastsql.insert_row(AuthEvent, transport="tcp", outcome=AuthEvent.Outcome.SUCCESS, reason="first")
    fastsql.insert_row(AuthEvent, transport="tls", outcome=AuthEvent.Outcome.FAILURE, reason="second")
    first, second = AuthEvent.objects.order_by("id")
    assert first.id < second.id and first.time >= before
    assert (second.outcome, second.reason, second.cert_subject) == ("failure", "second", "")


def test_insert_row_of_an_existing_key_raises_integrity_error_and_stores_nothing():
    session_id = uuid.uuid4()
    fastsql.insert_row(LiveSession, id=session_id, **session_values())
    with pytest.raises(IntegrityError), transaction.atomic():
        fastsql.insert_row(LiveSession, id=session_id, **session_values(full_jid="mallory@localhost/x"))
    assert LiveSession.objects.get(id=session_id).full_jid == "alice@localhost/desk"


def test_delete_rows_deletes_only_the_matching_row_and_counts_it():
    keep, drop = uuid.uuid4(), uuid.uuid4()
    for session_id in (keep, drop):
        fastsql.insert_row(LiveSession, id=session_id, **session_values())
    assert fastsql.delete_rows(LiveSession, "id", drop) == 1
    assert fastsql.delete_rows(LiveSession, "id", drop) == 0
    assert list(LiveSession.objects.values_list("id", flat=True)) == [keep]


def test_param_and_fetch_all_compare_as_the_orm_does():
    Domain.objects.create(name="on.example", enabled=True)
    Domain.objects.create(name="off.example", enabled=False)
    sql = (
        f"SELECT {fastsql.column(Domain, 'name')} FROM {fastsql.table(Domain)}"
        f" WHERE {fastsql.column(Domain, 'enabled')} = %s"
    )
    for enabled in (True, False):
        rows = {name for (name,) in fastsql.fetch_all(sql, [fastsql.param(Domain, "enabled", enabled)])}
        assert rows == set(Domain.objects.filter(enabled=enabled).values_list("name", flat=True))


def test_statement_is_built_once_per_vendor_and_key():
    built = []

    def build() -> str:
        built.append(1)
        return "SELECT 1"

    key = f"test:{uuid.uuid4()}"
    assert fastsql.statement(key, build) == fastsql.statement(key, build) == "SELECT 1"
    assert len(built) == 1
    assert (connection.vendor, key) in fastsql._statements
