"""The embedded default end to end: migrate, bootstrap and `runxmpp` in a fresh var/, admin over HTTPS."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def embedded_env(tmp_path):
    http_port = free_port()
    config = tmp_path / "xmppauth.toml"
    config.write_text(f"""
[general]
  hosts = ["localhost", "example.test"]
[[listen.http]]
  port = {http_port}
  ip_address = "127.0.0.1"
  tls.verify_mode = "none"
[auth]
  methods = ["pki"]
  sasl_mechanisms = ["external"]
""")
    env = {
        **os.environ,
        "XMPPAUTH_CONFIG": str(config),
        "XMPPAUTH_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "XMPPAUTH_ADMIN_PASSWORD": "pw-embedded",
    }
    env.pop("REDIS_URL", None)
    return env, http_port, tmp_path / "var"


def run(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_bootstrap_is_idempotent_and_writes_server_credentials(embedded_env):
    env, _, var = embedded_env
    run(env, "migrate", "-v0")
    first = run(env, "bootstrap").stdout
    assert "created CA" in first and "created admin user 'admin'" in first
    assert "pw-embedded" not in first  # a password from the environment is not echoed
    assert (var / "pki" / "server.key").stat().st_mode & 0o077 == 0
    server_pem = (var / "pki" / "server.pem").read_bytes()
    second = run(env, "bootstrap").stdout
    assert "nothing to do" in second
    assert (var / "pki" / "server.pem").read_bytes() == server_pem


def test_runxmpp_serves_the_admin_and_our_crl_over_https(embedded_env):
    env, port, var = embedded_env
    run(env, "migrate", "-v0")
    run(env, "bootstrap")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runxmpp"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        context = ssl.create_default_context(cafile=str(var / "pki" / "ca.pem"))
        context.check_hostname = False  # the certificate names the hosted domains, we dial 127.0.0.1
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/admin/login/", context=context, timeout=5
                ) as response:
                    assert response.status == 200
                    assert b"csrfmiddlewaretoken" in response.read()
                break
            except (OSError, ssl.SSLError):
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "runxmpp did not answer within 60 s"
                time.sleep(0.3)
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/crl/1.crl", context=context, timeout=5) as crl:
            assert crl.headers["Content-Type"] == "application/pkix-crl"
            from certauth import pki

            ca = pki.load_certificate((var / "pki" / "ca.pem").read_bytes())
            assert pki.crl_signed_by(pki.load_crl(crl.read()), ca)
    finally:
        stop_process(server)
