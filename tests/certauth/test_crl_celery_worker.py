"""A real Celery worker (solo pool, Redis broker) runs refresh_crl_source against a file database.

The worker is another process: it cannot see pytest's test database, so the test migrates a SQLite file in a
subprocess, creates the CA and source there, sends the task with ``.delay()`` from a process configured for
Redis (not eager), and reads the result from the file. Skipped only when Redis does not answer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from tests.certauth.crlhelpers import make_crl
from tests.certauth.crlserver import CrlServer
from tests.certs import make_ca
from tests.im.processes import redis_unreachable as redis_unreachable_at
from tests.processes import skip_without_redis

# The broker: a Redis database of this leg's own (the Makefile gives each leg of `make test` its own, as they
# run side by side and a worker would take the other leg's tasks)
REDIS_URL = os.environ.get("XMPPAUTH_TEST_CELERY_REDIS_URL", "redis://127.0.0.1:6379/14")
PROJECT = Path(__file__).resolve().parents[2]


def redis_unreachable() -> str | None:
    return redis_unreachable_at(REDIS_URL)


def celery_command() -> list[str]:
    script = Path(sys.executable).parent / "celery"
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


def run_python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


SETUP = """
    import django, json, os
    django.setup()
    from certauth import services
    from certauth.models import CrlSource
    ca = services.import_ca(open(os.environ["CA_PEM"], "rb").read())
    source = CrlSource.objects.create(ca=ca, kind="operator_url", location=os.environ["CRL_URL"])
    print(json.dumps({"source": source.pk}))
"""

SEND = """
    import django, json, os
    django.setup()
    from xmppauth.celery import app
    app.conf.task_default_queue = os.environ["TEST_QUEUE"]
    from certauth.tasks import refresh_crl_source
    result = refresh_crl_source.delay(int(os.environ["SOURCE_ID"]))
    print(json.dumps(result.get(timeout=90)))
"""


def test_celery_worker_refreshes_a_crl_source_into_the_database(tmp_path: Path):
    skip_without_redis(redis_unreachable())
    ca = make_ca("Worker External CA")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    database = tmp_path / "worker.sqlite3"
    queue = f"crltest-{uuid.uuid4().hex}"  # other test runs may share Redis db 14
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "XMPPAUTH_CONFIG")
    }
    # The worker applies the config's tls.cacertfile and tls.crl_files at start (certauth.configcas): give
    # it a config of its own instead of the checkout's, whose var/pki files `make run` writes.
    config = tmp_path / "xmppauth.toml"
    config.write_text('[general]\n  hosts = ["localhost"]\n')
    env.update(
        XMPPAUTH_CONFIG=str(config),
        DJANGO_SETTINGS_MODULE="xmppauth.settings",
        DATABASE_URL=f"sqlite:///{database}",
        REDIS_URL=REDIS_URL,
        XMPPAUTH_VAR_DIR=str(tmp_path / "var"),
        CA_PEM=str(tmp_path / "ca.pem"),
        TEST_QUEUE=queue,
        PYTHONPATH=str(PROJECT),
    )
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    with CrlServer() as server:
        env["CRL_URL"] = server.serve("/ext.crl", make_crl(ca, [0xC0FFEE, 0x10], number=3))
        env["SOURCE_ID"] = str(json.loads(run_python(SETUP, env))["source"])
        log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [*celery_command(), "-A", "xmppauth", "worker", "--pool=solo", "-l", "info", "-Q", queue],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            outcome = json.loads(run_python(SEND, env))
        finally:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
            log.close()

    assert outcome["ok"], (outcome, (tmp_path / "worker.log").read_text()[-3000:])
    assert outcome["message"] == "CRL #3 accepted: 2 revoked serial(s), 2 new"
    assert "certauth.tasks.refresh_crl_source" in (tmp_path / "worker.log").read_text()
    with sqlite3.connect(database) as db:
        serials = {row[0] for row in db.execute("SELECT serial FROM certauth_revokedserial")}
        state = db.execute("SELECT state, crl_number FROM certauth_crlsource").fetchone()
    assert serials == {"c0ffee", "10"}
    assert state == ("ok", 3)


PURGE = """
    import django, json, os
    django.setup()
    from xmppauth.celery import app
    app.conf.task_default_queue = os.environ["TEST_QUEUE"]
    from certauth.tasks import purge_auth_events
    print(json.dumps(purge_auth_events.delay().get(timeout=90)))
"""


def test_celery_beat_keeps_its_schedule_under_var_and_jobs_are_logged_at_the_default_level(tmp_path: Path):
    """Issue 18 §6: ``celery -A xmppauth worker -B`` as the README runs it, without ``-l``."""
    skip_without_redis(redis_unreachable())
    queue = f"beattest-{uuid.uuid4().hex}"
    config = tmp_path / "xmppauth.toml"
    config.write_text('[general]\n  hosts = ["localhost"]\n')
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "XMPPAUTH_CONFIG")}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        DJANGO_SETTINGS_MODULE="xmppauth.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'beat.sqlite3'}",
        REDIS_URL=REDIS_URL,
        XMPPAUTH_VAR_DIR=str(tmp_path / "var"),
        TEST_QUEUE=queue,
        PYTHONPATH=str(PROJECT),
    )
    env.pop("XMPPAUTH_LOG_LEVEL", None)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=PROJECT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    in_root_before = set(PROJECT.glob("celerybeat-schedule*"))
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [*celery_command(), "-A", "xmppauth", "worker", "-B", "--pool=solo", "-Q", queue],
            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert json.loads(run_python(PURGE, env)) == 0
        finally:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
    output = log_path.read_text()
    assert "INFO celery.beat: beat: Starting..." in output, output[-3000:]
    assert "Task certauth.tasks.purge_auth_events[" in output and "succeeded in" in output, output[-3000:]
    assert list((tmp_path / "var").glob("celerybeat-schedule*")), output[-3000:]
    assert set(PROJECT.glob("celerybeat-schedule*")) == in_root_before
