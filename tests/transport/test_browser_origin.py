"""A real browser presenting the user's client certificate: only our own and allowed pages may log in.

Issue 12 (cross-site WebSocket hijacking): a client certificate is an ambient credential, so a page on another
site that opens ``wss://our-host/ws-xmpp`` or posts to ``/http-bind`` used to log in as the certificate's
owner. Headless Chromium (Debian's ``chromium``, driven by Playwright; recipe in the shared notes) presents
alice's certificate to every request for ``https://localhost:PORT`` and loads ``tests/js/origin_login.html``,
which tries SASL EXTERNAL over wss (RFC 7395) or BOSH (XEP-0206):

- from ``http://127.0.0.1:HOSTILE`` (another origin, not allowed): the WebSocket handshake and the BOSH
  preflight are refused with HTTP 403 (``transport.http.origin``), and so is a blind no-cors BOSH ``POST``;
  the
  server logs each with the origin. No login.
- from ``http://127.0.0.1:ALLOWED`` (on the handlers' ``allowed_origins``): logs in as alice.
- from ``https://localhost:PORT`` itself (same origin): logs in as alice. The server has no page of its own
  to serve, so the browser opens one of its URLs (a 404 from Django, at our origin) and the test writes the
  login page into that document (Playwright's ``set_content``); its origin stays ours. (Playwright's request
  router would be simpler, but with it active the BOSH ``POST`` never left the browser.)

The server logs which page each allowed connection or session served; the tests read that too, so a pass
cannot come from a request that carried no ``Origin``.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import sync_playwright  # requirements.txt; never skipped: this test must run in CI

from tests.processes import SAME_ON_BOTH_LEGS, free_port
from tests.transport.xmpphttp import JS_DIR, start_server

pytestmark = SAME_ON_BOTH_LEGS

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); Playwright downloads no browser
PAGE = (JS_DIR / "origin_login.html").read_bytes()
LISTENER = "peer"  # verify_mode = "peer", the certificate of the trusted CA logs in as alice@localhost


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        pass


@pytest.fixture(scope="module")
def page_servers():
    """Two plain-HTTP origins on loopback serving the login page: (hostile port, allowed port)."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), _PageHandler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield tuple(s.server_address[1] for s in servers)
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, page_servers):
    allowed = f"http://127.0.0.1:{page_servers[1]}"
    yield from start_server(tmp_path_factory.mktemp("browser-origin"), allowed_origins=[allowed])


@pytest.fixture(scope="module")
def browser():
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: apt-get install chromium"
    )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def target(server) -> str:
    return f"https://localhost:{server.ports[LISTENER]}"


@pytest.fixture
def context(browser, server, target):
    """A browser profile holding alice's certificate for our origin (and only there)."""
    certfile, keyfile = server.client_files(server.pki.valid)
    ctx = browser.new_context(
        client_certificates=[{"origin": target, "certPath": str(certfile), "keyPath": str(keyfile)}],
        ignore_https_errors=True,  # the test server certificate's CA is not in the browser's store
    )
    yield ctx
    ctx.close()


@pytest.fixture(params=["wss", "bosh"])
def transport(request) -> str:
    return request.param


def login_from(
    context, page_url: str, target: str, transport: str, *, write_page: bool = False, **extra: str
) -> dict:
    """Open the login page at ``page_url`` and return its verdict (see tests/js/origin_login.html).

    ``write_page``: ``page_url`` is any document of the origin; the login page is written into it.
    """
    page = context.new_page()
    query = urlencode({"transport": transport, "target": target, "domain": "localhost", **extra})
    page.goto(f"{page_url}?{query}")
    if write_page:
        page.set_content(PAGE.decode())
    page.wait_for_function("document.title.startsWith('{')", timeout=30_000)
    return json.loads(page.title())


def server_log(server, needle: str, timeout: float = 10) -> str:
    """The server log once it holds ``needle`` (the server writes it a moment after answering)."""
    log = server.directory / "server.log"
    deadline = time.monotonic() + timeout
    while needle not in (text := log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


def test_a_page_of_another_site_cannot_log_in(context, server, target, transport, page_servers):
    hostile = f"http://127.0.0.1:{page_servers[0]}"
    verdict = login_from(context, f"{hostile}/evil.html", target, transport, blind="1")
    assert verdict["outcome"] == "refused", verdict
    assert verdict["mechanisms"] == []  # not even the stream features: refused at the handshake / preflight
    if transport == "wss":
        assert (
            verdict["detail"] == "closed 1006"
        )  # HTTP 403 to the handshake (RFC 6455 §4.1: fail the connection)
        needle = f"handshake refused (HTTP 403), Origin '{hostile}'"
        assert needle in server_log(server, needle)
    else:
        for method in ("OPTIONS", "POST"):  # the preflight of the CORS request and the blind no-cors POST
            needle = f"{method} refused (HTTP 403), Origin '{hostile}'"
            assert needle in server_log(server, needle)


HANDLER = {"wss": "mod_websockets /ws-xmpp", "bosh": "mod_bosh /http-bind"}


def accepted_log(transport: str, origin: str, reason: str) -> str:
    """The log line's end for an accepted page: the WebSocket's "connected", the BOSH session's "created"."""
    if transport == "wss":
        return f"connected (/ws-xmpp, Origin '{origin}': {reason})"
    return f"hold 1, Origin '{origin}': {reason})"


def test_a_page_of_an_allowed_origin_logs_in(context, server, target, transport, page_servers):
    allowed = f"http://127.0.0.1:{page_servers[1]}"
    verdict = login_from(context, f"{allowed}/client.html", target, transport)
    assert verdict["outcome"] == "success", verdict
    assert verdict["mechanisms"] == ["EXTERNAL"]
    needle = accepted_log(transport, allowed, f"in allowed_origins of {HANDLER[transport]}")
    assert needle in server_log(server, needle)


def test_a_page_of_our_own_origin_logs_in(context, server, target, transport):
    verdict = login_from(context, f"{target}/login.html", target, transport, write_page=True)
    assert verdict["outcome"] == "success", verdict
    assert verdict["mechanisms"] == ["EXTERNAL"]
    needle = accepted_log(transport, target, "same origin")
    assert needle in server_log(server, needle)
