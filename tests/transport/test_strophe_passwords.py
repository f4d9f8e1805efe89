"""Strophe.js (Node) logs in with SCRAM and PLAIN over wss (RFC 7395) and BOSH (XEP-0206), beside EXTERNAL
(issue 14 §1-3): the same mechanisms as TCP, through transport.session_driver, against the real server.

The account and its password are made with ``manage.py account create --password`` (stdin), as an operator
would. Listener "peer" keeps a connection whose certificate is refused (disconnect_on_failure = false), so
such a client may use its password; listener "strict" (true) ends it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.transport.xmpphttp import REPO, start_server, strophe_login

PASSWORD = "correct horse battery staple"
AUTH = """
[auth]
  methods = ["rdbms", "pki"]
  sasl_mechanisms = ["scram_sha256", "scram_sha1", "plain", "external"]
  [auth.password]
    hash = ["sha", "sha256"]
    scram_iterations = 4096
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("strophe-passwords")
    for running in start_server(directory, extra_toml=AUTH):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "xmppauth.settings",
            "XMPPAUTH_CONFIG": str(directory / "xmppauth.toml"),
            "XMPPAUTH_VAR_DIR": str(directory / "var"),
            "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        }
        env.pop("REDIS_URL", None)
        subprocess.run(
            [sys.executable, "manage.py", "account", "create", "alice@localhost", "--password"],
            cwd=REPO,
            env=env,
            input=PASSWORD + "\n",
            text=True,
            check=True,
            timeout=60,
        )
        yield running


@pytest.fixture(params=["wss", "https"], ids=["wss", "bosh"])
def scheme(request) -> str:
    return request.param


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_password_logs_in(server, scheme, mechanism):
    verdict = strophe_login(server, server.url("peer", scheme), None, password=PASSWORD, mechanism=mechanism)
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost"
    assert verdict["mechanisms"] == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]  # configured order, no EXTERNAL


def test_strophe_picks_scram_and_logs_in(server, scheme):
    verdict = strophe_login(server, server.url("peer", scheme), None, password=PASSWORD)
    assert verdict["status"] == "connected", verdict


def test_certificate_and_password_for_the_same_account(server, scheme):
    external = strophe_login(server, server.url("peer", scheme), server.pki.valid, mechanism="EXTERNAL")
    assert external["status"] == "connected", external
    assert external["mechanisms"] == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "EXTERNAL"]
    assert external["jid"].split("/")[0] == "alice@localhost"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_wrong_password_is_not_authorized(server, scheme, mechanism):
    verdict = strophe_login(server, server.url("peer", scheme), None, password="wrong", mechanism=mechanism)
    assert verdict["status"] == "authfail" and verdict["sasl_failure"] == "not-authorized", verdict


def test_unknown_user_is_not_authorized(server, scheme):
    verdict = strophe_login(
        server,
        server.url("peer", scheme),
        None,
        "mallory@localhost",
        password=PASSWORD,
        mechanism="SCRAM-SHA-256",
    )
    assert verdict["status"] == "authfail" and verdict["sasl_failure"] == "not-authorized", verdict


@pytest.mark.parametrize("kind", ["expired", "untrusted"])
def test_refused_certificate_falls_back_to_the_password(server, scheme, kind):
    cert = getattr(server.pki, kind)
    verdict = strophe_login(
        server, server.url("peer", scheme), cert, password=PASSWORD, mechanism="SCRAM-SHA-256"
    )
    assert verdict["status"] == "connected", verdict
    assert "EXTERNAL" not in verdict["mechanisms"]


def test_refused_certificate_is_disconnected_under_disconnect_on_failure(server, scheme):
    verdict = strophe_login(
        server,
        server.url("strict", scheme),
        server.pki.untrusted,
        password=PASSWORD,
        mechanism="SCRAM-SHA-256",
    )
    assert verdict["status"] != "connected" and verdict["mechanisms"] is None, verdict
