"""The WebSocket and BOSH adapters' own rules, without a server.

XEP-0124 §7/§12 (the body parser, the inactivity timer), MongooseIM ``disconnect_on_failure`` in the
session driver on asyncio (``transport.http.session``), and the routes built from the config's handler
paths. RFC 7395 §3.3.3 (one element per message) is the core's: tests/transport/test_stream_websocket.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from dataclasses import dataclass

import pytest

from transport.driver import SessionDriver
from transport.http.bosh import BODY, HTTPBIND, BoshApp, BoshError, BoshSession, parse_body
from transport.http.routing import handler_paths
from transport.http.session import LoopAdapter, new_session, scope_tls_options, start_session
from transport.xmpp import C2SConnection, settings_from_config
from xmppauth.config import parse_config

PRESENCE = b"<presence xmlns='jabber:client'/>"


def test_bosh_body_is_parsed_with_its_children():
    body = parse_body(
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='7' sid='s'>" + PRESENCE + b"</body>", 65536
    )
    assert body.tag == BODY and body.get("rid") == "7" and len(body.children) == 1
    (child,) = body.children
    assert child.element.tag == "{jabber:client}presence" and child.size == len(PRESENCE)


@pytest.mark.parametrize(
    "data",
    [
        b"<html/>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'/><body xmlns='http://jabber.org/protocol/httpbind'/>",
        b"<!DOCTYPE body><body xmlns='http://jabber.org/protocol/httpbind'/>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'><!-- c --></body>",
    ],
)
def test_anything_but_one_bosh_body_is_a_bad_request(data):
    with pytest.raises(BoshError) as refused:
        parse_body(data, 65536)
    assert (refused.value.condition, refused.value.status) == ("bad-request", 400)


def config(disconnect_on_failure: bool = True):
    return parse_config(
        {
            "general": {"hosts": ["localhost"]},
            "listen": {
                "http": [
                    {
                        "port": 5443,
                        "tls": {"verify_mode": "peer", "disconnect_on_failure": disconnect_on_failure},
                        "handlers": {
                            "mod_websockets": [{"path": "/ws-xmpp"}, {"path": "/other-ws"}],
                            "mod_bosh": [{"path": "/http-bind"}],
                        },
                    },
                    {"port": 5280, "handlers": {"mod_bosh": [{"path": "/http-bind"}]}},
                ]
            },
        }
    )


def test_handler_paths_of_every_listener_once_each():
    assert handler_paths(config(), "mod_websockets") == ["/ws-xmpp", "/other-ws"]
    assert handler_paths(config(), "mod_bosh") == ["/http-bind"]


def test_scope_tls_options_are_the_listeners_or_none_without_tls_facts():
    cfg = config()
    tls = {"client_cert_chain": []}
    own = scope_tls_options(cfg, {"extensions": {"tls": tls, "xmppauth.listener": 0}})
    assert own is cfg.listen_http[0].tls
    assert scope_tls_options(cfg, {"extensions": {}}) is None
    behind_proxy = scope_tls_options(cfg, {"extensions": {"tls": tls}})  # transport.http.proxy_cert
    assert behind_proxy.verify_mode == "peer" and not behind_proxy.disconnect_on_failure


@dataclass(frozen=True)
class Check:
    facts: object
    verified: bool
    reason: str


class FakeAuthenticator:
    def __init__(self, verified: bool) -> None:
        self.verified = verified

    def check_certificate(self, chain):
        return Check(None, self.verified, "test verdict")


class Output(LoopAdapter):
    """A WebSocket's side of the driver, without a WebSocket: frames and the close request recorded."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.frames.append(data)

    def close(self, abort: bool = False) -> None:
        self.closed = True


def ws_session(disconnect_on_failure: bool, verified: bool, auth_timeout: float = 60) -> SessionDriver:
    """A WebSocket session on the first listener (call with a running loop: its auth deadline starts)."""
    cfg = config(disconnect_on_failure)
    settings = settings_from_config(cfg, cfg.listen_http[0], "websocket")
    core = C2SConnection(dataclasses.replace(settings, auth_timeout=auth_timeout), log_id="ws test")
    scope = {"client": ("test", 1), "extensions": {"tls": {"client_cert_chain": []}, "xmppauth.listener": 0}}
    return new_session(
        cfg, scope, Output(), transport="ws", core=core, authenticator=FakeAuthenticator(verified)
    )


def start(disconnect_on_failure: bool, verified: bool) -> bool:
    async def run() -> bool:
        session = ws_session(disconnect_on_failure, verified)
        accepted = await start_session(session, [])
        session.connection_lost()
        return accepted

    return asyncio.run(run())


def test_disconnect_on_failure_ends_a_session_whose_certificate_our_verification_refuses():
    assert start(disconnect_on_failure=True, verified=False) is False


def test_disconnect_on_failure_keeps_a_session_whose_certificate_passed():
    assert start(disconnect_on_failure=True, verified=True) is True


def test_without_disconnect_on_failure_a_refused_certificate_keeps_the_session():
    assert start(disconnect_on_failure=False, verified=False) is True


def test_an_address_past_the_auth_failure_limit_is_refused_after_the_delay(xmpp_options):
    """XEP-0205 §3 on WebSocket and BOSH: the adapters refuse the session (HTTP 403 / policy-violation)."""
    from xmppauth import limits

    xmpp_options(auth_failures_per_minute=2, auth_failure_delay_seconds=0)
    limits.auth_failures.add("test")  # what the authenticator counts at each refusal (certauth tests)
    assert start(disconnect_on_failure=False, verified=True) is True  # one failure: below the limit
    limits.auth_failures.add("test")
    assert start(disconnect_on_failure=False, verified=True) is False


