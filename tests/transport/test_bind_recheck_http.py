"""No window between a revocation and a bound session, over WebSocket and BOSH (issue 11 point 6).

Specs: RFC 7395 (XMPP over WebSocket), XEP-0124/XEP-0206 (BOSH; a stream error ends the session with
``type="terminate" condition="remote-stream-error"``), RFC 6120 §4.9.3.16 (``reset``) and §7 (binding).

The server is ``manage.py runxmpp`` in its own process (tests/transport/xmpphttp.py, real TLS with client
certificates, its termination watcher running) with the "recent commands" window shrunk to 1 s
(tests/transport/short_recent.py). A raw client authenticates with SASL EXTERNAL; the operator then revokes
its certificate with ``manage.py pki revoke`` from another process; the client binds only once the server
has applied that command and the window is past, so only the bind re-check can refuse it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.certs import Issued, make_client
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.test_bosh_protocol import AUTH, Client
from tests.transport.tlsclient import websockets_context
from tests.transport.xmpphttp import XmppHttpServer, start_server
from transport.xmpp import namespaces as ns

pytestmark = SAME_ON_BOTH_LEGS

RECENT_SECONDS = 1.0
BEYOND_THE_WINDOW = RECENT_SECONDS + 1.0  # plus the watcher's poll interval (0.2 s) and a margin
BIND = (
    "<iq xmlns='jabber:client' type='set' id='late'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    "<resource>late</resource></bind></iq>"
)
WS_OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bind-recheck")
    yield from start_server(directory, runxmpp=True, recent_seconds=RECENT_SECONDS)


@pytest.fixture
def alice(server: XmppHttpServer, tmp_path: Path) -> Issued:
    """A fresh certificate for alice@localhost, imported into the server's database (so it can be revoked)."""
    issued = make_client(server.pki.ca, jids=["alice@localhost"])
    path = tmp_path / "alice.pem"
    path.write_bytes(issued.pem)
    server.manage("pki", "import-cert", str(path))
    return issued


def applied_commands(server: XmppHttpServer) -> int:
    return (server.directory / "server.log").read_text().count("local session(s)")


def revoke_and_wait_beyond_the_window(server: XmppHttpServer, issued: Issued, *args: str) -> None:
    """``manage.py pki revoke`` (or other ``manage.py`` ``args``) from another process; returns once the
    server applied the termination command and it is older than the recent window."""
    before = applied_commands(server)
    revoke = ("pki", "revoke", issued.facts.fingerprint_sha256, "--reason", "key_compromise")
    server.manage(*(args or revoke))
    done = time.monotonic()
    while applied_commands(server) == before:
        assert time.monotonic() - done < 30, "the server did not apply the termination command"
        time.sleep(0.05)
    time.sleep(max(0.0, BEYOND_THE_WINDOW - (time.monotonic() - done)))


def bind_events(server: XmppHttpServer, issued: Issued) -> list[tuple[str, str, str]]:
    """(transport, condition, reason) of the auth events of refused binds of ``issued`` (the admin's list)."""
    with closing(sqlite3.connect(server.directory / "db.sqlite3")) as database:
        return database.execute(
            "SELECT transport, condition, reason FROM certauth_authevent"
            " WHERE cert_fingerprint = ? AND reason LIKE 'bind refused:%' ORDER BY id",
            [issued.facts.fingerprint_sha256],
        ).fetchall()


def stream_error(data: str) -> tuple[str | None, str]:
    error = re.search(r"<stream:error[^>]*>(.*?)</stream:error>", data, re.S)
    if error is None:
        return None, ""
    condition = re.search(r"<([a-z-]+) xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]", error[1])
    text = re.search(r"<text[^>]*>(.*?)</text>", error[1], re.S)
    return (condition[1] if condition else None), (text[1] if text else "")


# --- WebSocket (RFC 7395) --------------------------------------------------------------------------------


def ws_connect(server: XmppHttpServer, directory: Path, issued: Issued):
    context = websockets_context(directory, issued)
    return connect(server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=30)


def through_sasl(ws) -> None:
    """SASL EXTERNAL success and the restarted stream's features (offering bind)."""
    ws.send(WS_OPEN)
    frames = [ws.recv(timeout=30), ws.recv(timeout=30)]
    assert "EXTERNAL" in frames[1], frames
    ws.send(AUTH)
    assert "<success" in ws.recv(timeout=30)
    ws.send(WS_OPEN)  # RFC 7395 §3.5
    frames = [ws.recv(timeout=30), ws.recv(timeout=30)]
    assert ns.BIND in frames[1], frames


def ws_bind(ws) -> list[str]:
    """Send the bind request; every frame until the server closes the WebSocket."""
    ws.send(BIND)
    frames: list[str] = []
    try:
        while True:
            frames.append(ws.recv(timeout=30))
    except Exception:  # ConnectionClosed once the server closed after </close>
        pass
    return frames


