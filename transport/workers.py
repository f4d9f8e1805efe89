"""The listeners' worker threads: blocking calls (the database, Redis) off the event loop, answered on it.

Two ways in, one per kind of caller:

- :func:`defer_to_worker`, in place of Twisted's ``deferToThreadPool(reactor, reactor.getThreadPool(), f,
  *args)``: a Deferred that fires on the reactor thread with ``f(*args)``'s result, or errbacks with its
  Failure (the TCP adapter, the session registry, liveness, the trust refresh). It runs on this module's
  pool of :data:`MAX_WORKERS` threads, one per process.
- :func:`in_worker`, in place of asgiref's ``sync_to_async(f, thread_sensitive=False)`` (the IM bridge and the
  router) and channels' ``database_sync_to_async`` (the WebSocket and BOSH driver, which ran every HTTP
  session's database calls in asgiref's one thread-sensitive thread, one after the other): awaited on an
  asyncio loop, run on that loop's default executor, as asgiref's was (``asyncio.run`` shuts it down with
  its loop).

A session's own database calls (the certificate, SASL, the session row, the IM bridge's routing) go through
:func:`defer_to_database` and :func:`in_database` instead: on SQLite, in a listener process, they run on the
loop's own thread while that costs the loop nothing noticeable (``xmppauth.loopdb``: never waiting for a lock,
never on a slow disk twice), and in a worker thread otherwise.

Why not theirs (issue 17): a login makes about five such calls (certificate, SASL, the session row in and out,
the older session at bind), and each paid for machinery it does not need. Twisted's goes through its pool's
coordinating "team", a logging context, and ``reactor.callFromThread``, which on the asyncio reactor is a
``callLater(0)`` scheduled through ``call_soon_threadsafe`` (a ``DelayedCall`` and an asyncio timer for every
answer); asgiref's copies the context and wraps the call in its own futures. Here the answer is one
``call_soon_threadsafe`` on the loop. ``bench/handoff.py`` measures each against ours.

Each thread keeps its own database connection (``xmppauth.dbconn``), so the pool's size bounds a process's
connections, as Twisted's reactor pool (10 threads) did. The pool is never stopped by hand: at interpreter
exit ``concurrent.futures`` runs what is queued and joins the threads, as Twisted's pool did at the reactor's
shutdown; a call made while the reactor shuts down still runs. A forked child makes its own pool.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from xmppauth import loopdb
from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)

MAX_WORKERS = 10  # Twisted's reactor thread pool's default maximum, which these threads replace

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def worker_pool() -> ThreadPoolExecutor:
    """This process's pool (made on first use; a forked child does not use its parent's)."""
    global _pool
    pool = _pool
    if pool is None or pool[0] != os.getpid():
        with _pool_lock:
            pool = _pool
            if pool is None or pool[0] != os.getpid():
                pool = _pool = (
                    os.getpid(),
                    ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="xmppauth-worker"),
                )
    return pool[1]


def defer_to_worker(reactor: Any, function: Callable[..., Any], *args: Any) -> Deferred:
    """``function(*args)`` in a worker thread; the Deferred fires on ``reactor``'s thread."""
    loop = getattr(reactor, "_asyncioEventloop", None)  # Twisted's asyncio reactor: its loop, directly
    call_on_reactor = loop.call_soon_threadsafe if loop is not None else reactor.callFromThread
    deferred: Deferred = Deferred()
    future = worker_pool().submit(function, *args)
    future.add_done_callback(functools.partial(_answer, call_on_reactor, deferred))
    return deferred


def defer_to_database(reactor: Any, function: Callable[..., Any], *args: Any) -> Deferred:
    """A session's Django call, ``function(*args)`` between two ``close_old_connections()``: on the reactor's
    own thread when ``xmppauth.loopdb`` takes it (at the end of this turn of the loop, in one transaction with
    the other calls of the turn), else in a worker thread. The Deferred fires on the reactor thread either
    way, and never before this returns (a caller adds its callbacks first)."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None and asyncio.events._get_running_loop() is loop and loopdb.accepting():
        deferred: Deferred = Deferred()
        loopdb.submit(
            loop, function, args, functools.partial(_answered_on_loop, reactor, deferred, function, args)
        )
        return deferred
    return defer_to_worker(reactor, with_fresh_connections, function, *args)


def _answered_on_loop(
    reactor: Any,
    deferred: Deferred,
    function: Callable[..., Any],
    args: tuple[Any, ...],
    outcome: loopdb.Outcome | None,
) -> None:
    if outcome is not None:
        _settle(deferred, outcome.result, outcome.error)
        return
    # it could not run on the loop (none of it ran): a worker thread, which waits for the lock as before
    defer_to_worker(reactor, with_fresh_connections, function, *args).chainDeferred(deferred)


async def in_database(function: Callable[..., Any], *args: Any) -> Any:
    """``await`` a session's Django call (as :func:`defer_to_database`), from a coroutine on the loop."""
    if loopdb.accepting():
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[loopdb.Outcome | None] = loop.create_future()
        loopdb.submit(loop, function, args, functools.partial(_set_unless_done, answered))
        outcome = await answered
        if outcome is not None:
            if outcome.error is not None:
                raise outcome.error
            return outcome.result
    return await in_worker(with_fresh_connections, function, *args)


def _set_unless_done(future: asyncio.Future[Any], outcome: loopdb.Outcome | None) -> None:
    if not future.done():  # the coroutine was cancelled meanwhile: the call ran, as a worker's would have
        future.set_result(outcome)


async def in_worker(function: Callable[..., Any], *args: Any) -> Any:
    """``await`` ``function(*args)`` run in a thread of the running loop's default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(function, *args))


def _answer(call_on_reactor: Callable[..., Any], deferred: Deferred, future: Future) -> None:
    """In the worker thread: hand the outcome to the reactor thread."""
    try:
        call_on_reactor(_fire, deferred, future)
    except RuntimeError:  # the loop is closed: the process is ending, nobody waits for this answer
        logger.debug("a worker call finished after the reactor's loop closed; its answer is dropped")


def _fire(deferred: Deferred, future: Future) -> None:
    error = future.exception()
    _settle(deferred, None if error is not None else future.result(), error)


def _settle(deferred: Deferred, result: Any, error: BaseException | None) -> None:
    """Fire ``deferred`` with a call's result, or errback with the error it raised (traceback kept)."""
    if error is None:
        deferred.callback(result)
    else:
        deferred.errback(Failure(error, type(error), error.__traceback__))
