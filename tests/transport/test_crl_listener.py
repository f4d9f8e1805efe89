"""Our CRLs reachable by anyone who must check them (issue 11 point 9), against a real `runxmpp`.

The HTTPS listener has ``verify_mode = "peer"`` and ``disconnect_on_failure = true``: it refuses every client
without a certificate, so a relying party could not fetch the CRL that our certificates name there. A
``crl_only = true`` plain-HTTP listener serves ``/crl/`` and nothing else, ``[xmppauth] crl_base_url`` makes
new certificates name it (RFC 5280 §4.2.1.13), and the old HTTPS URL keeps working for certificates issued
before. A plain listener without ``crl_only`` is in the same config to show that the refusals on the CRL
listener come from ``crl_only``, not from plain HTTP.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from cryptography import x509

from certauth import pki
from tests.processes import ROOT, Managed, free_port

BOSH_BODY = (
    b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind' to='localhost' xml:lang='en' wait='60' "
    b"hold='1' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
)


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _wait_listening(port: int, server: Managed) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            assert server.process.poll() is None, server.stop()
            assert time.monotonic() < deadline, f"runxmpp did not listen on {port} within 60 s"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    directory = tmp_path_factory.mktemp("crl-listener")
    var = directory / "var"
    https_port, plain_port, crl_port = free_port(), free_port(), free_port()
    config = directory / "xmppauth.toml"
    config.write_text(f"""
[general]
  hosts = ["localhost"]
[[listen.http]]
  port = {https_port}
  ip_address = "127.0.0.1"
  tls.certfile = "{var}/pki/server.pem"
  tls.keyfile = "{var}/pki/server.key"
  tls.cacertfile = "{var}/pki/ca.pem"
  tls.verify_mode = "peer"
  tls.disconnect_on_failure = true
  [[listen.http.handlers.mod_websockets]]
    path = "/ws-xmpp"
  [[listen.http.handlers.mod_bosh]]
    path = "/http-bind"
[[listen.http]]
  port = {plain_port}
  ip_address = "127.0.0.1"
[[listen.http]]
  port = {crl_port}
  ip_address = "127.0.0.1"
  crl_only = true
[xmppauth]
  crl_base_url = "http://127.0.0.1:{crl_port}"
""")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        XMPPAUTH_VAR_DIR=str(var),
        DATABASE_URL=f"sqlite:///{directory / 'db.sqlite3'}",
        XMPPAUTH_ADMIN_PASSWORD="pw-crl-listener",
    )
    env.pop("XMPPAUTH_PUBLIC_URL", None)
    _manage(env, "migrate", "-v0")
    _manage(env, "bootstrap")
    issued = {}
    for user in ("alice", "bob"):  # alice's certificate gets revoked; bob's is the TLS client's
        out = directory / user
        _manage(
            {**env, "XMPPAUTH_P12_PASSWORD": "pw-user-long"},
            "pki",
            "issue",
            f"{user}@localhost",
            "--out",
            str(out),
        )
        ((cert_file,), (key_file,)) = out.glob("*.crt.pem"), out.glob("*.key.pem")
        issued[user] = (cert_file, key_file)
    server = Managed(env, "runxmpp")
    try:
        server.wait_for("CRLs only at")
        for port in (https_port, plain_port, crl_port):
            _wait_listening(port, server)
        yield {
            "env": env,
            "var": var,
            "https": https_port,
            "plain": plain_port,
            "crl": crl_port,
            "cert": pki.load_certificate(issued["alice"][0].read_bytes()),
            "client": issued["bob"],
        }
    finally:
        server.stop()


def _ca(served) -> object:
    return pki.load_certificate((served["var"] / "pki" / "ca.pem").read_bytes())


def _crl_url(served) -> str:
    (url,) = pki.crl_distribution_urls(served["cert"])
    return url


def _fetch_crl(url: str, context: ssl.SSLContext | None = None):
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/pkix-crl"
        return pki.load_crl(response.read())


def _https_context(served, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(served["var"] / "pki" / "ca.pem"))
    context.check_hostname = False  # the server certificate names localhost, we dial 127.0.0.1
    if with_certificate:
        context.load_cert_chain(*served["client"], password="pw-user-long")
    return context


def _status(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _websocket_status(port: int, context: ssl.SSLContext | None = None) -> str:
    """The status line answering an RFC 6455 §4.1 opening handshake for /ws-xmpp (subprotocol xmpp)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws-xmpp HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
    )
    with sock:
        sock.sendall(request.encode())
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


def test_new_certificates_name_the_plain_crl_listener(served):
    ca_id = _crl_url(served).rsplit("/", 1)[1]
    assert _crl_url(served) == f"http://127.0.0.1:{served['crl']}/crl/{ca_id}"
    server_cert = pki.load_certificates((served["var"] / "pki" / "server.pem").read_bytes())[0]
    assert pki.crl_distribution_urls(server_cert) == [_crl_url(served)]


def test_the_named_crl_is_fetched_without_any_client_certificate(served):
    crl = _fetch_crl(_crl_url(served))  # plain HTTP: no TLS, no certificate
    assert pki.crl_signed_by(crl, _ca(served))


def test_a_revocation_is_in_the_crl_served_without_certificate(served):
    serial = f"{served['cert'].serial_number:x}"
    assert serial not in {f"{e.serial:x}" for e in pki.revoked_entries(_fetch_crl(_crl_url(served)))}
    _manage(served["env"], "pki", "revoke", serial, "--reason", "key_compromise")
    entries = {f"{e.serial:x}": e for e in pki.revoked_entries(_fetch_crl(_crl_url(served)))}
    assert entries[serial].reason == "key_compromise"


