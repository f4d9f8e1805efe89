"""A bench probe, never production: the listener's worker-thread calls run on the event loop's own thread.

``bench.profile_login --database-on-loop`` puts this directory first on the server's ``PYTHONPATH``, so Python
imports this file at start-up (``site``). When ``transport.workers`` is imported, its two hand-offs are
replaced: :func:`defer_to_worker` runs the call at once on the calling (reactor) thread and fires the
Deferred on the loop's next turn; :func:`in_worker` runs it in place of awaiting a thread. Each call runs as a
worker thread would see it: no running loop, so Django allows its queries, keeps this thread's one
connection for them (as a worker thread keeps its own), and the change feed polls as in a worker.

What it answers (issue 17): how much of a login's server CPU is the hand-off to worker threads and back,
and the GIL changing hands between the loop and the workers. What it gives up, and why production does not
do this: every database call, its locks (SQLite's busy timeout is 20 s) and its fsync block every session of
the process while it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _patch(workers: Any) -> None:
    from twisted.internet.defer import Deferred

    from xmppauth.loopdb import as_in_a_worker

    def defer_to_worker(reactor: Any, function: Callable[..., Any], *args: Any) -> Deferred:
        deferred: Deferred = Deferred()
        try:
            result, error = as_in_a_worker(function, *args), None
        except BaseException as raised:  # noqa: BLE001 - handed to the Deferred, as the pool's Future would
            result, error = None, raised
        loop = getattr(reactor, "_asyncioEventloop", None)
        if loop is not None:
            loop.call_soon(workers._settle, deferred, result, error)
        else:
            reactor.callLater(0, workers._settle, deferred, result, error)
        return deferred

    async def in_worker(function: Callable[..., Any], *args: Any) -> Any:
        return as_in_a_worker(function, *args)

    workers.defer_to_worker = defer_to_worker
    workers.in_worker = in_worker


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/probes: the probes' shared helper
from patch_on_import import patch_on_import  # noqa: E402

patch_on_import("transport.workers", _patch)
