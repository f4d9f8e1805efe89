"""`manage.py runxmpp` serves `[[listen.http]]` with the xmpptls endpoint (TLS) or plain tcp (behind a proxy).

With ``verify_mode = "peer"`` and ``disconnect_on_failure = true`` the HTTPS listener refuses a client without
a certificate in the handshake (MongooseIM semantics; stock daphne ``ssl:`` never asks for one), while a
client with a certificate of the configured CA gets the admin. A listener without a ``tls`` table is plain
HTTP.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processes import free_port, stop_process
from tests.transport.tlsclient import client_context, make_pki, tls_connect
from transport.http.endpoints import http_endpoint_descriptions
from xmppauth.config import parse_config

REPO = Path(__file__).resolve().parents[2]


def test_tls_listeners_get_the_xmpptls_endpoint_and_plain_ones_tcp():
    config = parse_config(
        {
            "listen": {
                "http": [
                    {"port": 5443, "ip_address": "::1", "tls": {"verify_mode": "peer"}},
                    {"port": 5280, "ip_address": "127.0.0.1", "backlog": 4096},
                ]
            }
        }
    )
    assert http_endpoint_descriptions(config) == [
        "xmpptls:port=5443:interface=\\:\\:1:backlog=1024:listener=0",  # MongooseIM's default backlog
        "tcp:port=5280:interface=127.0.0.1:backlog=4096",
    ]


@pytest.fixture(scope="module")
def runxmpp(tmp_path_factory):
    directory = tmp_path_factory.mktemp("runxmpp-http")
    pki = make_pki(directory)
    cafile = directory / "client-ca.pem"
    cafile.write_bytes(pki.ca.pem)
    https_port, http_port = free_port(), free_port()
    config = directory / "xmppauth.toml"
    config.write_text(f"""
[[listen.http]]
  port = {https_port}
  ip_address = "127.0.0.1"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{cafile}"
  tls.verify_mode = "peer"
  tls.disconnect_on_failure = true
[[listen.http]]
  port = {http_port}
  ip_address = "127.0.0.1"
""")
    env = {
        **os.environ,
        "XMPPAUTH_CONFIG": str(config),
        "XMPPAUTH_VAR_DIR": str(directory / "var"),
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
    }
    env.pop("REDIS_URL", None)
    migrate = [sys.executable, "manage.py", "migrate", "-v0"]
    subprocess.run(migrate, cwd=REPO, env=env, check=True, timeout=120)
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runxmpp"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        for port in (https_port, http_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                    break
                except OSError:
                    assert server.poll() is None, server.stdout.read()
                    assert time.monotonic() < deadline, "runxmpp did not listen within 60 s"
                    time.sleep(0.2)
        yield pki, https_port, http_port
    finally:
        stop_process(server)


def test_runxmpp_serves_the_admin_over_https_to_a_client_with_a_certificate(runxmpp, tmp_path):
    pki, https_port, _ = runxmpp
    context = client_context(tmp_path, pki.valid)
    with urllib.request.urlopen(f"https://127.0.0.1:{https_port}/admin/login/", context=context) as response:
        assert response.status == 200
        assert b"csrfmiddlewaretoken" in response.read()


def test_runxmpp_https_refuses_a_client_without_certificate_when_the_config_requires_one(runxmpp, tmp_path):
    pki, https_port, _ = runxmpp
    # RFC 8446 §4.4.2.4: certificate_required, seen by a TLS 1.3 client on its first read.
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        with tls_connect(client_context(tmp_path, None), https_port) as sock:
            sock.sendall(b"GET /admin/login/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
            sock.recv(1024)


def test_runxmpp_serves_a_listener_without_tls_as_plain_http(runxmpp):
    _, _, http_port = runxmpp
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/admin/login/", timeout=10) as response:
        assert response.status == 200


# --- issue 12 §8: production settings from the config ----------------------------------------------------


def test_https_answers_carry_hsts_and_secure_cookies(runxmpp, tmp_path):
    pki, https_port, _ = runxmpp
    context = client_context(tmp_path, pki.valid)
    with urllib.request.urlopen(f"https://127.0.0.1:{https_port}/admin/login/", context=context) as response:
        assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        cookies = response.headers.get_all("Set-Cookie")
    csrf = [cookie for cookie in cookies if cookie.startswith("csrftoken=")]
    assert csrf and "Secure" in csrf[0], cookies


def test_plain_http_listener_sends_no_hsts(runxmpp):
    _, _, http_port = runxmpp
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/admin/login/", timeout=10) as response:
        assert "Strict-Transport-Security" not in response.headers  # a proxy in front owns it there


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_a_host_header_that_is_not_ours_is_refused(runxmpp, tmp_path, host):
    pki, https_port, _ = runxmpp
    request = urllib.request.Request(f"https://127.0.0.1:{https_port}/admin/login/", headers={"Host": host})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=client_context(tmp_path, pki.valid))
    assert refused.value.code == 400


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_our_own_names_are_accepted_as_host(runxmpp, tmp_path, host):
    pki, https_port, _ = runxmpp
    request = urllib.request.Request(
        f"https://127.0.0.1:{https_port}/admin/login/", headers={"Host": f"{host}:{https_port}"}
    )
    with urllib.request.urlopen(request, context=client_context(tmp_path, pki.valid)) as response:
        assert response.status == 200
