"""Group commit: rows written on the login path, many callers' rows in one transaction (issue 17 §2).

Every login attempt writes one row (``certauth.authenticator.record_attempt``), and a login may be answered
only once its row is durable: an audit row lost to a crash after ``<success/>`` went out is a login nobody can
account for. One INSERT and one COMMIT per login costs a round trip and a WAL flush each; here a writer thread
per process and per table takes every row queued meanwhile (plus whatever arrives within :data:`LINGER`
seconds of the first) and writes them in one transaction, one statement (``xmppauth.fastsql.insert_many``:
a COPY on PostgreSQL, one ``executemany`` on SQLite). The caller waits until that transaction committed;
:meth:`GroupCommit.write` returns only then, or raises :class:`NotRecorded`.

- A batch that fails because the database is unavailable (``xmppauth.outage``) fails every caller in it;
  the writer thread logs the outage once, closes its connection and goes on with the next batch, which opens a
  new one (it survives the outage). Any other failure (a row the database refuses) retries each row alone, so
  only the bad row's caller fails.
- The queue is bounded (:data:`CAPACITY` rows): a caller that finds it full waits up to :data:`WAIT_SECONDS`
  for room, then fails; so does one whose batch has not committed within :data:`WAIT_SECONDS` (a hung
  database). A failed caller's row may still be committed later: then there is a row for an attempt that was
  refused, never a success without its row.
- A caller inside a transaction of its own (``transaction.atomic``: a management command, a test) writes its
  row there, at once: its transaction decides whether the row stays, as with any other write.
- One writer thread per process (a forked child starts its own at its first row), on PostgreSQL. SQLite takes
  one writer at a time, and its in-memory test database refuses a second at once: there the caller writes its
  own row in one autocommit statement before it returns, which keeps the same guarantee.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from django.db import close_old_connections, connection, models, transaction

from xmppauth import fastsql
from xmppauth.outage import DATABASE_UNAVAILABLE, OutageLog

logger = logging.getLogger(__name__)

LINGER = 0.002  # seconds the writer waits for more rows after the first of a batch
MAX_BATCH = 500  # rows per transaction
CAPACITY = 10_000  # rows queued per table and process, past it callers wait (then fail)
WAIT_SECONDS = 30.0  # how long a caller waits for room in the queue, then for its batch's commit


class NotRecorded(Exception):
    """The row was not committed (the database is unavailable, refused the row, or did not answer in time)."""


class _Pending:
    """One queued row and the caller waiting for its batch."""

    __slots__ = ("committed", "error", "row")

    def __init__(self, row: Sequence[Any]) -> None:
        self.row = row
        self.committed = threading.Event()
        self.error: BaseException | None = None


class GroupCommit:
    """Rows of ``model`` (values in ``names`` order, as ``fastsql.insert_many`` takes them), group-committed
    by one writer thread per process (see the module docstring)."""

    def __init__(
        self,
        model: type[models.Model],
        names: Sequence[str],
        *,
        what: str,
        linger: float = LINGER,
        max_batch: int = MAX_BATCH,
        capacity: int = CAPACITY,
        wait_seconds: float = WAIT_SECONDS,
        writer_thread: bool | None = None,
    ) -> None:
        self.model = model
        self.names = tuple(names)
        self.linger = linger
        self.max_batch = max_batch
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        # None: a writer thread on PostgreSQL, none on SQLite (below)
        self.writer_thread = writer_thread
        self.database = OutageLog(logger, f"database ({what})")
        self.what = what
        self.batches = 0  # transactions committed by this process's writer (tests and bench read them)
        self._queue: queue.Queue[_Pending | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    def write(self, row: Sequence[Any]) -> None:
        """Commit ``row``; returns once it is committed, raises :class:`NotRecorded` when it was not."""
        # the caller's own transaction decides (module docstring); SQLite has no writer thread
        if connection.in_atomic_block or not self._uses_writer_thread():
            self._write_here(row)
            return
        pending = _Pending(row)
        self._ensure_writer()
        try:
            self._queue.put(pending, timeout=self.wait_seconds)
        except queue.Full:
            raise NotRecorded(f"{self.what}: {self.capacity} rows waiting to be written") from None
        if not pending.committed.wait(self.wait_seconds):
            raise NotRecorded(f"{self.what}: not committed within {self.wait_seconds:g} s")
        if pending.error is not None:
            raise NotRecorded(str(pending.error)) from pending.error

    def _uses_writer_thread(self) -> bool:
        """SQLite takes one writer at a time (and its in-memory test database's shared cache refuses a second
        at once instead of waiting), so there the caller writes its own row, committed before it returns:
        the same guarantee without the thread. PostgreSQL gets the writer thread."""
        if self.writer_thread is not None:
            return self.writer_thread
        return connection.vendor != "sqlite"

    def _write_here(self, row: Sequence[Any]) -> None:
        """One row in the caller's thread: in its transaction if it has one, else its own autocommit
        statement; NotRecorded when it failed."""
        try:
            fastsql.insert_many(self.model, self.names, [row])
        except DATABASE_UNAVAILABLE as exc:
            self.database.failed(exc)
            raise NotRecorded(str(exc)) from exc
        except Exception as exc:  # a row the database refuses
            if connection.in_atomic_block:
                raise  # the caller's transaction is broken by it: the caller must see why
            logger.error("%s: row not written: %s", self.what, exc)
            raise NotRecorded(str(exc)) from exc
        self.database.ok()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then end the writer thread (at exit; a later row starts a new one)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)

    def _running(self) -> bool:
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()

    def _ensure_writer(self) -> None:
        if self._running():
            return
        with self._start_lock:
            if self._running():
                return
            if self._thread is not None and self._pid == os.getpid():
                logger.error("%s: the writer thread had ended; a new one takes the queue", self.what)
            if self._pid != os.getpid():  # a forked child: the parent's queue and thread are not ours
                self._queue = queue.Queue(self.capacity)
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name=f"group commit: {self.model._meta.label}", daemon=True
            )
            self._thread.start()

    # -- the writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = self._collect(batch)
            try:
                self._commit(batch)
            except Exception as exc:  # never a writer that dies and leaves every caller waiting
                logger.exception("%s: batch of %d rows not written", self.what, len(batch))
                self._fail(batch, exc)
            if stop:
                return

    def _collect(self, batch: list[_Pending]) -> bool:
        """Add to ``batch`` what is queued now and what comes within ``linger``; True when told to stop."""
        deadline = time.monotonic() + self.linger
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _commit(self, batch: list[_Pending]) -> None:
        close_old_connections()  # one the database dropped, or past CONN_MAX_AGE, is not used
        try:
            self._insert(batch)
        except DATABASE_UNAVAILABLE as exc:
            self.database.failed(exc)
            self._fail(batch, exc)
        except Exception as exc:  # a row the database refuses: each row alone, only the bad one fails
            if len(batch) == 1:
                logger.error("%s: row not written: %s", self.what, exc)
                self._fail(batch, exc)
            else:
                for pending in batch:
                    self._commit([pending])
                return
        else:
            self.database.ok()
            self.batches += 1
            for pending in batch:
                pending.committed.set()
        finally:
            close_old_connections()

    def _insert(self, batch: list[_Pending]) -> None:
        with transaction.atomic():
            fastsql.insert_many(self.model, self.names, [pending.row for pending in batch])

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            pending.error = exc
            pending.committed.set()


def stop_at_exit(writer: GroupCommit) -> GroupCommit:
    """``writer``, stopped (its queue written) when the interpreter exits normally."""
    atexit.register(writer.stop)
    return writer
