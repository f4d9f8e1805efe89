"""The ``xmpptls`` endpoint and our daphne server, run as operators run them (subprocesses, real sockets).

- ``python -m transport.http.server -e xmpptls:listener=0 APP`` puts the client's chain into the ASGI TLS
  extension of HTTP and WebSocket scopes (asgiref "TLS Extension"; DESIGN §3). These tests fail if daphne
  internals change so that the extension stops arriving.
- Stock ``daphne -e xmpptls:listener=1 APP`` finds our endpoint through the Twisted plugin dropin and asks for
  a client certificate with MongooseIM's verify_mode / disconnect_on_failure (here: one is required).

- Behind a TLS-terminating proxy (plain ``tcp:``), ``X-SSL-Client-Cert`` reaches the scope only from the
  trusted proxy's socket address, not from a client, not even one that forges ``X-Forwarded-For``.

The app is ``tests.transport.echo_asgi``, which answers with the scope's TLS facts as JSON.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.processes import free_port, stop_process
from tests.transport.tlsclient import Pki, client_context, make_pki, tls_connect, websockets_context

REPO = Path(__file__).resolve().parents[2]
ECHO_APP = "tests.transport.echo_asgi:application"
DAPHNE = Path(sys.executable).parent / "daphne"
TRUSTED_PROXY = "127.0.0.2"  # the whole of 127.0.0.0/8 is loopback on Linux: a second source address


@dataclass(frozen=True)
class Site:
    env: dict[str, str]
    pki: Pki
    directory: Path
    lenient_port: int  # listen.http[0]: verify_mode peer, disconnect_on_failure false
    strict_port: int  # listen.http[1]: verify_mode peer, disconnect_on_failure true
    plain_port: int  # plain tcp:, as behind a TLS-terminating proxy


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    directory = tmp_path_factory.mktemp("daphne-tls")
    pki = make_pki(directory)
    cafile = directory / "client-ca.pem"
    cafile.write_bytes(pki.ca.pem)
    lenient, strict, plain = free_port(), free_port(), free_port()
    tls = f'tls.certfile = "{pki.server_certfile}"\n  tls.keyfile = "{pki.server_keyfile}"\n'
    tls += f'  tls.cacertfile = "{cafile}"'
    config = directory / "xmppauth.toml"
    config.write_text(f"""
[[listen.http]]
  port = {lenient}
  ip_address = "127.0.0.1"
  {tls}
  tls.disconnect_on_failure = false
[[listen.http]]
  port = {strict}
  ip_address = "127.0.0.1"
  {tls}
[[listen.http]]
  port = {plain}
  ip_address = "127.0.0.1"
  behind_tls_proxy = true
[xmppauth]
  trusted_proxies = ["{TRUSTED_PROXY}"]
""")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "xmppauth.settings",
        "XMPPAUTH_CONFIG": str(config),
        "XMPPAUTH_VAR_DIR": str(directory / "var"),
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
    }
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=120
    )
    return Site(env, pki, directory, lenient, strict, plain)


def _start(site: Site, command: list[str], port: int) -> Iterator[subprocess.Popen]:
    server = subprocess.Popen(
        command, cwd=REPO, env=site.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the server did not listen within 60 s"
                time.sleep(0.2)
        yield server
    finally:
        stop_process(server)


@pytest.fixture(scope="module")
def our_server(site):
    # The echo app behind the proxy middleware, as xmppauth.asgi serves ours: over TLS it must change nothing.
    app = "tests.transport.echo_asgi:proxied"
    command = [sys.executable, "-m", "transport.http.server", "-e", "xmpptls:listener=0", app]
    yield from _start(site, command, site.lenient_port)


@pytest.fixture(scope="module")
def stock_daphne(site):
    yield from _start(site, [str(DAPHNE), "-e", "xmpptls:listener=1", ECHO_APP], site.strict_port)


@pytest.fixture(scope="module")
def behind_proxy(site):
    """Our server on plain tcp with daphne's --proxy-headers, the app wrapped in ProxyClientCertMiddleware."""
    endpoint = f"tcp:port={site.plain_port}:interface=127.0.0.1"
    app = "tests.transport.echo_asgi:proxied"
    command = [sys.executable, "-m", "transport.http.server", "--proxy-headers", "-e", endpoint, app]
    yield from _start(site, command, site.plain_port)


def fetch(port: int, context: ssl.SSLContext) -> dict:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/echo", context=context, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def leaf_of(extension: dict) -> x509.Certificate:
    return x509.load_pem_x509_certificate(extension["client_cert_chain"][0].encode())


def test_https_scope_carries_the_client_chain_leaf_first(site, our_server, tmp_path):
    facts = fetch(site.lenient_port, client_context(tmp_path, site.pki.valid))
    tls = facts["tls"]
    assert facts["scheme"] == "https"
    assert leaf_of(tls) == site.pki.valid.cert
    assert tls["client_cert_name"] == site.pki.valid.cert.subject.rfc4514_string()
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304
    assert facts["listener"] == 0  # xmpptls:listener=0: whose tls options apply


