"""One change feed for every per-process cache on the login path (issue 17 §1).

A login asks the same questions every time for the same account and certificate: is the account active, which
domains are hosted, is anything on the certificate's path revoked or held, is the certificate registered to
that account. Their answers are held in memory per process (:class:`FeedCache`, each owned by the module whose
rule it is: ``accounts.domains``, ``certauth.authmethods``, ``certauth.revocation``, ``certauth.trust``) and
are valid only under the **generation** this module keeps:

- The database holds one counter (``accounts.models.ChangeFeed``, row 1). :func:`changed` bumps it in the
  transaction of every change to a watched model (:func:`watch`: ``post_save``/``post_delete``;
  :class:`FeedQuerySet`: ``update()``, ``delete()``, ``bulk_create()``, ``bulk_update()``; the raw-SQL CRL
  store calls :func:`changed` itself), so a change is never visible without its bump. It also forgets this
  process's caches at once (and again at commit, for a cache filled meanwhile from the uncommitted past).
- A process reads the counter at most every :data:`POLL_INTERVAL` seconds, on the first cache question after
  the interval (one single-row ``SELECT``, in the asking thread); a new value forgets every cache.

How stale an answer may be: a cache answer is given only when the counter was read (and found unchanged, or
the caches forgotten) less than :data:`POLL_INTERVAL` ago, so a change committed in another process is seen by
every decision taken more than :data:`POLL_INTERVAL` (plus the time one ``SELECT`` takes) after its commit; in
this process at once. A change that bypasses the feed (SQL outside the application) is seen within
:data:`MAX_AGE`, after which every cache is forgotten whether the counter moved or not. Fail closed: when the
counter cannot be read the question raises as the database query it replaces would (a login then fails with
``temporary-auth-failure``); on an event-loop thread, where Django refuses queries, a stale feed means "no
cache" (:func:`generation` returns None) and the caller reads the database its own way. Time-bound facts are
never held past their time: the revocation cache keeps an acceptance only until the earliest CRL
``nextUpdate`` (plus grace) on the path. Only reads that are the same for every login of an account or
certificate are held; refusals that depend on absence (no account yet, an unknown certificate) are not, and
writes (auth events, session rows) never pass through here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from django.apps import apps
from django.db import connection, models, transaction
from django.db.models.signals import post_delete, post_save

from xmppauth import fastsql

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds: the counter is read again when the last read began longer ago than this
# seconds: the caches are forgotten this often even when the counter did not move, so a change made by SQL
# outside the application (which does not bump it) is seen within this bound too (fail closed, DESIGN §0)
MAX_AGE = 30.0

_lock = threading.Lock()  # guards the three values below
_poll_lock = threading.Lock()  # one reader at a time; the others then find the feed fresh
_generation = 0  # this process's cache generation: +1 on a local change or a new database value
_seen: int | None = None  # the database counter as last read
_seen_at = float("-inf")  # time.monotonic() when that read began
_fresh_since = float("-inf")  # time.monotonic() when the caches were last forgotten by a read (MAX_AGE)


def _feed_model() -> type[models.Model]:
    return apps.get_model("accounts", "ChangeFeed")


def on_event_loop() -> bool:
    """Whether this thread runs an asyncio loop (Django refuses queries there)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class NotInMemory(Exception):
    """Raised under :func:`memory_only` where an answer would need the database."""


_memory_only = threading.local()


class memory_only:  # noqa: N801 (used as a function: ``with memory_only():``)
    """In this block, this thread answers from the caches alone: where an answer needs the database,
    :func:`require_database` raises :class:`NotInMemory` before any connection is touched. (On an event loop
    Django would refuse the query anyway, but only after making a connection object for the loop's current
    context, one per connection handled there, kept as long as it lives.)

    A class, not a ``contextlib.contextmanager``: a block left by an exception (every first login's check on
    the loop ends so) would throw it through a generator, which costs more than the rest of the block."""

    __slots__ = ("_outer",)

    def __enter__(self) -> None:
        self._outer = getattr(_memory_only, "on", False)
        _memory_only.on = True

    def __exit__(self, *exc_info: object) -> None:
        _memory_only.on = self._outer  # a block inside another leaves the outer one in force


def require_database() -> None:
    """Called where a cache misses and the database is read next (or, for a certificate's facts, the
    certificate parsed): raises :class:`NotInMemory` in a :func:`memory_only` block."""
    if getattr(_memory_only, "on", False):
        raise NotInMemory


def generation() -> int | None:
    """The generation cache answers may be used under now; the counter is read first when the last read is
    older than :data:`POLL_INTERVAL` (raises when the database cannot be asked). None on an event-loop thread
    whose feed is stale: no cache answer there."""
    if time.monotonic() - _seen_at < POLL_INTERVAL:
        return _generation
    if on_event_loop():
        return None
    return poll()