class StubStream:
    peer = "test"

    def __init__(self) -> None:
        self.closed = False

    def frames(self):
        return []

    def close(self, reason: str = "") -> None:
        self.closed = True

    def connection_lost(self, why: str = "") -> None:
        pass


def idle_session(active: int) -> tuple[BoshApp, BoshSession]:
    app = BoshApp(inactivity=0)
    session = BoshSession("sid", StubStream(), "localhost", 30, 1, None, 1, active=active)
    app.sessions["sid"] = session
    return app, session


def test_a_session_without_requests_ends_after_the_inactivity_period():
    app, session = idle_session(active=0)

    async def run():
        app._arm_inactivity(session)
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert "sid" not in app.sessions and session.stream.closed and session.terminated


def test_the_inactivity_clock_does_not_run_while_a_request_is_held():
    app, session = idle_session(active=1)

    async def run():
        app._arm_inactivity(session)
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert "sid" in app.sessions and not session.stream.closed


def test_a_session_that_does_not_authenticate_in_time_ends_with_connection_timeout():
    async def run():
        session = ws_session(disconnect_on_failure=False, verified=True, auth_timeout=0)
        await start_session(session, [])
        await asyncio.sleep(0.05)
        return session

    session = asyncio.run(run())
    assert session.closed and session.close_condition == "connection-timeout"  # RFC 6120 §4.9.3.4
    assert session.adapter.closed


def test_a_session_within_its_auth_deadline_stays_open():
    async def run():
        session = ws_session(disconnect_on_failure=False, verified=True, auth_timeout=60)
        await start_session(session, [])
        await asyncio.sleep(0.05)
        still_open = not session.closed
        session.connection_lost()  # cancels the deadline
        return still_open

    assert asyncio.run(run())


class _ClosedSession:
    """Just what ``_flush`` reads of a session: its peer."""

    peer = "127.0.0.1:1"
    closed = True


def test_a_websocket_the_client_already_closed_is_not_sent_to_and_raises_nothing(caplog):
    from autobahn.exception import Disconnected

    from transport.http.websocket import XmppWebsocketConsumer, _Output

    sent = []

    async def base_send(message):
        sent.append(message)
        raise Disconnected("Attempt to send on a closed protocol")  # autobahn, under daphne

    async def flush_twice():
        consumer = XmppWebsocketConsumer()
        consumer.base_send = base_send
        consumer.session = _ClosedSession()
        consumer._send_lock = asyncio.Lock()
        consumer._ws_closed = False
        consumer._output = _Output(consumer)  # one frame waiting, then the stream closes
        consumer._output.frames.append(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
        consumer._output.close_requested = True
        with caplog.at_level(logging.DEBUG, logger="transport.http.websocket"):
            await consumer._flush()
            await consumer._flush()  # closed now: not even tried
        return consumer

    consumer = asyncio.run(flush_twice())
    assert consumer._ws_closed
    assert len(sent) == 1
    assert [r.levelno for r in caplog.records if r.name == "transport.http.websocket"] == [logging.DEBUG]


def test_a_websocket_message_is_handled_while_asgirefs_sync_thread_is_busy():
    """channels' dispatch ran close_old_connections in asgiref's one sync thread before every message, so
    under load a WebSocket's frames (its pongs too) queued behind every other session's (bench.load_mixed:
    2381 of 2500 wss sessions closed for not answering pings in 60 s)."""
    from asgiref.sync import sync_to_async

    from transport.http.websocket import XmppWebsocketConsumer, _Output

    received: list[bytes] = []

    class Session:
        peer = "127.0.0.1:1"
        closed = False

        def receive(self, data: bytes) -> None:
            received.append(data)

    async def base_send(message):
        pass

    async def scenario():
        started, busy = threading.Event(), threading.Event()

        def occupy() -> None:
            started.set()
            busy.wait(30)

        occupied = asyncio.ensure_future(sync_to_async(occupy, thread_sensitive=True)())
        while not started.is_set():
            await asyncio.sleep(0.01)
        consumer = XmppWebsocketConsumer()
        consumer.base_send = base_send
        consumer.session = Session()
        consumer._send_lock = asyncio.Lock()
        consumer._ws_closed = False
        consumer._output = _Output(consumer)
        try:
            await asyncio.wait_for(
                consumer.dispatch({"type": "websocket.receive", "text": PRESENCE.decode()}), 5
            )
        finally:
            busy.set()
            await occupied

    asyncio.run(scenario())
    assert received == [PRESENCE]


def test_a_held_request_released_as_its_wait_runs_out_answers_with_what_it_was_released_with():
    """XEP-0124 §10: stanzas handed to the held request in the loop turn its ``wait`` ran out in are sent.

    The release is scheduled at the very instant of the hold's timeout, after it: wait_for then reports the
    timeout although the future has its result (bench.load_mixed lost messages to BOSH sessions this way).
    """
    app = BoshApp(inactivity=60)
    session = BoshSession("sid", StubStream(), "localhost", 1, 1, None, 1)
    app.sessions["sid"] = session

    def deliver() -> None:
        session.queued.append(b"<message xmlns='jabber:client' id='m1'/>")
        session.release_held()

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        body = parse_body(f"<body xmlns='{HTTPBIND}' rid='2' sid='sid'/>".encode(), 65536)
        task = asyncio.create_task(app.request(session, body, 2))
        while session.held is None:
            await asyncio.sleep(0)
        timeout_at = max(handle.when() for handle in loop._scheduled if not handle.cancelled())
        loop.call_at(timeout_at, deliver)  # same instant, queued after the timeout: one loop turn
        return await task

    assert b"id='m1'" in asyncio.run(run())
