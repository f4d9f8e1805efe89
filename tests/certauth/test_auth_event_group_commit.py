"""Auth events group-committed (issue 17 §2, ``xmppauth.groupcommit``): the rows of many logins in one
transaction, each login answered only once its own row is committed, never a success without its row.

Here the writer thread runs for real against the test database (transactional tests: the rows are committed
by another thread's connection). The database outage is one raised ``OperationalError`` at the insert, as in
``tests/certauth/test_authenticator_outage.py``; the end-to-end proofs are
``tests/faults/test_postgres_outage.py`` (a PostgreSQL stopped under a listener) and
``tests/faults/test_auth_event_sigkill.py`` (a listener killed mid-run: every ``<success/>`` has its row).
Batches are made deterministic by a writer that waits for a full batch (``linger`` far beyond the test).
"""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, close_old_connections, transaction
from django.utils import timezone

from certauth import authenticator as module
from certauth.models import AuthEvent
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.test_authenticator import authenticator, login
from tests.certs import make_ca, make_client
from xmppauth import groupcommit
from xmppauth.groupcommit import GroupCommit, NotRecorded

pytestmark = pytest.mark.django_db(transaction=True)

TEMPORARY = "temporary-auth-failure"
WAIT_FOR_FULL_BATCH = 600.0  # seconds: the batch below is cut by max_batch, never by the clock


def event_row(jid: str, outcome: str | None = AuthEvent.Outcome.SUCCESS) -> tuple:
    return (timezone.now(), "tcp", "127.0.0.1:1", "", "", jid, jid, outcome, "", "test")


def writer(max_batch: int) -> GroupCommit:
    return GroupCommit(
        AuthEvent,
        module._EVENT_COLUMNS,
        what="test events",
        linger=WAIT_FOR_FULL_BATCH,
        max_batch=max_batch,
        writer_thread=True,  # the thread on both legs (on SQLite the process's own writer has none)
    )


