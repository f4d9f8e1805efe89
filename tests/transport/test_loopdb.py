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


def refused_after_writing(jid: str):
    def call():
        store.terminate_account(jid)
        raise ValueError("refused half-way")

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
    outcome = loopdb.run(refused_after_writing("mallory@example.org"))
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
    connection = connections[DEFAULT_DB_ALIAS]
    real_commit = connection.commit

    def slow_commit():
        time.sleep(loopdb.OUTLIER)  # as a disk whose fsync takes this long
        return real_commit()

    monkeypatch.setattr(connection, "commit", slow_commit)
    with caplog.at_level(logging.WARNING, logger="xmppauth.loopdb"):
        outcomes = [loopdb.run(write_then("slow@example.org")) for _ in range(loopdb.AVERAGE_OVER)]
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


# --- calls made in one turn of the loop share one transaction -------------------------------------------


def in_one_turn(calls):
    """Submit every call from one callback of a running loop (as sessions whose sockets were read in the same
    turn do); their outcomes, in order, and how many commits Django made meanwhile."""
    connection = connections[DEFAULT_DB_ALIAS]
    commits = []
    real_commit = connection.commit

    def counted_commit():
        commits.append(1)
        return real_commit()

    async def main():
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in calls]
        submitted = []

        def one_turn():
            for call, answer in zip(calls, answers, strict=True):
                loopdb.submit(loop, call, (), answer.set_result)
                submitted.append(answer.done())  # never answered before submit returns

        connection.commit = counted_commit
        try:
            loop.call_soon(one_turn)
            outcomes = await asyncio.gather(*answers)
        finally:
            del connection.commit
        assert submitted == [False] * len(calls)
        return outcomes

    return asyncio.run(main()), len(commits)


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_calls_submitted_in_one_turn_run_in_order_in_one_transaction_and_are_answered_after_its_commit(
    on_loop,
):
    order, seen = [], {}

    def writer(jid):
        def call():
            order.append(jid)
            store.terminate_account(jid)
            return jid

        return call

    def last():
        seen["in_atomic_block"] = transaction.get_connection().in_atomic_block
        return "last"

    jids = [f"batch{n}@example.org" for n in range(3)]
    outcomes, commits = in_one_turn([*(writer(jid) for jid in jids), last])
    assert outcomes == [*(loopdb.Outcome(jid) for jid in jids), loopdb.Outcome("last")]
    assert order == jids and seen == {"in_atomic_block": True}
    assert commits == 1
    assert [terminations_of(jid) for jid in jids] == [1, 1, 1]


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_call_that_raises_in_a_batch_is_rolled_back_alone_and_the_others_commit(on_loop):
    refused = refused_after_writing("mallory@example.org")
    outcomes, commits = in_one_turn([write_then("alice@example.org"), refused, write_then("bob@example.org")])
    assert outcomes[0].error is None and outcomes[2].error is None
    assert isinstance(outcomes[1].error, ValueError)
    assert commits == 1
    assert terminations_of("mallory@example.org") == 0
    assert terminations_of("alice@example.org") == terminations_of("bob@example.org") == 1


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_call_rolled_back_in_a_batch_takes_its_on_commit_callbacks_with_it(on_loop):
    """What Django's savepoint rollback does (the call's savepoint is SQLite's own, loopdb._in_a_savepoint):
    a callback registered by a call whose writes are undone never runs; the others' run after the commit."""
    ran = []

    def registers_then(name, fail):
        def call():
            store.terminate_account(f"{name}@example.org")
            transaction.on_commit(lambda: ran.append(name))
            if fail:
                raise ValueError("refused after registering")
            return name

        return call

    calls = [registers_then("alice", False), registers_then("mallory", True), registers_then("bob", False)]
    outcomes, commits = in_one_turn(calls)
    assert isinstance(outcomes[1].error, ValueError) and commits == 1
    assert ran == ["alice", "bob"]
    assert terminations_of("mallory@example.org") == 0


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_calls_own_atomic_blocks_nest_inside_its_savepoint(on_loop):
    """A call may use ``transaction.atomic()`` itself: its inner rollback undoes only the inner block, and the
    call's failure afterwards undoes the whole call, the inner block's committed part included."""

    def inner_rollback_then(fail):
        def call():
            with transaction.atomic():
                store.terminate_account("kept-before@example.org" if not fail else "lost@example.org")
            try:
                with transaction.atomic():
                    store.terminate_account("inner@example.org")
                    raise KeyError("inner block refused")
            except KeyError:
                pass
            if fail:
                raise ValueError("the call refused after its inner blocks")
            return "ok"

        return call

    outcomes, commits = in_one_turn([inner_rollback_then(False), inner_rollback_then(True)])
    assert outcomes[0] == loopdb.Outcome("ok") and isinstance(outcomes[1].error, ValueError)
    assert commits == 1
    assert terminations_of("kept-before@example.org") == 1
    assert terminations_of("inner@example.org") == terminations_of("lost@example.org") == 0


