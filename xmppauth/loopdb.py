"""A session's short SQLite calls on the event loop's own thread, when that costs the loop nothing noticeable.

Why (issue 17): a login hands four calls to a worker thread (the certificate, SASL, the session row in and
out). Each hand-off, and above all the GIL changing hands between the reactor thread and a busy worker at
every SQLite and OpenSSL call, cost a third of a login's server CPU on a two-core machine:
``bench.profile_login --database-on-loop`` (a probe that runs every such call on the loop) measured 76
context switches per login against 7, and 1.4 ms of kernel time against 0.5. SQLite is a library in this
process, so a short call costs the loop no more than the hand-off would. PostgreSQL is a round trip to
another process: its calls always go to the worker threads.

Three rules keep the loop from waiting on the database (each falls back to the worker threads, which wait
as before; nothing is refused for it):

- **Never wait for a lock.** The call runs inside one transaction begun with ``BEGIN IMMEDIATE`` on a
  connection whose busy timeout is 0: when another connection (a worker, another listener process, a CRL
  import, the admin) holds SQLite's write lock, the ``BEGIN`` fails at once, before any of the call's code
  ran, and the call goes to a worker thread. Holding the lock from the start, nothing inside can meet it.
  A transaction that cannot begin for another reason (the database unreachable, a disk error) sends the
  call there too, before any of it ran: it meets the failure where it always has, and is answered as it
  always was.
- **Never a slow disk for long.** The time the loop spends waiting at each commit (the commit's wall time
  less the thread's CPU time in it: the fsync) goes into a moving average (the last :data:`AVERAGE_OVER`
  transactions or so). When that average passes :data:`SLOW_AVERAGE` (on the machine of ``bench/`` a
  commit's fsync takes about 0.25 ms), the calls of the next :data:`PAUSE` seconds go to the worker
  threads, with one warning. The calls' own time does not count: a batch of many calls is long, but each
  of them would take the loop as long anywhere else, and time the process spends preempted by others (a
  busy machine) is no reason to add the worker threads' hand-offs to its load. Single slow commits are let
  be: SQLite's first writes after start-up, a WAL checkpoint. A disk whose fsync takes milliseconds would
  otherwise stall every session at every commit; this way it stalls them a few times per pause.
- **Only where it is switched on**: :func:`enable` is called by the listener commands (``runc2s``,
  ``runxmpp``) on SQLite; everywhere else (tests, Celery, management commands) nothing changes. Not by
  ``runc2s --reuse-port``: processes sharing a port share the SQLite file, and each call on a loop holds its
  write lock while it runs (verifying a chain included), so they would take turns at it (``bench.compare``,
  two processes: p99 1.0-1.1 s with it, 0.84-0.86 s without).

Durability is unchanged: the call's transaction commits before its answer is handed back, so an auth event
is on disk before ``<success/>`` is sent, as with a worker thread's autocommit. A call that raises is rolled
back whole and answered as the worker's failure would be; so is one whose commit fails, whatever it
returned (a login then ends with ``internal-server-error``, never a ``<success/>`` whose row was lost).

**Calls made in one turn of the loop share one transaction** (:func:`submit`). The loop reads every socket
that is ready before it runs what those reads scheduled, so at load the calls of many sessions arrive in the
same turn (``bench.profile_login``: 16 on average at 50 concurrent logins). They are run at the end of that
turn, one after the other, each inside a savepoint of one ``BEGIN IMMEDIATE`` transaction, and answered after
its one commit. A call that raises is rolled back to its savepoint alone and answered with its error; the
others go on. A commit that fails fails every call of the batch (none of their rows exists). The
``BEGIN``, the ``COMMIT`` with its fsync, and Django's transaction bookkeeping are then paid once per turn
instead of once per call. At most :data:`MAX_BATCH` calls share one.

Each call sees what a worker thread sees: no running loop. Django refuses queries on a thread that runs an
event loop, the change feed polls as in a worker, and Django's connection is this thread's own (its
connections are per thread where no loop runs, per asyncio context where one does), kept for all the calls
made here, as each worker thread keeps its own.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.transaction import TransactionManagementError

from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)

SLOW_AVERAGE = 0.003  # seconds: the moving average of the waits at commit that pauses the calls on the loop
AVERAGE_OVER = 20  # transactions: the moving average's weight for a new one is 1/AVERAGE_OVER
OUTLIER = 0.02  # seconds: a longer wait counts as this long in the average (one outlier never pauses)
PAUSE = 30.0  # seconds the calls go to worker threads after that
MAX_BATCH = 64  # calls that share one transaction (the write lock is held while they all run)

_SAVEPOINT = 'SAVEPOINT "loopdb_call"'
_RELEASE = 'RELEASE "loopdb_call"'
_ROLLBACK_TO = 'ROLLBACK TO "loopdb_call"'

_enabled = False
_paused_until = 0.0
_average = 0.0
_local = threading.local()


@dataclass(frozen=True)
class Outcome:
    """What a call on the loop gave: its result, or the exception it raised (to hand on as a worker's)."""

    result: Any = None
    error: BaseException | None = None


def enable() -> bool:
    """Switch on for this process when its database is SQLite (the listener commands call it); True if on."""
    global _enabled
    _enabled = connections[DEFAULT_DB_ALIAS].vendor == "sqlite"
    if _enabled:
        logger.debug("SQLite: session database calls run on the event loop while they are short")
    return _enabled


def disable() -> None:
    global _enabled, _paused_until, _average
    _enabled = False
    _paused_until, _average = 0.0, 0.0


def accepting() -> bool:
    """Whether a call made now on this thread may run here: on, not paused, not inside a call running here."""
    return _enabled and time.monotonic() >= _paused_until and not getattr(_local, "busy", False)


Call = tuple[Callable[..., Any], tuple[Any, ...]]
Answer = Callable[["Outcome | None"], None]


def submit(
    loop: asyncio.AbstractEventLoop, function: Callable[..., Any], args: tuple[Any, ...], answer: Answer
) -> None:
    """Run ``function(*args)`` on ``loop``'s thread at the end of this turn of the loop, in the transaction of
    every call submitted in the same turn (module doc); ``answer(outcome)`` is then called on the loop, after
    the commit, and never before this returns. ``answer(None)``: the batch could not run here (paused since,
    the write lock taken elsewhere, the transaction could not begin), and none of the call ran: the caller
    hands it to a worker thread. Call only where :func:`accepting` said yes."""
    batch = getattr(_local, "batch", None)
    if batch is None or len(batch) >= MAX_BATCH:
        batch = _local.batch = []
        loop.call_soon(_run_submitted, batch)
    batch.append((function, args, answer))


def _run_submitted(batch: list[tuple[Callable[..., Any], tuple[Any, ...], Answer]]) -> None:
    if getattr(_local, "batch", None) is batch:
        _local.batch = None  # a call submitted from now on opens the next batch
    outcomes = run_batch([(function, args) for function, args, _ in batch])
    for (function, _, answer), outcome in zip(batch, outcomes, strict=True):
        try:
            answer(outcome)
        except Exception:  # one caller's failure to take its answer never keeps the others from theirs
            logger.exception("the answer to a database call (%s) failed", _name(function))


def run(function: Callable[..., Any], *args: Any) -> Outcome | None:
    """``function(*args)`` on this (the loop's) thread, inside one transaction; None when the rules above
    send it to a worker thread instead (off, paused, the write lock taken, or a call already running here)."""
    return run_batch([(function, args)])[0]


def run_batch(calls: Sequence[Call]) -> list[Outcome | None]:
    """Every call on this thread, in one transaction (savepoints between them when there are several), each
    with its outcome; all None when the rules above send them to a worker thread instead."""
    if not accepting():
        return [None] * len(calls)
    _local.busy = True
    try:
        outcomes, waited = as_in_a_worker(with_fresh_connections, _in_one_transaction, calls)
    except Exception as error:  # the connection itself failed (opening, rolling back): every call's failure
        return [Outcome(error=error)] * len(calls)
    finally:
        _local.busy = False
    if waited is not None:  # only a commit that ran tells how long the disk takes
        _note_duration(waited, calls[-1][0])
    return outcomes


def as_in_a_worker(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on this thread as a worker thread would see it: no running loop (so Django allows
    its queries and keeps this thread's connection, and the change feed polls as in a worker)."""
    running = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    try:
        return function(*args)
    finally:
        asyncio.events._set_running_loop(running)


def _in_one_transaction(calls: Sequence[Call]) -> tuple[list[Outcome | None], float | None]:
    """The calls' outcomes, and how long the commit waited (its wall time less its CPU time: the fsync); None
    when no commit ran (the transaction could not begin, or was rolled back)."""
    atomic = _begin()
    if atomic is None:
        return [None] * len(calls), None
    connection = connections[DEFAULT_DB_ALIAS]
    if len(calls) == 1:  # no savepoint: the call's failure rolls back the transaction, which is its alone
        function, args = calls[0]
        outcome = _alone(connection, function, args)
        if outcome.error is not None:
            atomic.__exit__(type(outcome.error), outcome.error, outcome.error.__traceback__)
            return [outcome], None
        outcomes: list[Outcome | None] = [outcome]
    else:
        outcomes = []
        for function, args in calls:
            try:
                outcomes.append(_in_a_savepoint(connection, function, args))
            except DatabaseError as error:  # rolling back to the savepoint failed: nothing of the batch holds
                atomic.__exit__(type(error), error, error.__traceback__)
                ran = [Outcome(error=error)] * (len(outcomes) + 1)
                return [*ran, *[None] * (len(calls) - len(ran))], None  # those not run: the worker threads
    started, computing = time.monotonic(), time.thread_time()
    try:
        atomic.__exit__(None, None, None)  # COMMIT: the answers go out only after their rows are on disk
    except DatabaseError as error:  # rolled back (Django's Atomic): what the calls returned never happened
        return [Outcome(error=error)] * len(calls), None
    return outcomes, max((time.monotonic() - started) - (time.thread_time() - computing), 0.0)


def _alone(connection: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
    try:
        result = function(*args)
    except BaseException as error:
        return Outcome(error=error)
    return _unless_broken(connection, result)


def _in_a_savepoint(connection: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
    """One call of a batch: rolled back to its savepoint alone when it raises, or when it left the
    transaction unusable (Django's ``needs_rollback``: a query failed inside it and was caught there).

    The savepoint is SQLite's own, on the open connection (``SAVEPOINT``, ``RELEASE``, ``ROLLBACK TO``: a
    name Django never uses, so the call's own ``atomic()`` blocks nest inside it): Django's savepoint
    methods cost 60 µs a pair here against 4. What Django would do besides is done here: the call's
    ``on_commit`` callbacks are dropped with its writes, and its errors are Django's."""
    raw = connection.connection
    callbacks = len(connection.run_on_commit)
    with connection.wrap_database_errors:
        raw.execute(_SAVEPOINT)
    try:
        outcome = _unless_broken(connection, function(*args))
    except BaseException as error:
        outcome = Outcome(error=error)
    with connection.wrap_database_errors:
        if outcome.error is None:
            raw.execute(_RELEASE)
            return outcome
        connection.needs_rollback = False  # as Django's Atomic does before rolling back to its savepoint
        raw.execute(_ROLLBACK_TO)
        raw.execute(_RELEASE)
    del connection.run_on_commit[callbacks:]  # registered by the call: its writes are gone
    return outcome


def _unless_broken(connection: Any, result: Any) -> Outcome:
    """``result``, unless the call left the transaction marked for rollback: Django would then roll it back at
    the commit without a word, so the call is answered with an error instead of a success that never held."""
    if connection.needs_rollback:
        return Outcome(
            error=TransactionManagementError("a query failed inside the call; its writes are undone")
        )
    return Outcome(result)


def _begin() -> Any:
    """The call's transaction, begun (``BEGIN IMMEDIATE``, settings' ``transaction_mode``) on this thread's
    connection, which never waits for a lock; None when it cannot begin here now: another connection holds
    the write lock (busy at once), or the database cannot be reached. The call then runs in a worker thread,
    which waits for the lock, or meets the outage and answers it its own way, as before."""
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        connection.ensure_connection()
        raw = connection.connection
        if getattr(_local, "unhurried", None) is not raw:
            raw.execute("PRAGMA busy_timeout = 0")
            _local.unhurried = raw
        atomic = transaction.atomic()
        atomic.__enter__()
    except (DatabaseError, sqlite3.Error) as exc:
        logger.debug("a session's database call goes to a worker thread: %s", exc)
        return None
    return atomic


def _note_duration(seconds: float, function: Callable[..., Any]) -> None:
    global _paused_until, _average
    _average += (min(seconds, OUTLIER) - _average) / AVERAGE_OVER
    if _average < SLOW_AVERAGE:
        return
    _paused_until = time.monotonic() + PAUSE
    logger.warning(
        "database calls wait on the event loop (%.1f ms on average, the last one %s: %.1f ms): session "
        "database calls go to worker threads for the next %.0f s",
        _average * 1000,
        _name(function),
        seconds * 1000,
        PAUSE,
    )


def _name(function: Callable[..., Any]) -> str:
    named = getattr(function, "func", function)  # a functools.partial: the function it calls
    return getattr(named, "__qualname__", type(named).__name__)