def test_the_https_listener_refuses_a_crl_fetch_without_certificate(served):
    url = _crl_url(served).replace(
        f"http://127.0.0.1:{served['crl']}", f"https://127.0.0.1:{served['https']}"
    )
    # RFC 8446 §4.4.2.4: certificate_required; this is why the distribution point moved to the CRL listener.
    with pytest.raises((ssl.SSLError, urllib.error.URLError), match="CERTIFICATE_REQUIRED"):
        _fetch_crl(url, _https_context(served, with_certificate=False))


def test_the_old_https_crl_url_still_serves_clients_with_a_certificate(served):
    path = _crl_url(served).split(str(served["crl"]), 1)[1]
    old = _fetch_crl(
        f"https://127.0.0.1:{served['https']}{path}", _https_context(served, with_certificate=True)
    )
    new = _fetch_crl(_crl_url(served))
    assert pki.crl_signed_by(old, _ca(served))
    assert old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == (
        new.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )


def test_the_crl_listener_serves_neither_the_admin_nor_bosh_nor_websocket(served):
    port = served["crl"]
    assert _status(port, "GET", "/admin/login/") == 404
    assert _status(port, "GET", "/admin/") == 404
    bosh_headers = {"Content-Type": "text/xml; charset=utf-8"}
    assert _status(port, "POST", "/http-bind", BOSH_BODY, bosh_headers) == 404
    assert _websocket_status(port).startswith("HTTP/1.1 403")
    ca_path = _crl_url(served).split(str(port), 1)[1]
    assert _status(port, "POST", ca_path, b"") == 405
    assert _status(port, "GET", "/crl/999999.crl") == 404  # the CRL view's own 404


def test_a_plain_listener_without_crl_only_still_serves_the_admin_and_bosh(served):
    port = served["plain"]
    assert _status(port, "GET", "/admin/login/") == 200
    bosh_headers = {"Content-Type": "text/xml; charset=utf-8"}
    assert _status(port, "POST", "/http-bind", BOSH_BODY, bosh_headers) != 404


def test_websocket_on_the_https_listener_with_a_certificate_is_upgraded(served):
    context = _https_context(served, with_certificate=True)
    assert _websocket_status(served["https"], context).startswith("HTTP/1.1 101")


# --- which requests the CRL-only layer stops (the listener is told by the socket's local address) ----------


def _through_gate(config_text: str, scope: dict) -> list:
    """Run one request through CrlOnlyListeners; returns what reached the app, or the response it sent."""
    import asyncio
    import tomllib

    from transport.http.routing import CrlOnlyListeners
    from xmppauth.config import parse_config

    reached: list = []
    sent: list = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    gate = CrlOnlyListeners(app, parse_config(tomllib.loads(config_text)))
    asyncio.run(gate({"method": "GET", **scope}, receive, send))
    return reached or sent


TWO_ON_ONE_PORT = """
[[listen.http]]
  port = 8080
  ip_address = "127.0.0.1"
  crl_only = true
[[listen.http]]
  port = 8080
  ip_address = "127.0.0.2"
"""


def test_the_gate_stops_the_admin_only_on_the_crl_listeners_address():
    on_crl = _through_gate(
        TWO_ON_ONE_PORT, {"type": "http", "path": "/admin/", "server": ("127.0.0.1", 8080)}
    )
    assert on_crl[0]["type"] == "http.response.start" and on_crl[0]["status"] == 404
    other = _through_gate(TWO_ON_ONE_PORT, {"type": "http", "path": "/admin/", "server": ("127.0.0.2", 8080)})
    assert other == ["/admin/"]


def test_the_gate_on_a_wildcard_crl_listener_covers_every_local_address():
    config = "[[listen.http]]\nport = 8080\ncrl_only = true\n[[listen.http]]\nport = 8443\n"
    for host in ("127.0.0.1", "10.1.2.3", "::1"):
        (start, _) = _through_gate(config, {"type": "http", "path": "/admin/", "server": (host, 8080)})
        assert start["status"] == 404
        assert _through_gate(config, {"type": "http", "path": "/crl/1.crl", "server": (host, 8080)}) == [
            "/crl/1.crl"
        ]
    assert _through_gate(config, {"type": "http", "path": "/admin/", "server": ("10.1.2.3", 8443)}) == [
        "/admin/"
    ]


def test_the_gate_refuses_websocket_and_other_methods_on_the_crl_listener():
    scope = {"path": "/ws-xmpp", "server": ("127.0.0.1", 8080)}
    assert _through_gate(TWO_ON_ONE_PORT, {"type": "websocket", **scope}) == [
        {"type": "websocket.close", "code": 1008}
    ]
    (start, _) = _through_gate(
        TWO_ON_ONE_PORT,
        {"type": "http", "method": "PUT", "path": "/crl/1.crl", "server": ("127.0.0.1", 8080)},
    )
    assert start["status"] == 405 and (b"allow", b"GET, HEAD") in start["headers"]


def test_without_a_crl_listener_or_a_server_address_everything_passes():
    scope = {"type": "http", "path": "/admin/", "server": ("127.0.0.1", 8080)}
    assert _through_gate("[[listen.http]]\nport = 8080\n", scope) == ["/admin/"]
    assert _through_gate(TWO_ON_ONE_PORT, {**scope, "server": None}) == ["/admin/"]