@sqlite_only
@pytest.mark.parametrize("alone", [True, False], ids=["alone", "in a batch"])
@pytest.mark.django_db(transaction=True)
def test_a_call_that_caught_a_failed_query_is_answered_with_an_error_never_a_success_rolled_back(
    on_loop, alone
):
    """Django marks the transaction for rollback when a query fails inside it, even when the caller catches
    the error; its commit would then roll back without a word: the call must not be told it succeeded."""

    def swallowed():
        store.terminate_account("carol@example.org")
        try:
            with transaction.mark_for_rollback_on_error():
                connections[DEFAULT_DB_ALIAS].cursor().execute("INSERT INTO no_such_table VALUES (1)")
        except OperationalError:
            pass
        return "success"

    calls = [swallowed] if alone else [swallowed, write_then("dave@example.org")]
    outcomes, _ = in_one_turn(calls)
    assert isinstance(outcomes[0].error, transaction.TransactionManagementError), outcomes[0]
    assert terminations_of("carol@example.org") == 0
    if not alone:
        assert outcomes[1].error is None and terminations_of("dave@example.org") == 1


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_commit_that_fails_fails_every_call_of_the_batch(on_loop, monkeypatch):
    connection = connections[DEFAULT_DB_ALIAS]

    def commit_refused():
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(connection, "commit", commit_refused)
    outcomes = loopdb.run_batch([(write_then("erin@example.org"), ()), (write_then("frank@example.org"), ())])
    monkeypatch.undo()
    assert [type(outcome.error) for outcome in outcomes] == [OperationalError, OperationalError]
    assert terminations_of("erin@example.org") == terminations_of("frank@example.org") == 0


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_batch_that_cannot_begin_here_goes_to_the_workers_with_none_of_it_run(on_loop, monkeypatch):
    class Unwritable:
        def __enter__(self):
            raise OperationalError("database is locked")  # the write lock held elsewhere, busy at once

    monkeypatch.setattr(loopdb.transaction, "atomic", Unwritable)
    ran = []
    outcomes, _ = in_one_turn([lambda: ran.append(1), lambda: ran.append(2)])
    assert outcomes == [None, None] and ran == []


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_batch_holds_at_most_max_batch_calls(on_loop, monkeypatch):
    monkeypatch.setattr(loopdb, "MAX_BATCH", 2)
    outcomes, commits = in_one_turn([lambda n=n: n for n in range(5)])
    assert outcomes == [loopdb.Outcome(n) for n in range(5)]
    assert commits == 3


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_only_time_spent_waiting_at_commit_pauses_the_loop_never_the_calls_own_time(on_loop, monkeypatch):
    """A batch of many calls takes long, and a busy machine preempts the process in the middle of one: neither
    is the disk, and neither would get better in the worker threads."""
    monkeypatch.setattr(loopdb, "PAUSE", 60.0)

    def compute():
        deadline = time.thread_time() + 2 * loopdb.SLOW_AVERAGE
        while time.thread_time() < deadline:
            pass

    def preempted():
        time.sleep(2 * loopdb.SLOW_AVERAGE)  # off the CPU, as while another process runs

    for call in (compute, preempted):
        assert all(loopdb.run(call) is not None for _ in range(2 * loopdb.AVERAGE_OVER))
    assert loopdb.accepting()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_transaction_that_never_committed_is_no_sample_of_the_disk(on_loop, monkeypatch):
    """Only a commit tells how long the disk takes: calls that could not begin (the lock held elsewhere) or
    that were rolled back would otherwise pull the average down and hide a slow disk."""
    monkeypatch.setattr(loopdb, "_average", 0.9 * loopdb.SLOW_AVERAGE)
    for _ in range(loopdb.AVERAGE_OVER):
        assert isinstance(loopdb.run(refused_after_writing("rolled@example.org")).error, ValueError)
    assert loopdb._average == 0.9 * loopdb.SLOW_AVERAGE

    class Unwritable:
        def __enter__(self):
            raise OperationalError("database is locked")

    monkeypatch.setattr(loopdb.transaction, "atomic", Unwritable)
    assert all(loopdb.run(lambda: None) is None for _ in range(loopdb.AVERAGE_OVER))
    assert loopdb._average == 0.9 * loopdb.SLOW_AVERAGE
