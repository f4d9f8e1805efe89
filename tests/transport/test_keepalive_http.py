"""The XEP-0199 keepalive reaches WebSocket and BOSH clients too: the core asks for it, the driver runs it.

Specs: XEP-0199 §4.2 (the server pings a client that has been silent), RFC 6120 §4.9.3.4 (a client that
stays silent after the ping gets ``connection-timeout``), RFC 7395 (WebSocket), XEP-0124/XEP-0206 (BOSH: a
stream error ends the session with ``type="terminate" condition="remote-stream-error"``).

The server is ``manage.py runxmpp`` in its own process (tests/transport/xmpphttp.py, real TLS with client
certificates) with ``[xmppauth] ping_interval_seconds = 1``; a raw client logs in with SASL EXTERNAL.
"""

from __future__ import annotations

import re
import time

import pytest
from websockets.sync.client import connect

from tests.certs import make_client
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.test_bind_recheck_http import BIND, through_sasl
from tests.transport.test_bosh_protocol import AUTH, Client
from tests.transport.tlsclient import websockets_context
from tests.transport.xmpphttp import start_server

pytestmark = SAME_ON_BOTH_LEGS

PING_INTERVAL = 3  # seconds: long enough that a loaded machine answers the ping within one interval
KEEPALIVE_ID = re.compile(r"id=[\"'](keepalive-\d+)[\"']")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keepalive")
    extra = f"\n[xmppauth]\n  ping_interval_seconds = {PING_INTERVAL}\n  auth_failures_per_minute = 0\n"
    yield from start_server(directory, runxmpp=True, extra_toml=extra)


def test_silent_websocket_client_is_pinged_kept_while_it_answers_then_timed_out(server, tmp_path):
    alice = make_client(server.pki.ca, jids=["alice@localhost"])
    context = websockets_context(tmp_path, alice)
    with connect(server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=30) as ws:
        through_sasl(ws)
        ws.send(BIND)
        assert "<jid>alice@localhost/late</jid>" in ws.recv(timeout=30)
        for round_ in (1, 2):  # answered, so a new round instead of a close
            ping = ws.recv(timeout=20)
            assert "urn:xmpp:ping" in ping and "alice@localhost/late" in ping, ping
            (stanza_id,) = KEEPALIVE_ID.findall(ping)
            assert stanza_id == f"keepalive-{round_}"
            ws.send(f"<iq xmlns='jabber:client' type='result' id='{stanza_id}' to='localhost'/>")
        assert "urn:xmpp:ping" in ws.recv(timeout=20)  # the third ping goes unanswered
        started = time.monotonic()
        error = ws.recv(timeout=20)
        assert "<connection-timeout" in error and "no answer to ping" in error, error
        assert time.monotonic() - started >= PING_INTERVAL * 0.5


def test_silent_bosh_client_is_pinged_and_timed_out(server, tmp_path):
    alice = make_client(server.pki.ca, jids=["alice@localhost"])
    client = Client(server, tmp_path, alice)
    sid, _ = client.create(rid=100)
    _, raw, _ = client.post(AUTH, rid=101, sid=sid)
    assert b"<success" in raw, raw
    client.post(rid=102, sid=sid, to="localhost", xmpp_restart="true")  # XEP-0206 §5
    _, raw, _ = client.post(BIND, rid=103, sid=sid)
    assert b"alice@localhost/late" in raw, raw
    _, ping, _ = client.post(rid=104, sid=sid)  # held until there is output: the ping (XEP-0199 §4.2)
    assert b"urn:xmpp:ping" in ping and b"keepalive-1" in ping, ping
    _, raw, body = client.post(rid=105, sid=sid)  # no pong: one interval later the stream ends
    assert body.get("type") == "terminate" and body.get("condition") == "remote-stream-error", raw
    assert b"<connection-timeout" in raw and b"no answer to ping" in raw, raw
