"""A WebSocket client gets as long as a TCP client to open its stream (transport.http.server).

daphne ends a WebSocket whose opening handshake takes over 5 s from its upgrade request to the application's
accept (which, for us, follows the certificate check); under load (``bench.load_mixed``: 1000 logins at once)
that dropped every wss client while TCP and BOSH clients got in. Our server gives it
``transport.tcp.protocol.AUTH_TIMEOUT`` instead, under ``runxmpp`` and under the daphne command line alike.
The application below accepts only after 7 s: refused with daphne's default, accepted by ours.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from websockets.sync.client import connect

from tests.processes import free_port
from tests.transport.echo_asgi import SLOW_ACCEPT_SECONDS
from tests.transport.test_daphne_tls_scope import Site, _start
from transport.http.server import (
    WEBSOCKET_OPENING_TIMEOUT,
    TlsExtensionServer,
    XmppauthCommandLineInterface,
)
from transport.xmpp.connection import AUTH_TIMEOUT

DAPHNE_DEFAULT = 5  # seconds: daphne's --websocket_connect_timeout, which also sets its handshake timeout


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """``python -m transport.http.server`` (the daphne command line) serving the slow-accept app."""
    directory = tmp_path_factory.mktemp("daphne-timeouts")
    config = directory / "xmppauth.toml"
    config.write_text('[general]\n  hosts = ["localhost"]\n')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "xmppauth.settings",
        "XMPPAUTH_CONFIG": str(config),
        "XMPPAUTH_VAR_DIR": str(directory / "var"),
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
    }
    env.pop("REDIS_URL", None)
    port = free_port()
    site = Site(env, None, directory, port, port, port)  # type: ignore[arg-type]  (no PKI: plain HTTP)
    endpoint = f"tcp:port={port}:interface=127.0.0.1"
    command = [
        sys.executable,
        "-m",
        "transport.http.server",
        "-e",
        endpoint,
        "tests.transport.echo_asgi:slow_accept",
    ]
    for process in _start(site, command, port):
        yield port, process


def test_the_websocket_opening_timeout_is_a_tcp_clients_time_to_authenticate():
    assert WEBSOCKET_OPENING_TIMEOUT == AUTH_TIMEOUT > SLOW_ACCEPT_SECONDS > DAPHNE_DEFAULT


def test_runxmpps_server_and_the_command_line_use_it_for_both_daphne_timeouts():
    server = TlsExtensionServer(application=None, endpoints=["tcp:port=0"])
    assert server.websocket_handshake_timeout == WEBSOCKET_OPENING_TIMEOUT
    assert server.websocket_connect_timeout == WEBSOCKET_OPENING_TIMEOUT
    args = XmppauthCommandLineInterface().parser.parse_args(["xmppauth.asgi:application"])
    assert args.websocket_connect_timeout == WEBSOCKET_OPENING_TIMEOUT


def test_a_websocket_accepted_after_daphnes_default_still_opens(slow_server):
    port, _ = slow_server
    with connect(f"ws://127.0.0.1:{port}/ws-xmpp", open_timeout=30) as socket:
        facts = json.loads(socket.recv(timeout=30))
    assert facts["type"] == "websocket"
