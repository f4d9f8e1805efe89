"""`runxmpp` without REDIS_URL runs the CRL refresh itself (certauth.scheduler), end to end."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from tests.certauth.crlhelpers import make_crl
from tests.certauth.crlserver import CrlServer
from tests.certauth.test_crl_celery_worker import SETUP, run_python
from tests.certs import make_ca
from tests.processes import free_port, stop_process

PROJECT = Path(__file__).resolve().parents[2]


def query(database: Path, sql: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(database, timeout=20)) as db:
        return db.execute(sql, params).fetchall()


def test_runxmpp_without_redis_fetches_external_crls_in_process(tmp_path: Path):
    config = tmp_path / "xmppauth.toml"
    config.write_text(f'[[listen.http]]\n  port = {free_port()}\n  ip_address = "127.0.0.1"\n')
    ca = make_ca("Embedded External CA")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    database = tmp_path / "db.sqlite3"
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        XMPPAUTH_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_SETTINGS_MODULE="xmppauth.settings",
        CA_PEM=str(tmp_path / "ca.pem"),
        PYTHONPATH=str(PROJECT),
    )
    for command in (["migrate", "-v0"], ["bootstrap"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=PROJECT, env=env, check=True, capture_output=True
        )
    with CrlServer() as crl_server:
        env["CRL_URL"] = crl_server.serve("/ext.crl", make_crl(ca, [0xBAD], number=2))
        source_id = json.loads(run_python(SETUP, env))["source"]
        log = (tmp_path / "runxmpp.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runxmpp"], cwd=PROJECT, env=env, stdout=log, stderr=log
        )
        try:
            state = None
            deadline = time.monotonic() + 60  # the first tick runs at start-up
            while state != "ok" and time.monotonic() < deadline and server.poll() is None:
                time.sleep(0.3)
                state = query(database, "SELECT state FROM certauth_crlsource WHERE id = ?", source_id)[0][0]
        finally:
            stop_process(server)
            log.close()
    output = (tmp_path / "runxmpp.log").read_text()
    assert state == "ok", output[-3000:]
    assert "periodic jobs run in this process" in output
    assert query(database, "SELECT serial FROM certauth_revokedserial") == [("bad",)]