def test_https_scope_without_client_certificate_has_an_empty_chain(site, our_server, tmp_path):
    tls = fetch(site.lenient_port, client_context(tmp_path, None))["tls"]
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None


def test_https_scope_names_what_openssl_objected_to_in_an_untrusted_chain(site, our_server, tmp_path):
    tls = fetch(site.lenient_port, client_context(tmp_path, site.pki.untrusted))["tls"]
    assert leaf_of(tls) == site.pki.untrusted.cert
    assert "unable to get local issuer certificate" in tls["client_cert_error"]


def test_tls_1_2_connection_reports_version_0x0303(site, our_server, tmp_path):
    context = client_context(tmp_path, site.pki.valid, maximum_version=ssl.TLSVersion.TLSv1_2)
    tls = fetch(site.lenient_port, context)["tls"]
    assert tls["tls_version"] == 0x0303
    assert leaf_of(tls) == site.pki.valid.cert


def test_websocket_scope_carries_the_client_chain_and_scheme_wss(site, our_server, tmp_path):
    from websockets.sync.client import connect

    context = websockets_context(tmp_path, site.pki.valid)  # TLS 1.2: see websockets_context
    with connect(f"wss://127.0.0.1:{site.lenient_port}/ws-xmpp", ssl=context, open_timeout=10) as ws:
        facts = json.loads(ws.recv(timeout=10))
    assert facts["type"] == "websocket"
    assert facts["scheme"] == "wss"
    assert leaf_of(facts["tls"]) == site.pki.valid.cert


def test_stock_daphne_finds_the_xmpptls_plugin_and_serves_a_client_certificate(site, stock_daphne, tmp_path):
    facts = fetch(site.strict_port, client_context(tmp_path, site.pki.valid))
    assert facts["scheme"] == "https"
    assert facts["tls"] is None  # stock daphne: our endpoint, but no scope extension


def test_stock_daphne_with_xmpptls_refuses_a_client_without_certificate_when_required(
    site, stock_daphne, tmp_path
):
    # RFC 8446 §4.4.2.4: the server aborts with certificate_required (a TLS 1.3 client sees it on first read).
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        with tls_connect(client_context(tmp_path, None), site.strict_port) as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
            sock.recv(1024)


def test_xmpptls_plugin_rejects_an_http_listener_index_that_does_not_exist(site):
    result = subprocess.run(
        [sys.executable, "-m", "transport.http.server", "-e", "xmpptls:listener=7", ECHO_APP],
        cwd=REPO,
        env=site.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "xmpptls:listener=7" in result.stderr and "listener=0..2" in result.stderr


def fetch_plain(port: int, source: str, headers: dict[str, str]) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", "/echo", headers=headers)
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


def escaped(pem: bytes) -> str:
    return urllib.parse.quote(pem.decode())


def test_client_certificate_header_from_the_trusted_proxy_address_reaches_the_scope(site, behind_proxy):
    facts = fetch_plain(site.plain_port, TRUSTED_PROXY, {"X-SSL-Client-Cert": escaped(site.pki.valid.pem)})
    assert leaf_of(facts["tls"]) == site.pki.valid.cert


def test_client_certificate_header_sent_directly_by_a_client_is_ignored(site, behind_proxy):
    facts = fetch_plain(site.plain_port, "127.0.0.1", {"X-SSL-Client-Cert": escaped(site.pki.valid.pem)})
    assert facts["tls"] is None


def test_forged_x_forwarded_for_does_not_make_a_client_a_trusted_proxy(site, behind_proxy):
    headers = {"X-Forwarded-For": TRUSTED_PROXY, "X-SSL-Client-Cert": escaped(site.pki.valid.pem)}
    assert fetch_plain(site.plain_port, "127.0.0.1", headers)["tls"] is None


def test_client_certificate_header_on_a_tls_listener_is_ignored_even_from_the_trusted_proxy(
    site, our_server, tmp_path
):
    """The trusted proxy's address talking to a listener that terminates TLS itself: the handshake's chain
    counts, never the header (issue 12 §5). ``our_server`` wraps the echo app in the proxy middleware."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1",
        site.lenient_port,
        context=client_context(tmp_path, site.pki.valid),
        timeout=10,
        source_address=(TRUSTED_PROXY, 0),
    )
    try:
        connection.request("GET", "/echo", headers={"X-SSL-Client-Cert": escaped(site.pki.untrusted.pem)})
        response = connection.getresponse()
        assert response.status == 200
        facts = json.loads(response.read())
    finally:
        connection.close()
    assert facts["scheme"] == "https"
    assert leaf_of(facts["tls"]) == site.pki.valid.cert
