"""What one hand-off to a worker thread and back costs (issue 17): Twisted's and asgiref's against ours.

Prints figures; not a test. A login makes about five calls into a worker thread (certificate, SASL, the
session row in and out, the termination poll between them), each answered on the reactor thread. Each variant
runs in its own process, keeps ``--concurrency`` calls of a function that does nothing in flight until
``--count`` have been answered, and reports the process's CPU per call (``getrusage``, user + system, all
threads) and the calls per second. On Twisted's asyncio reactor (as ``runc2s`` runs):

- ``twisted``: ``twisted.internet.threads.deferToThreadPool`` on the reactor's pool (what the listeners used);
- ``workers``: ``transport.workers.defer_to_worker`` (what they use now).

In a coroutine on a plain asyncio loop (the IM bridge, the WebSocket and BOSH driver):

- ``asgiref``: ``asgiref.sync.sync_to_async(f, thread_sensitive=False)`` (what the bridge used);
- ``in_worker``: ``transport.workers.in_worker`` (what it uses now).

Rounds alternate the variants (the machine is shared); the table holds every round and the medians.

    .venv/bin/python -m bench.handoff                    # 20000 calls at 50, 5 rounds
    .venv/bin/python -m bench.handoff --count 5000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("twisted", "workers", "asgiref", "in_worker")
ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_variant(variant: str, count: int, concurrency: int) -> dict[str, float]:
    """In this (fresh) process: ``count`` calls of ``variant``, ``concurrency`` at a time."""
    if variant in ("asgiref", "in_worker"):
        return asyncio.run(_run_coroutines(variant, count, concurrency))
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor, threads

    from transport.workers import defer_to_worker

    def nothing() -> None:
        return None

    if variant == "twisted":

        def call() -> object:
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), nothing)
    else:

        def call() -> object:
            return defer_to_worker(reactor, nothing)

    state = {"started": 0, "answered": 0}
    measured: dict[str, float] = {}

    def answered(_result: object) -> None:
        state["answered"] += 1
        if state["answered"] == count:
            cpu, wall = _cpu_seconds(), time.perf_counter()
            measured["cpu_us"] = (cpu - start["cpu"]) / count * 1e6
            measured["per_second"] = count / (wall - start["wall"])
            reactor.stop()
        elif state["started"] < count:
            launch()

    def launch() -> None:
        state["started"] += 1
        call().addCallbacks(answered, lambda failure: failure.printTraceback())

    start: dict[str, float] = {}

    def begin() -> None:
        for _ in range(5):  # the pools' threads exist before the clock starts
            call()
        start["cpu"], start["wall"] = _cpu_seconds(), time.perf_counter()
        for _ in range(min(concurrency, count)):
            launch()

    reactor.callLater(0.2, begin)
    reactor.run(installSignalHandlers=False)
    return measured


async def _run_coroutines(variant: str, count: int, concurrency: int) -> dict[str, float]:
    from asgiref.sync import sync_to_async

    from transport.workers import in_worker

    def nothing() -> None:
        return None

    if variant == "asgiref":

        async def call() -> None:
            await sync_to_async(nothing, thread_sensitive=False)()
    else:

        async def call() -> None:
            await in_worker(nothing)

    async def caller(calls: int) -> None:
        for _ in range(calls):
            await call()

    await asyncio.gather(*(caller(1) for _ in range(5)))  # the executor's threads exist before the clock
    cpu, wall = _cpu_seconds(), time.perf_counter()
    each, extra = divmod(count, concurrency)
    await asyncio.gather(*(caller(each + (1 if n < extra else 0)) for n in range(concurrency)))
    seconds = time.perf_counter() - wall
    return {"cpu_us": (_cpu_seconds() - cpu) / count * 1e6, "per_second": count / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one run, in a child
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.count, args.concurrency)))
        return
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    print("| round | variant | CPU µs per call | calls/s |\n|---|---|---|---|")
    for round_number in range(args.rounds):
        order = VARIANTS if round_number % 2 == 0 else tuple(reversed(VARIANTS))  # alternate, as the load
        for variant in order:
            command = [sys.executable, "-m", "bench.handoff", "--variant", variant]
            command += ["--count", str(args.count), "--concurrency", str(args.concurrency)]
            output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            results[variant].append(result)
            print(f"| {round_number + 1} | {variant} | {result['cpu_us']:.1f} | {result['per_second']:.0f} |")
    print("\n| variant | median CPU µs per call | median calls/s |\n|---|---|---|")
    for variant, rows in results.items():
        cpu = statistics.median(row["cpu_us"] for row in rows)
        rate = statistics.median(row["per_second"] for row in rows)
        print(f"| {variant} | {cpu:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