def write_concurrently(events: GroupCommit, rows: list[tuple]) -> dict[str, object]:
    """``events.write(row)`` for each row in its own thread; per JID: True when the row was in the table as
    soon as ``write`` returned (read on the caller's own connection), else the exception.

    A caller's read and the writer's transactions take turns: on SQLite's in-memory test database (shared
    cache) either one meeting the other's table lock fails at once ("database table is locked"), with no
    busy timeout as the server's file database has, so a read could fail a later row's commit."""
    outcome: dict[str, object] = {}
    turns = threading.Lock()
    insert = events._insert

    def insert_in_turn(batch: list) -> None:
        with turns:
            insert(batch)

    events._insert = insert_in_turn

    def one(row: tuple) -> None:
        jid = row[5]
        try:
            events.write(row)
            with turns:
                outcome[jid] = AuthEvent.objects.filter(jid_granted=jid).exists()
        except NotRecorded as exc:
            outcome[jid] = exc
        finally:
            close_old_connections()

    threads = [threading.Thread(target=one, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def test_rows_of_concurrent_logins_are_one_transaction_and_each_caller_returns_after_its_commit():
    events = writer(max_batch=8)
    try:
        jids = [f"user{n}@localhost" for n in range(8)]
        outcome = write_concurrently(events, [event_row(jid) for jid in jids])
        assert outcome == dict.fromkeys(jids, True)
        assert events.batches == 1
        assert AuthEvent.objects.count() == 8
    finally:
        events.stop()


def test_a_row_the_database_refuses_fails_only_its_own_caller():
    events = writer(max_batch=3)
    try:
        rows = [event_row("good1@localhost"), event_row("bad@localhost", None), event_row("good2@localhost")]
        outcome = write_concurrently(events, rows)  # outcome NULL: NOT NULL constraint failed, batch retried
        assert outcome["good1@localhost"] is True and outcome["good2@localhost"] is True
        assert isinstance(outcome["bad@localhost"], NotRecorded)
        assert sorted(AuthEvent.objects.values_list("jid_granted", flat=True)) == [
            "good1@localhost",
            "good2@localhost",
        ]
    finally:
        events.stop()


def test_an_unexpected_error_fails_its_batch_and_the_writer_goes_on(monkeypatch):
    """Whatever a batch raises, its callers get NotRecorded at once (not after the 30 s wait) and the next
    row is written: never a writer thread that died and leaves every later login waiting."""
    events = GroupCommit(
        AuthEvent, module._EVENT_COLUMNS, what="test events", linger=0.0, wait_seconds=5.0, writer_thread=True
    )
    real = events._commit
    calls = []

    def commit_that_breaks_once(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("something unexpected")
        return real(batch)

    monkeypatch.setattr(events, "_commit", commit_that_breaks_once)
    try:
        with pytest.raises(NotRecorded, match="something unexpected"):
            events.write(event_row("first@localhost"))
        events.write(event_row("second@localhost"))
        assert list(AuthEvent.objects.values_list("jid_granted", flat=True)) == ["second@localhost"]
    finally:
        events.stop()


def test_a_dead_writer_thread_is_replaced_at_the_next_row():
    events = GroupCommit(
        AuthEvent, module._EVENT_COLUMNS, what="test events", linger=0.0, wait_seconds=5.0, writer_thread=True
    )
    events.write(event_row("before@localhost"))
    events.stop()  # the thread ends as a crashed one would; the object still names it
    events._thread = threading.Thread(target=lambda: None)
    events._thread.start()
    events._thread.join()
    try:
        events.write(event_row("after@localhost"))
        assert AuthEvent.objects.filter(jid_granted="after@localhost").exists()
    finally:
        events.stop()


def test_a_caller_in_its_own_transaction_writes_there_and_its_rollback_takes_the_row():
    events = writer(max_batch=1)
    with pytest.raises(RuntimeError), transaction.atomic():
        events.write(event_row("rolled@localhost"))
        assert AuthEvent.objects.filter(jid_granted="rolled@localhost").exists()  # at once, no writer
        raise RuntimeError("rolled back")
    assert not AuthEvent.objects.exists()
    assert events.batches == 0


@pytest.fixture
def insert_fails(monkeypatch):
    """The writer's inserts fail as a database that is down does, while ``state["down"]``."""
    real = groupcommit.fastsql.insert_many
    state = {"down": True}

    def insert_many(*args, **kwargs):
        if state["down"]:
            raise OperationalError("connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(groupcommit.fastsql, "insert_many", insert_many)
    # the process's writer starts out answering: an earlier test's outage, never followed by a commit, would
    # leave its OutageLog down and the first "unavailable" line unlogged here
    monkeypatch.setattr(module.events.database, "down", False)
    return state


def test_a_success_whose_event_is_not_committed_is_temporary_auth_failure_and_the_writer_goes_on(
    insert_fails, caplog
):
    ca = make_ca("Group CA")
    add_ca_row(ca, name="Group CA")
    alice = make_client(ca, jids=["alice@localhost"])
    _, result = login(authenticator(), alice)
    assert result.jid is None and result.condition == TEMPORARY  # RFC 6120 §6.5.12, never a success
    assert not AuthEvent.objects.filter(outcome=AuthEvent.Outcome.SUCCESS).exists()
    assert "database (auth events) unavailable" in caplog.text
    assert "withdrawn: its auth event was not recorded" in caplog.text

    insert_fails["down"] = False  # the database answers again: the same writer thread commits
    _, result = login(authenticator(), alice)
    assert result.accepted and result.jid == "alice@localhost"
    event = AuthEvent.objects.get(outcome=AuthEvent.Outcome.SUCCESS)
    assert event.cert_fingerprint == alice.facts.fingerprint_sha256 and event.jid_granted == "alice@localhost"
    assert "database (auth events) answers again" in caplog.text


def test_a_refusal_whose_event_is_not_committed_is_still_the_refusal(insert_fails, caplog):
    ca = make_ca("Group CA")
    add_ca_row(ca, name="Group CA")
    _, result = login(authenticator(), make_client(ca, jids=["alice@localhost"]), authzid="bob@localhost")
    assert result.condition == "invalid-authzid"  # not turned into a temporary failure
    assert not AuthEvent.objects.exists()
    assert "auth event from 127.0.0.1:40000 not recorded" in caplog.text
