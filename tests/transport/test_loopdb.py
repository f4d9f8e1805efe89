"""xmppauth.loopdb and transport.workers.defer_to_database: on SQLite a session's database call runs on the
loop's own thread, inside one transaction, and goes to a worker thread whenever that would make the loop wait
(a lock held elsewhere, a slow disk); answers reach the reactor thread either way (issue 17)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time

import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction

from transport.sessions import terminations as store
from transport.sessions.models import SessionTermination
from transport.workers import defer_to_database, in_database
from xmppauth import loopdb

SQLITE = connections[DEFAULT_DB_ALIAS].vendor == "sqlite"
sqlite_only = pytest.mark.skipif(not SQLITE, reason="calls on the loop are SQLite's only (PostgreSQL: below)")


@pytest.fixture
def on_loop():
    assert loopdb.enable() is SQLITE
    yield
    loopdb.disable()


def terminations_of(jid: str) -> int:
    """Rows committed for ``jid``, read on a connection of another thread (what other processes would see)."""
    counted = {}

    def count():
        try:
            counted["rows"] = SessionTermination.objects.filter(bare_jid=jid).count()
        finally:
            connections.close_all()

    thread = threading.Thread(target=count)
    thread.start()
    thread.join(30)
    return counted["rows"]


def write_then(jid: str, then=None):
    def call():
        store.terminate_account(jid)
        return then() if then is not None else threading.current_thread().name

    return call


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_call_runs_here_in_one_transaction_committed_before_it_returns(on_loop):
    inside = {}

    def call():
        store.terminate_account("alice@example.org")
        inside["atomic"] = transaction.get_connection().in_atomic_block
        inside["thread"] = threading.current_thread().name
        return "done"

    outcome = loopdb.run(call)
    assert outcome == loopdb.Outcome("done")
    assert inside == {"atomic": True, "thread": threading.current_thread().name}
    assert terminations_of("alice@example.org") == 1  # committed: another connection sees it


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_calls_on_a_running_loop_keep_one_connection_the_threads_own(on_loop):
    async def two_calls():
        first = await in_database(lambda: connections[DEFAULT_DB_ALIAS])
        second = await asyncio.create_task(in_database(lambda: connections[DEFAULT_DB_ALIAS]))  # another task
        return first, second

    first, second = asyncio.run(two_calls())
    assert first is second is connections[DEFAULT_DB_ALIAS]  # this thread's, where no loop runs


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_an_exception_rolls_the_whole_call_back_and_comes_back_as_its_outcome(on_loop):
    def call():
        store.terminate_account("mallory@example.org")
        raise ValueError("refused half-way")

    outcome = loopdb.run(call)
    assert isinstance(outcome.error, ValueError)
    assert terminations_of("mallory@example.org") == 0  # the row written before the error is gone


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_commit_that_fails_is_the_calls_failure_whatever_it_returned(on_loop, monkeypatch):
    """The answer goes out only after its rows are on disk: a login whose auth event was not committed never
    becomes a success (the driver answers the failure with internal-server-error)."""
    connection = connections[DEFAULT_DB_ALIAS]

    def commit_refused():
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(connection, "commit", commit_refused)
    outcome = loopdb.run(write_then("carol@example.org", then=lambda: "success"))
    assert outcome.result is None
    assert isinstance(outcome.error, OperationalError)
    monkeypatch.undo()
    assert terminations_of("carol@example.org") == 0


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_lock_held_elsewhere_sends_the_call_to_a_worker_at_once_and_nothing_of_it_ran(on_loop):
    ran = []
    held, release = threading.Event(), threading.Event()

    def hold_the_write_lock():
        try:
            with transaction.atomic():  # BEGIN IMMEDIATE: SQLite's write lock, as a CRL import would hold it
                store.terminate_account("holder@example.org")
                held.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        assert loopdb.run(lambda: ran.append(1)) is None
        assert time.monotonic() - started < 1.0  # not the connection's 20 s busy timeout
        assert ran == []
    finally:
        release.set()
        holder.join(30)
    assert loopdb.run(lambda: ran.append(2)) == loopdb.Outcome(None)  # the lock is free again: runs here
    assert ran == [2]


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_transaction_that_cannot_begin_sends_the_call_to_a_worker_with_none_of_it_run(on_loop, monkeypatch):
    class Unwritable:
        def __enter__(self):
            raise OperationalError("disk I/O error")  # not busy: the database itself fails

    monkeypatch.setattr(loopdb.transaction, "atomic", Unwritable)
    ran = []
    assert loopdb.run(lambda: ran.append(1)) is None  # the worker thread meets the failure, as before
    assert ran == []


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_on_a_running_loop_django_queries_as_in_a_worker_and_the_loop_is_put_back(on_loop):
    async def main():
        loop = asyncio.get_running_loop()
        rows = await in_database(lambda: SessionTermination.objects.count())
        return rows, asyncio.get_running_loop() is loop

    assert asyncio.run(main()) == (0, True)


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_slow_calls_send_the_next_ones_to_the_worker_threads_with_one_warning(on_loop, caplog, monkeypatch):
    monkeypatch.setattr(loopdb, "PAUSE", 60.0)

    def slow():
        time.sleep(loopdb.OUTLIER)  # as a commit on a disk whose fsync takes this long

    with caplog.at_level(logging.WARNING, logger="xmppauth.loopdb"):
        outcomes = [loopdb.run(slow) for _ in range(loopdb.AVERAGE_OVER)]
    paused_at = outcomes.index(None)
    assert paused_at > 1  # one or two slow calls alone do not pause
    assert outcomes[paused_at:] == [None] * (len(outcomes) - paused_at)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "worker threads for the next 60 s" in warnings[0], warnings


@pytest.mark.django_db(transaction=True)
def test_without_enable_or_on_postgresql_nothing_runs_on_the_loop():
    loopdb.disable()
    assert loopdb.run(lambda: 1) is None
    if not SQLITE:
        assert loopdb.enable() is False
        assert loopdb.run(lambda: 1) is None
        loopdb.disable()


@pytest.mark.django_db(transaction=True)
def test_defer_to_database_answers_on_the_reactor_thread_after_returning(reactor, loop_if_sqlite, on_reactor):
    seen = {}

    def start():
        deferred = defer_to_database(reactor, write_then("bob@example.org"))
        seen["fired before returning"] = deferred.called
        return deferred.addCallback(lambda result: (result, threading.current_thread().name))

    ran_in, answered_in = on_reactor(start)
    assert seen["fired before returning"] is False  # callbacks added after the call still see the answer
    assert answered_in == "reactor"
    if SQLITE:
        assert ran_in == "reactor"
    else:
        assert ran_in.startswith("xmppauth-worker")
    assert terminations_of("bob@example.org") == 1


@pytest.mark.django_db(transaction=True)
def test_defer_to_database_hands_an_error_on_as_a_worker_would(reactor, loop_if_sqlite, on_reactor):
    def refused():
        store.terminate_account("eve@example.org")
        raise sqlite3.IntegrityError("refused")

    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        on_reactor(lambda: defer_to_database(reactor, refused))
    assert terminations_of("eve@example.org") == (0 if SQLITE else 1)  # on the loop: rolled back whole


@pytest.fixture
def loop_if_sqlite():
    loopdb.enable()
    yield
    loopdb.disable()
