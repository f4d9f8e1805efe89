"""Run ``manage.py runc2s`` as a child process on a scratch config, database and var directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import ROOT, Managed

__all__ = ["ROOT", "Runc2s", "environment", "manage"]


def environment(directory: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        XMPPAUTH_VAR_DIR=str(directory / "var"),
        DATABASE_URL=f"sqlite:///{directory / 'db.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(
    env: dict[str, str], *args: str, timeout: float = 180, input: str | None = None
) -> subprocess.CompletedProcess:
    """``manage.py *args``; ``input`` goes to its standard input (then not a terminal)."""
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, input=input
    )


class Runc2s(Managed):
    """``manage.py runc2s`` in the background; :meth:`wait_for` reads its output line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env, "runc2s")
