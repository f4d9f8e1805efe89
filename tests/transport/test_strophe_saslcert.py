"""XEP-0257 over wss and BOSH with Strophe.js: a user logged in with a CA-issued certificate adds a
self-signed one, which then logs in (pinned to the account) where another self-signed one does not.

Specs: XEP-0257 §2.1-§2.2, §3; issue 15 point 3. TCP, with slixmpp's xep_0257 plugin, disable and revoke:
tests/transport/test_tcp_saslcert.py.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from tests.certs import make_self_signed
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.xmpphttp import JS_DIR, start_server, strophe_login

pytestmark = SAME_ON_BOTH_LEGS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("strophe-saslcert"))


@pytest.fixture(params=["wss", "https"], ids=["wss", "bosh"])
def scheme(request) -> str:
    return request.param


def add_with_strophe(server, scheme: str, name: str, der: bytes) -> dict:
    files = server.client_files(server.pki.valid)  # alice, from the trusted CA
    added = server.directory / f"add-{name}.b64"
    added.write_text(base64.b64encode(der).decode())
    url = server.url("peer", scheme)
    args = ["node", str(JS_DIR / "saslcert.cjs"), url, "alice@localhost", *map(str, files), name, str(added)]
    done = subprocess.run(args, cwd=JS_DIR, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no verdict from saslcert.cjs (exit {done.returncode}): {done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])


def test_an_added_certificate_logs_in_and_a_name_is_used_once(server, scheme):
    tablet = make_self_signed(jids=["alice@localhost"])
    verdict = add_with_strophe(server, scheme, f"Tablet {scheme}", tablet.der)
    assert verdict["status"] == "connected" and verdict["append"] == "result", verdict
    assert f"Tablet {scheme}" in verdict["items"], verdict
    login = strophe_login(server, server.url("selfsigned_peer", scheme), tablet)
    assert login["status"] == "connected" and login["jid"].startswith("alice@localhost/"), login
    stranger = make_self_signed(jids=["alice@localhost"])  # never added: alice holds pins now
    refused = strophe_login(server, server.url("selfsigned_peer", scheme), stranger)
    assert refused["status"] == "authfail" and refused["sasl_failure"] == "not-authorized", refused
    again = add_with_strophe(
        server, scheme, f"Tablet {scheme}", make_self_signed(jids=["alice@localhost"]).der
    )
    assert again["append"] == "conflict", again  # XEP-0257 §2.1: a name is unique
