"""Strophe.js (Node) logs in with SCRAM and PLAIN over wss (RFC 7395) and BOSH (XEP-0206), beside EXTERNAL
(issue 14 §1-3): the same mechanisms as TCP, through transport.driver, against the real server.

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
  sasl_mechanisms = ["scram_sha256_plus", "scram_sha256", "scram_sha1", "plain", "external"]
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
    # The configured order, no EXTERNAL without a certificate; -PLUS only where a channel binding exists.
    plus = ["SCRAM-SHA-256-PLUS"] if scheme == "wss" else []
    assert verdict["mechanisms"] == [*plus, "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_strophe_picks_scram_and_logs_in(server, scheme):
    verdict = strophe_login(server, server.url("peer", scheme), None, password=PASSWORD)
    assert verdict["status"] == "connected", verdict


def test_certificate_and_password_for_the_same_account(server, scheme):
    external = strophe_login(server, server.url("peer", scheme), server.pki.valid, mechanism="EXTERNAL")
    assert external["status"] == "connected", external
    plus = ["SCRAM-SHA-256-PLUS"] if scheme == "wss" else []
    assert external["mechanisms"] == [*plus, "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "EXTERNAL"]
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
    # Refused before any features: the WebSocket fails; BOSH gives up on failing requests, or its first one
    # is answered 403 (a handshake the TLS layer let through, refused by our check): no 20 s "timeout"
    assert verdict["status"] in (("connfail",) if scheme == "wss" else ("connfail", "disconnected")), verdict
    assert verdict["mechanisms"] is None, verdict


# --- SCRAM -PLUS over wss: the WebSocket's own TLS connection is bound (BOSH has none) ---

FRAMING_OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def _wss_plus_login(server, tmp_path, cbind: bytes | None) -> str:
    """SCRAM-SHA-256-PLUS with tls-server-end-point over wss (RFC 7395), computed on the client side; the
    server's answer to the final message. ``cbind`` None: the real binding of this connection."""
    import base64
    import hashlib
    import hmac
    import re

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from websockets.sync.client import connect

    from tests.transport.tlsclient import client_context

    with connect(server.url("peer", "wss"), ssl=client_context(tmp_path, None), subprotocols=["xmpp"]) as ws:
        ws.send(FRAMING_OPEN)
        features = ""
        while "features" not in features:  # RFC 7395 §3.3.3: <open/>, then the features, one message each
            features = str(ws.recv(timeout=10))
        assert "SCRAM-SHA-256-PLUS" in features and "tls-server-end-point" in features, features
        assert "tls-exporter" in features, features  # XEP-0440: both types of this TLS 1.3 connection
        if cbind is None:
            server_cert = x509.load_der_x509_certificate(ws.socket.getpeercert(binary_form=True))
            algorithm = server_cert.signature_hash_algorithm
            digest = hashes.Hash(hashes.SHA256() if isinstance(algorithm, hashes.SHA1) else algorithm)
            digest.update(ws.socket.getpeercert(binary_form=True))
            cbind = digest.finalize()
        gs2, first_bare = "p=tls-server-end-point,,", "n=alice,r=wssnonce"
        initial = base64.b64encode((gs2 + first_bare).encode()).decode()
        ws.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256-PLUS'>{initial}</auth>")
        challenge = str(ws.recv(timeout=10))
        server_first = base64.b64decode(re.search(r">([^<]+)</challenge>", challenge).group(1)).decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", PASSWORD.encode(), base64.b64decode(fields["s"]), int(fields["i"])
        )
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        without_proof = f"c={base64.b64encode(gs2.encode() + cbind).decode()},r={fields['r']}"
        message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), message, "sha256").digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
        final = base64.b64encode(f"{without_proof},p={proof}".encode()).decode()
        ws.send(f"<response xmlns='{SASL}'>{final}</response>")
        return str(ws.recv(timeout=10))


@pytest.mark.websockets_tls13  # tls-exporter exists on TLS 1.3 only
def test_scram_plus_over_wss_binds_to_the_websockets_tls(server, tmp_path):
    assert "<success" in _wss_plus_login(server, tmp_path, None)


@pytest.mark.websockets_tls13  # tls-exporter exists on TLS 1.3 only
def test_scram_plus_over_wss_with_another_binding_is_refused(server, tmp_path):
    assert "<not-authorized/>" in _wss_plus_login(server, tmp_path, b"\0" * 32)
