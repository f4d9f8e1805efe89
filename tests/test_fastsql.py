"""xmppauth.fastsql: the lean statements give the same rows as the ORM, on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta

import pytest
from django.db import DEFAULT_DB_ALIAS, IntegrityError, OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_transaction", [True, False], ids=["in a transaction", "autocommit"])
def test_insert_new_of_an_existing_key_is_false_stores_nothing_and_the_transaction_goes_on(in_transaction):
    """Inside a transaction PostgreSQL needs a savepoint for that, SQLite does not: both legs run this."""
    session_id, later = uuid.uuid4(), uuid.uuid4()
    fastsql.insert_row(LiveSession, id=session_id, **session_values())
    with transaction.atomic() if in_transaction else contextlib.nullcontext():
        mallory = session_values(full_jid="mallory@localhost/x")
        assert fastsql.insert_new(LiveSession, id=session_id, **mallory) is False
        assert fastsql.insert_new(LiveSession, id=later, **session_values(full_jid="alice@localhost/later"))
        assert not connection.needs_rollback
    rows = dict(LiveSession.objects.values_list("id", "full_jid"))
    assert rows == {session_id: "alice@localhost/desk", later: "alice@localhost/later"}


def test_statements_count_and_wrap_as_djangos_and_skip_its_cursor_on_sqlite_otherwise(monkeypatch):
    """SQLite's open connection runs them directly, except where Django counts queries or wraps them (a fault
    test's outage); what is counted or wrapped is the same statement either way."""
    session_id = uuid.uuid4()
    with CaptureQueriesContext(connection) as counted:
        fastsql.insert_row(LiveSession, id=session_id, **session_values())
    assert len(counted) == 1 and counted[0]["sql"].startswith("INSERT INTO")

    wrapped = []

    def wrapper(execute, sql, params, many, context):
        wrapped.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        assert fastsql.delete_rows(LiveSession, "id", session_id) == 1
    assert len(wrapped) == 1 and wrapped[0].startswith("DELETE FROM")

    if connection.vendor != "sqlite":
        return
    db = connections[DEFAULT_DB_ALIAS]

    def no_cursor():
        raise AssertionError("Django's cursor was used")

    monkeypatch.setattr(db, "cursor", no_cursor)
    fastsql.insert_row(LiveSession, id=session_id, **session_values())
    assert fastsql.fetch_all(
        f"SELECT {fastsql.column(LiveSession, 'full_jid')} FROM {fastsql.table(LiveSession)}"
        f" WHERE {fastsql.column(LiveSession, 'id')} = %s",
        [fastsql.param(LiveSession, "id", session_id)],
    ) == [("alice@localhost/desk",)]
    with pytest.raises(IntegrityError):  # Django's exception, from sqlite3's
        fastsql.insert_row(LiveSession, id=session_id, **session_values())
    with pytest.raises(OperationalError):  # what xmppauth.outage counts as the database unavailable
        fastsql.fetch_all("SELECT 1 FROM no_such_table WHERE 1 = %s", [1])
    assert fastsql.delete_rows(LiveSession, "id", session_id) == 1


def test_insert_many_stores_every_row_as_the_orm_reads_it_back_and_refuses_a_duplicate_whole():
    fields = LiveSession._meta.concrete_fields
    names = tuple(field.name for field in fields)
    ids = [uuid.uuid4() for _ in range(3)]

    def row(session_id, full_jid):
        values = session_values(id=session_id, full_jid=full_jid)
        return [values[field.name] if field.name in values else field.get_default() for field in fields]

    rows = [row(session_id, f"alice@localhost/r{n}") for n, session_id in enumerate(ids)]
    assert fastsql.insert_many(LiveSession, names, rows) == 3
    stored = dict(LiveSession.objects.values_list("id", "full_jid"))
    assert stored == {session_id: f"alice@localhost/r{n}" for n, session_id in enumerate(ids)}
    with pytest.raises(IntegrityError), transaction.atomic():  # Django's exception on either path
        fastsql.insert_many(LiveSession, names, [row(uuid.uuid4(), "bob@localhost/x"), rows[1]])
    assert LiveSession.objects.count() == 3


def test_insert_row_prepares_what_is_not_a_str_as_the_field_would_and_plans_once_per_shape():
    """A plain text field given a str takes it as it is (what its preparation returns); anything else there
    (a number, a lazy translation) goes through the field, as the ORM would store it."""
    from django.utils.functional import lazy

    session_id = uuid.uuid4()
    lazy_resource = lazy(lambda: "desk-lazy", str)()
    fastsql.insert_row(
        LiveSession, id=session_id, **session_values(resource=lazy_resource), cert_serial=12345
    )
    row = LiveSession.objects.get(id=session_id)
    assert (row.resource, row.cert_serial) == ("desk-lazy", "12345")
    shapes = len(fastsql._row_plans)
    fastsql.insert_row(LiveSession, id=uuid.uuid4(), **session_values(), cert_serial="7")
    assert len(fastsql._row_plans) == shapes  # the same fields in the same order: the same plan