def poll() -> int:
    """Read the database counter (one statement) and forget the caches when it moved; the generation."""
    global _generation, _seen, _seen_at, _fresh_since
    with _poll_lock:
        if time.monotonic() - _seen_at < POLL_INTERVAL:
            return _generation  # another thread read it while this one waited
        feed = _feed_model()
        sql = fastsql.statement(
            "changefeed.read",
            lambda: f"SELECT {fastsql.column(feed, 'generation')} FROM {fastsql.table(feed)} WHERE id = 1",
        )
        started = time.monotonic()
        rows = fastsql.fetch_all(sql, [])
        if not rows:  # the migration made it; a flushed test database has none: made again, as 0
            value = feed.objects.get_or_create(pk=1)[0].generation
        else:
            value = rows[0][0]
        with _lock:
            if value != _seen or started - _fresh_since >= MAX_AGE:
                _generation += 1
                _seen = value
                _fresh_since = started
            _seen_at = started
            return _generation


def forget() -> None:
    """Forget every cache of this process now (a local change; tests between cases)."""
    global _generation
    with _lock:
        _generation += 1


def reset() -> None:
    """Forget the caches and the last read: the next question reads the counter (tests between cases)."""
    global _seen, _seen_at
    with _lock:
        _seen, _seen_at = None, float("-inf")
    forget()


def changed() -> None:
    """A watched row changed in the current transaction: bump the database counter in it (every process sees
    the change within :data:`POLL_INTERVAL`) and forget this process's caches, now and at commit."""
    feed = _feed_model()
    sql = fastsql.statement(
        "changefeed.bump",
        lambda: (
            f"UPDATE {fastsql.table(feed)} SET {fastsql.column(feed, 'generation')}"
            f" = {fastsql.column(feed, 'generation')} + 1 WHERE id = 1"
        ),
    )
    forget()
    with connection.cursor() as cursor:
        cursor.execute(sql, [])
        if cursor.rowcount == 0:  # the migration made the row; someone removed it
            feed.objects.get_or_create(pk=1)
            cursor.execute(sql, [])
    transaction.on_commit(forget)


def _row_changed(sender: type, **kwargs: Any) -> None:
    if kwargs.get("raw"):  # loaddata: no caches to keep right yet, and the feed table may not be loaded
        return
    changed()


def watch(*watched: type[models.Model]) -> None:
    """Every save and delete of these models bumps the feed (their bulk paths: :class:`FeedQuerySet`)."""
    for model in watched:
        label = model._meta.label
        post_save.connect(_row_changed, sender=model, dispatch_uid=f"feed.saved.{label}", weak=False)
        post_delete.connect(_row_changed, sender=model, dispatch_uid=f"feed.deleted.{label}", weak=False)


class FeedQuerySet(models.QuerySet):
    """The bulk paths that send no ``post_save`` bump the feed too (in the same transaction)."""

    def update(self, **kwargs: Any) -> int:
        count = super().update(**kwargs)
        if count:
            changed()
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        if result[0]:
            changed()
        return result

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(objs, *args, **kwargs)
        if created:
            changed()
        return created

    def bulk_update(self, objs: Any, fields: Any, *args: Any, **kwargs: Any) -> int:
        count = super().bulk_update(objs, fields, *args, **kwargs)
        if count:
            changed()
        return count


_MISSING = object()


class FeedCache:
    """A bounded LRU map whose entries hold only under the generation they were filled under.

    ``get(key, generation)`` gives the value or None; ``put(key, value, generation)`` keeps it only when
    ``generation`` is still current (a fill that began before a change is dropped). Values are never None.
    """

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._generation: int | None = None

    def get(self, key: Hashable, gen: int | None) -> Any:
        if gen is None:
            return None
        with self._lock:
            if gen != self._generation:
                self._entries.clear()
                self._generation = gen
                return None
            value = self._entries.get(key, _MISSING)
            if value is _MISSING:
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any, gen: int | None) -> None:
        if gen is None or gen != _generation:
            return
        with self._lock:
            if gen != self._generation:
                self._entries.clear()
                self._generation = gen
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def held_or_filled(self, key: Hashable, fill: Callable[[], Any]) -> Any:
        """The value held for ``key`` under the current generation, else ``fill()``, held when not None
        (None: nothing to hold, e.g. a row not found, asked again next time)."""
        gen = generation()
        value = self.get(key, gen)
        if value is None:
            require_database()
            value = fill()
            if value is not None:
                self.put(key, value, gen)
        return value

    def __len__(self) -> int:
        return len(self._entries)
