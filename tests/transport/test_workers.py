"""transport.workers: a blocking call runs in a worker thread and its answer comes back on the reactor thread,
as Twisted's deferToThreadPool did (the listeners' database calls, issue 17), on the suite's real reactor."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from transport.workers import MAX_WORKERS, defer_to_worker, in_worker, worker_pool


def call_and_watch(reactor, function):
    """On the reactor: defer ``function`` and note which thread its answer reaches."""
    where: dict[str, object] = {}

    def answered(result):
        where["answered in"] = threading.current_thread().name
        return result

    def failed(failure):
        where["answered in"] = threading.current_thread().name
        where["traceback"] = failure.getTraceback()
        return failure

    def start():
        return defer_to_worker(reactor, function).addCallbacks(answered, failed)

    return start, where


def test_the_call_runs_in_a_worker_and_its_result_comes_back_on_the_reactor_thread(reactor, on_reactor):
    ran_in = {}

    def work():
        ran_in["thread"] = threading.current_thread().name
        return 42

    start, where = call_and_watch(reactor, work)
    assert on_reactor(start) == 42
    assert ran_in["thread"].startswith("xmppauth-worker")
    assert where["answered in"] == "reactor"


def test_an_exception_comes_back_as_the_deferreds_failure_with_its_traceback(reactor, on_reactor):
    def refused_row():
        raise ValueError("the database refused the row")

    start, where = call_and_watch(reactor, refused_row)
    with pytest.raises(ValueError, match="the database refused the row"):
        on_reactor(start)
    assert where["answered in"] == "reactor"
    assert "in refused_row" in where["traceback"]  # where it was raised, for the error log


def test_at_most_max_workers_calls_run_at_once_and_every_call_is_answered(reactor, on_reactor):
    running, most = [0], [0]
    lock = threading.Lock()
    release = threading.Event()
    calls = MAX_WORKERS * 3

    def slow(number):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        return number

    def start():
        from twisted.internet import defer

        deferreds = [defer_to_worker(reactor, slow, number) for number in range(calls)]
        reactor.callLater(0.3, release.set)  # every thread is busy by then, and the rest queued
        return defer.gatherResults(deferreds)

    assert on_reactor(start) == list(range(calls))
    assert most[0] == MAX_WORKERS


def test_a_coroutine_awaits_the_call_run_in_a_worker():
    def work(a, b):
        return threading.current_thread().name, a + b

    async def caller():
        return threading.current_thread().name, await in_worker(work, 40, 2)

    caller_thread, (worker_thread, total) = asyncio.run(caller())
    assert total == 42
    assert worker_thread.startswith("asyncio_") and caller_thread != worker_thread  # the loop's executor


def test_an_exception_reaches_the_awaiting_coroutine():
    def refused_row():
        raise ValueError("the database refused the row")

    with pytest.raises(ValueError, match="the database refused the row"):
        asyncio.run(in_worker(refused_row))


def test_one_pool_for_the_process_and_another_in_a_forked_child():
    parent_pool = worker_pool()
    assert worker_pool() is parent_pool
    parent_pool.submit(lambda: None).result(10)  # the parent's pool has a thread, which a child lacks
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its own pool, which runs a call (the parent's threads do not exist here)
        signal.alarm(10)  # a child that hangs ends, and the parent reads nothing
        try:
            same = worker_pool() is parent_pool
            answer = worker_pool().submit(lambda: "child answered").result(10)
            os.write(write, f"{same} {answer}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 100).decode() == "False child answered"
