"""Helpers for tests that start real servers: a free loopback port, a ``manage.py`` command in the background
whose output is read line by line, and stopping a child process cleanly."""

from __future__ import annotations

import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the checkout: manage.py runs from here


# CI sets the first (.ci/run): a test that needs Redis then fails instead of skipping, so what CI claims to
# run cannot vanish from it silently. The comparison's ejabberd/Prosody tests skip only with the second set.
REQUIRE_REDIS = "XMPPAUTH_REQUIRE_REDIS"
SKIP_COMPARISON = "XMPPAUTH_SKIP_COMPARISON"


# Tests whose servers are subprocesses on a scratch SQLite file without Redis (tests/transport/xmpphttp.py,
# tests/transport/runc2s_process.py), and the benchmark checks (bench/ makes its own scratch SQLite file and
# ignores DATABASE_URL and REDIS_URL; ejabberd and Prosody have their own stores), do the same on both legs
# of `make test`: they run once, on the SQLite leg, and the PostgreSQL leg spends its time on what differs.
SAME_ON_BOTH_LEGS = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="its servers use a scratch database of their own on either leg: it runs on the SQLite leg",
)


def run_bench(module: str, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], str]:
    """``python -m bench.<module> *args`` from the checkout, its output captured; and the tail of its output,
    for assertion messages (the benchmark checks: tests/test_bench_*.py)."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, result.stdout[-6000:] + result.stderr[-4000:]


def skip_without_redis(why: str | None) -> None:
    """Skip the calling test when Redis is unreachable (``why`` says why), or fail it under REQUIRE_REDIS."""
    if why is None:
        return
    if os.environ.get(REQUIRE_REDIS):
        pytest.fail(f"{why}; {REQUIRE_REDIS} is set, so this test may not skip")
    pytest.skip(why)


def need_comparison_target(name: str, installed: bool) -> None:
    """The benchmark's ``name`` (ejabberd, Prosody) must be installed unless XMPPAUTH_SKIP_COMPARISON=1 says
    to skip its tests: a missing server fails by default, with what to do about it."""
    if installed:
        return
    if os.environ.get(SKIP_COMPARISON) == "1":
        pytest.skip(f"{name} not installed ({SKIP_COMPARISON}=1)")
    pytest.fail(
        f"{name} is not installed: install Debian's ejabberd, prosody and prosody-modules (.ci/run does), "
        f"or set {SKIP_COMPARISON}=1 to skip the comparison's tests"
    )


_HANDED_OUT: set[int] = set()
PORTS_VARIABLE = "XMPPAUTH_TEST_PORTS"  # "low-high": this test process's own ports (the Makefile, per leg)


def _port_range() -> range | None:
    text = os.environ.get(PORTS_VARIABLE, "")
    if not text:
        return None
    low, _, high = text.partition("-")
    return range(int(low), int(high) + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds right now, and not one this test process handed out before
    (two servers of one test asked for ports back to back could otherwise get the same one, since neither
    binds it until it has started).

    From ``XMPPAUTH_TEST_PORTS`` when set: ``make test`` runs its two legs at once and gives each its own
    range, below the kernel's ephemeral ports, because a port checked free here is bound by its server only
    later: the kernel's choice could hand the same port to the other leg meanwhile (a server that then
    cannot listen, while a readiness check reaches the other leg's)."""
    ports = _port_range()
    for _ in range(10_000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", random.choice(ports) if ports else 0))
            except OSError:  # held by something else, or not yet released: another one
                continue
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port left in {PORTS_VARIABLE}={os.environ.get(PORTS_VARIABLE)}")


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; always reaped."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Managed:
    """``manage.py <args>`` in the background; :meth:`wait_for` reads its output line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.args = args
        command = list(args) if args[0] == "-m" else ["manage.py", *args]  # -m: a module (daphne)
        self.process = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{self.args} never printed {text!r}:\n{''.join(self.output)}") from None
            self.output.append(line)
            if text in line:
                return line
            if line == "":
                raise AssertionError(f"{self.args} ended before printing {text!r}:\n{''.join(self.output)}")

    def wait_for_port(self, port: int, timeout: float = 60) -> None:
        """Until something accepts on 127.0.0.1:``port``; fails with the output if the process ended first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{self.args} is not listening on {port}:\n{self.stop()}") from None
                time.sleep(0.2)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)
