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

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
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


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "transport.workers":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _PatchOnImport())
