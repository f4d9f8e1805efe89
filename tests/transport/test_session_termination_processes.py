"""A live session ends with ``<reset/>`` when its certificate is revoked in another process (DESIGN §5).

Specs: RFC 6120 §13.7.2.3 and §4.9.3.16. Every test runs the listener as operators do (``manage.py runc2s``
or ``runxmpp``, its own process) on a migrated SQLite file that the other processes share, logs a raw client
in, revokes from elsewhere and reads the stream error; then a new login with the same certificate is refused.
The revocation comes from ``manage.py pki revoke`` (with and without Redis in the environment), and from a
CRL refreshed by a real Celery worker (Redis broker). Timeouts only bound a hung process; how fast the session
ends is measured by ``bench/revocation_latency.py``, not asserted here.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from tests.certauth.crlhelpers import make_crl
from tests.certauth.crlserver import CrlServer
from tests.certauth.test_crl_celery_worker import (
    REDIS_URL,
    SEND,
    SETUP,
    celery_command,
    redis_unreachable,
    run_python,
)
from tests.certs import make_client
from tests.processes import ROOT, Managed, free_port, skip_without_redis
from tests.transport.runc2s_process import environment, manage
from tests.transport.sessionclient import Refused, login
from tests.transport.tlsclient import client_context, make_pki

NO_REDIS = redis_unreachable()


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied by each test (migrate takes seconds)."""
    directory = tmp_path_factory.mktemp("sessions-db")
    config = directory / "xmppauth.toml"
    config.write_text('[general]\n  hosts = ["localhost"]\n')
    result = manage(environment(directory, config), "migrate", "--noinput")
    assert result.returncode == 0, result.stdout + result.stderr
    return directory / "db.sqlite3"


def scratch(
    tmp_path: Path,
    migrated_database: Path,
    *,
    http: bool = False,
    cacertfile: bool = True,
    crl_files: tuple[Path, ...] = (),
):
    """Config, database and environment for one test; returns (env, pki, c2s port). ``crl_files`` go into
    ``tls.crl_files`` (start-up applies them strictly: each must exist and match a trusted CA by then)."""
    shutil.copy(migrated_database, tmp_path / "db.sqlite3")
    pki = make_pki(tmp_path)
    (tmp_path / "ca.pem").write_bytes(pki.ca.pem)
    port = free_port()
    lines = [
        '[general]\n  hosts = ["localhost"]\n',
        "[[listen.c2s]]",
        f"  port = {port}",
        '  ip_address = "127.0.0.1"',
        '  tls.mode = "tls"',
        f'  tls.certfile = "{pki.server_certfile}"',
        f'  tls.keyfile = "{pki.server_keyfile}"',
        '  tls.verify_mode = "peer"',
    ]
    if cacertfile:
        lines.append(f'  tls.cacertfile = "{tmp_path / "ca.pem"}"')
    if crl_files:
        lines.append(f"  tls.crl_files = {json.dumps([str(path) for path in crl_files])}")
    if http:
        lines += ["", "[[listen.http]]", f"  port = {free_port()}", '  ip_address = "127.0.0.1"']
    config = tmp_path / "xmppauth.toml"
    config.write_text("\n".join(lines) + "\n")
    env = environment(tmp_path, config)
    env["DJANGO_SETTINGS_MODULE"] = "xmppauth.settings"
    env["PYTHONPATH"] = str(ROOT)
    return env, pki, port


