"""What the comparison's targets share: free ports, a child server process, waiting for a port to accept.

A :class:`Child` runs in its own process group (``start_new_session``) so stopping it ends every process it
started; its output goes to a log file in the scratch directory, kept for the report when something fails.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT = 60.0


class TargetUnavailable(Exception):
    """The target cannot run here (package missing, failed to start); the comparison skips it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _raise_nofile() -> None:
    """In the child before exec: as many open files as the hard limit allows (10 000 idle sessions)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Child:
    """A server process in its own process group, its output in ``log_file``."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        log_file: Path,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.command = command
        self.log_file = log_file
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                preexec_fn=_raise_nofile,  # noqa: PLW1509 (no threads of ours touch the child before exec)
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def wait_port(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Until ``port`` accepts a connection; TargetUnavailable if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise TargetUnavailable(
                        f"{self.command[0]} never listened on {port}:\n{self.output()[-3000:]}"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s."""
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


@dataclass
class Target:
    """A started server process listening for direct TLS on ``port``: what the benchmarks measure and stop."""

    child: Child
    port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    def stop(self) -> None:
        self.child.stop()
