"""Redis and PostgreSQL server processes of a fault test's own: on free loopback ports, in scratch
directories, stopped and started again by the test (never the shared servers of the suite).

``RedisServer`` runs ``redis-server`` without persistence (a restart loses everything, as a crashed cache
does). ``PostgresServer`` runs ``initdb`` and ``pg_ctl`` from the Debian packages; PostgreSQL refuses to run
as root, so under root its commands run as the ``postgres`` user (``runuser``) in a directory that user owns.

These tests run on the PostgreSQL leg (``DATABASE_URL=postgres://...``), where CI requires PostgreSQL and
Redis: there a missing ``redis-server`` or ``initdb`` fails the test; on the SQLite leg they skip, saying so.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.processes import free_port

POSTGRES_LEG = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
SQLITE_LEG_REASON = (
    "a PostgreSQL/Redis fault: runs on the PostgreSQL + Redis leg (DATABASE_URL=postgres://...)"
)


def need_postgres_leg() -> None:
    """Skip on the SQLite leg; on the PostgreSQL leg the test runs (its servers are its own)."""
    if not POSTGRES_LEG:
        pytest.skip(SQLITE_LEG_REASON)


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        pytest.fail(f"{name} is not installed: the fault tests start their own servers with it")
    return found


class RedisServer:
    """``redis-server`` on one port for its whole life: :meth:`stop` and :meth:`start` keep the port."""

    def __init__(self) -> None:
        self.binary = _binary("redis-server")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="xmppauth-redis-"))
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
        log = open(self.directory / "redis.log", "a")  # noqa: SIM115 (the child keeps writing to it)
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while not self.answers():
            assert self.process.poll() is None, (self.directory / "redis.log").read_text()
            assert time.monotonic() < deadline, f"redis-server on {self.port} did not come up"
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Gone at once (SIGKILL: as a crash; nothing kept, as without persistence)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(20)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL cluster of its own (``initdb`` once, then ``pg_ctl start``/``stop`` on one port)."""

    def __init__(self) -> None:
        self.initdb = _binary("initdb")
        self.pg_ctl = _binary("pg_ctl")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="xmppauth-pg-"))
        self.data = self.directory / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb: "cannot be run as root"
            shutil.chown(self.directory, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")  # fmt: skip

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command[0]}: {result.stdout}{result.stderr}"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        # fsync off: the machine does not crash in a test, only the server; every commit still reaches the
        # kernel before it is acknowledged (synchronous_commit stays on), so an immediate stop loses nothing.
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: every backend goes at once, as when the server crashes or fails over."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("fast")
        except AssertionError:
            pass  # not running
        shutil.rmtree(self.directory, ignore_errors=True)