def test_websocket_certificate_revoked_between_sasl_and_bind_never_binds(server, alice, tmp_path):
    with ws_connect(server, tmp_path, alice) as ws:
        through_sasl(ws)
        revoke_and_wait_beyond_the_window(server, alice)
        frames = ws_bind(ws)
    assert not any("<jid>" in frame for frame in frames), frames
    condition, text = stream_error("".join(frames))
    assert condition == "reset", frames  # RFC 6120 §4.9.3.16
    assert text.startswith("bind refused: certificate revoked ") and text.endswith("keyCompromise"), text
    assert bind_events(server, alice) == [("ws", "reset", text)]


def test_websocket_good_certificate_binds_after_the_same_wait(server, alice, tmp_path):
    with ws_connect(server, tmp_path, alice) as ws:
        through_sasl(ws)
        bob = make_client(server.pki.ca, jids=["bob@localhost"])
        (tmp_path / "bob.pem").write_bytes(bob.pem)
        server.manage("pki", "import-cert", str(tmp_path / "bob.pem"))
        revoke_and_wait_beyond_the_window(server, bob)  # someone else's revocation, same timing
        ws.send(BIND)
        reply = ws.recv(timeout=30)
        assert "<jid>alice@localhost/late</jid>" in reply, reply
        ws.send("<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert re.search(r"type=['\"]result['\"]", ws.recv(timeout=30))  # the session lives
    assert bind_events(server, alice) == []


# --- BOSH (XEP-0124, XEP-0206) ---------------------------------------------------------------------------


def bosh_after_sasl(server: XmppHttpServer, directory: Path, issued: Issued) -> tuple[Client, str]:
    client = Client(server, directory, issued)
    sid, _ = client.create(rid=100)
    _, _, body = client.post(AUTH, rid=101, sid=sid)
    assert [child.tag for child in body] == [ns.qname(ns.SASL, "success")]
    _, _, body = client.post(rid=102, sid=sid, to="localhost", xmpp_restart="true")  # XEP-0206 §5
    assert body[0].find(ns.qname(ns.BIND, "bind")) is not None
    return client, sid


def test_bosh_certificate_held_between_sasl_and_bind_never_binds(server, alice, tmp_path):
    client, sid = bosh_after_sasl(server, tmp_path, alice)
    revoke_and_wait_beyond_the_window(server, alice, "pki", "hold", alice.facts.fingerprint_sha256)
    status, raw, body = client.post(BIND, rid=103, sid=sid)
    assert status == 200 and b"<jid>" not in raw, raw
    assert body.get("type") == "terminate" and body.get("condition") == "remote-stream-error"  # XEP-0206
    condition, text = stream_error(raw.decode())
    assert condition == "reset" and text.startswith("bind refused: certificate on hold since "), raw
    assert bind_events(server, alice) == [("bosh", "reset", text)]


def test_bosh_certificate_revoked_between_sasl_and_bind_never_binds(server, alice, tmp_path):
    client, sid = bosh_after_sasl(server, tmp_path, alice)
    revoke_and_wait_beyond_the_window(server, alice)
    status, raw, body = client.post(BIND, rid=103, sid=sid)
    assert status == 200 and b"<jid>" not in raw, raw
    assert body.get("type") == "terminate" and body.get("condition") == "remote-stream-error"
    condition, text = stream_error(raw.decode())
    assert condition == "reset" and text.startswith("bind refused: certificate revoked "), raw
    assert bind_events(server, alice) == [("bosh", "reset", text)]


def test_bosh_account_disabled_between_sasl_and_bind_never_binds(server, tmp_path):
    carol = make_client(server.pki.ca, jids=["carol@localhost"])  # her own account: the others' stays usable
    client, sid = bosh_after_sasl(server, tmp_path, carol)  # pki: the account is created at this first login
    disable = (
        "from accounts.models import Account; account = Account.objects.by_jid('carol@localhost');"
        " account.active = False; account.save()"  # as the admin does: orders carol's sessions ended
    )
    revoke_and_wait_beyond_the_window(server, carol, "shell", "-c", disable)
    status, raw, body = client.post(BIND, rid=103, sid=sid)
    assert status == 200 and b"<jid>" not in raw, raw
    assert body.get("type") == "terminate" and body.get("condition") == "remote-stream-error"
    condition, text = stream_error(raw.decode())
    assert (condition, text) == ("not-authorized", "bind refused: account carol@localhost is disabled"), raw
    assert bind_events(server, carol) == [("bosh", "not-authorized", text)]


def test_bosh_good_certificate_binds_after_the_same_wait(server, alice, tmp_path):
    client, sid = bosh_after_sasl(server, tmp_path, alice)
    bob = make_client(server.pki.ca, jids=["bob@localhost"])
    (tmp_path / "bob.pem").write_bytes(bob.pem)
    server.manage("pki", "import-cert", str(tmp_path / "bob.pem"))
    revoke_and_wait_beyond_the_window(server, bob)
    status, raw, body = client.post(BIND, rid=103, sid=sid)
    assert status == 200 and body.get("type") is None, raw
    assert b"<jid>alice@localhost/late</jid>" in raw, raw
    assert bind_events(server, alice) == []
    client.post(rid=104, sid=sid, type="terminate")
