"""Servers run as operators run them, on a config whose client CA is in tls.cacertfile (and crl_files).

The database follows the leg: a scratch PostgreSQL database (created next to ``DATABASE_URL``'s and dropped
afterwards) when the tests run against PostgreSQL, else a SQLite file. The processes run without Redis (the
in-memory layer and the in-process router), as ``tests/transport/runc2s_process.py`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.processes import ROOT


@contextmanager
def scratch_database(directory: Path) -> Iterator[str]:
    """A ``DATABASE_URL`` for child processes on this leg's engine; dropped (PostgreSQL) when done."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{directory / 'db.sqlite3'}"
        return
    import psycopg  # PostgreSQL leg only

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'xmppauth'}_proc_{uuid.uuid4().hex[:8]}"
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(maintenance, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(directory: Path, config: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        XMPPAUTH_VAR_DIR=str(directory / "var"),
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="xmppauth.settings",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python manage.py ARGS`` (or ``python -m MODULE ...`` when ``args[0] == "-m"``), to completion."""
    command = list(args) if args[0] in ("-m", "-c") else ["manage.py", *args]
    return subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def migrate(env: dict[str, str]) -> None:
    result = run(env, "migrate", "--noinput")
    assert result.returncode == 0, result.stdout + result.stderr


AUTH_EVENTS = (
    "import json; from certauth.models import AuthEvent; "
    "print(json.dumps(list(AuthEvent.objects.order_by('pk').values("
    "'transport', 'cert_fingerprint', 'outcome', 'condition', 'reason'))))"
)


def auth_events(env: dict[str, str], fingerprint: str) -> list[dict[str, str]]:
    """The auth events the servers recorded for the certificate with this SHA-256 fingerprint."""
    result = run(env, "shell", "-c", AUTH_EVENTS)
    assert result.returncode == 0, result.stdout + result.stderr
    events = json.loads(result.stdout.strip().splitlines()[-1])
    return [event for event in events if event["cert_fingerprint"] == fingerprint]