def run_manage(env: dict[str, str], *args: str) -> str:
    result = manage(env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def stop(server: Managed) -> str:
    output = server.stop()
    print(output)
    return output


def assert_ended_by_revocation(session, text: str) -> None:
    end = session.wait_for_end()
    assert end.condition == "reset", end.raw[-500:]  # RFC 6120 §13.7.2.3
    assert end.text == text, end.raw[-500:]


@pytest.mark.parametrize("redis", [False, True], ids=["without_redis", "with_redis"])
def test_pki_revoke_in_another_process_ends_the_session_held_by_runc2s(tmp_path, migrated_database, redis):
    if redis:
        skip_without_redis(NO_REDIS)
    env, pki, port = scratch(tmp_path, migrated_database)
    if redis:
        env["REDIS_URL"] = REDIS_URL
    (tmp_path / "alice.pem").write_bytes(pki.valid.pem)
    run_manage(env, "pki", "import-cert", str(tmp_path / "alice.pem"))
    server = Managed(env, "runc2s")
    try:
        server.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")
        context = client_context(tmp_path, pki.valid)
        session = login(port, context)
        other = login(port, client_context(tmp_path, make_client(pki.ca, jids=["bob@localhost"])))
        try:
            run_manage(env, "pki", "revoke", pki.valid.facts.fingerprint_sha256, "--reason", "key_compromise")
            assert_ended_by_revocation(session, "certificate revoked (keyCompromise)")
            with pytest.raises(Refused):
                login(port, context)
            other.sock.sendall(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
            assert b"p1" in other.read_until(b"</iq>", b"/>")  # another certificate's session lives on
        finally:
            session.close()
            other.close()
    finally:
        output = stop(server)
    assert "Traceback" not in output


def test_pki_revoke_ends_the_session_held_by_runxmpp_without_redis(tmp_path, migrated_database):
    env, pki, port = scratch(tmp_path, migrated_database, http=True)
    (tmp_path / "alice.pem").write_bytes(pki.valid.pem)
    run_manage(env, "pki", "import-cert", str(tmp_path / "alice.pem"))
    server = Managed(env, "runxmpp")
    try:
        server.wait_for(f"c2s listening on 127.0.0.1:{port}")
        server.wait_for("session termination watcher polls")
        context = client_context(tmp_path, pki.valid)
        session = login(port, context)
        try:
            run_manage(env, "pki", "hold", pki.valid.facts.fingerprint_sha256)
            assert_ended_by_revocation(session, "certificate on hold")
            with pytest.raises(Refused):
                login(port, context)
        finally:
            session.close()
    finally:
        output = stop(server)
    assert "Traceback" not in output


def test_crl_refreshed_by_a_celery_worker_ends_the_session_held_by_runc2s(tmp_path, migrated_database):
    skip_without_redis(NO_REDIS)
    env, pki, port = scratch(tmp_path, migrated_database, cacertfile=False)  # the CA is a database row
    queue_name = f"sessiontest-{uuid.uuid4().hex}"
    env.update(REDIS_URL=REDIS_URL, CA_PEM=str(tmp_path / "ca.pem"), TEST_QUEUE=queue_name)
    with CrlServer() as crl_server:
        env["CRL_URL"] = crl_server.serve("/ext.crl", make_crl(pki.ca, [0x10], number=1))
        env["SOURCE_ID"] = str(json.loads(run_python(SETUP, env))["source"])  # imports the CA, adds the URL
        log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [*celery_command(), "-A", "xmppauth", "worker", "--pool=solo", "-l", "info", "-Q", queue_name],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Managed(env, "runc2s")
        try:
            assert json.loads(run_python(SEND, env))["ok"]  # the first CRL: alice is not on it
            server.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")
            context = client_context(tmp_path, pki.valid)
            session = login(port, context)
            try:
                serial = pki.valid.cert.serial_number
                crl_server.serve("/ext.crl", make_crl(pki.ca, [0x10, serial], number=2))
                outcome = json.loads(run_python(SEND, env))
                assert outcome["ok"] and "1 new" in outcome["message"], outcome
                end = session.wait_for_end()
                assert end.condition == "reset", end.raw[-500:]  # RFC 6120 §13.7.2.3
                assert end.text.startswith("certificate revoked (listed in the CRL of"), end.text
                with pytest.raises(Refused):
                    login(port, context)
            finally:
                session.close()
        finally:
            output = stop(server)
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
            log.close()
    assert "Traceback" not in output
    assert "certauth.tasks.refresh_crl_source" in (tmp_path / "worker.log").read_text()


def _live_rows(database: Path) -> int:
    with closing(sqlite3.connect(database, timeout=10)) as connection:
        return connection.execute("SELECT COUNT(*) FROM transport_livesession").fetchone()[0]


def _wait_for_rows(database: Path, expected: int) -> None:
    deadline = time.monotonic() + 30
    while _live_rows(database) != expected:
        assert time.monotonic() < deadline, f"{_live_rows(database)} live session rows, expected {expected}"
        time.sleep(0.05)


def test_a_session_that_ends_leaves_no_row_in_the_registry(tmp_path, migrated_database):
    env, pki, port = scratch(tmp_path, migrated_database)
    server = Managed(env, "runc2s")
    try:
        server.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")
        session = login(port, client_context(tmp_path, pki.valid))
        _wait_for_rows(tmp_path / "db.sqlite3", 1)
        session.close()
        _wait_for_rows(tmp_path / "db.sqlite3", 0)  # deleted once, by the session's bridge
    finally:
        output = stop(server)
    assert "Traceback" not in output
    assert "session registry:" not in output  # no failed registry call logged
