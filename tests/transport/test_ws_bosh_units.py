"""The WebSocket and BOSH adapters' own rules, without a server.

RFC 7395 §3.3.3 (one element per message: the pre-check that counts them), XEP-0124 §7/§12 (the body parser,
the inactivity timer), MongooseIM ``disconnect_on_failure`` in the shared asyncio driver, and the routes
built from the config's handler paths.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from xml.etree.ElementTree import fromstring

import pytest

from transport.driver import AsyncC2SSession, scope_tls_options
from transport.http.bosh import BODY, HTTPBIND, BoshApp, BoshError, BoshSession, parse_body
from transport.http.routing import handler_paths
from transport.http.websocket import declares_dtd, frame_element_count
from transport.tcp.protocol import ConnectionRegistry
from xmppauth.config import parse_config


@pytest.mark.parametrize(
    ("frame", "count"),
    [
        (b"<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", 1),
        (b"<?xml version='1.0'?><presence xmlns='jabber:client'/>", 1),
        (b"<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>", 2),
        (b"<presence xmlns='jabber:client'/> trailing text", 2),
        (b"", 0),
        (b"<iq xmlns='jabber:client'>", None),  # unfinished
        (b"<a></b>", None),  # not well-formed
        (b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", None),  # the core's restricted parser decides
        (b"<a>&unknown;</a>", None),
    ],
)
def test_frame_element_count(frame, count):
    assert frame_element_count(frame) == count


@pytest.mark.parametrize(
    "frame",
    [
        b"<!DOCTYPE iq>",
        b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>",
        b"<?xml version='1.0'?>\n<!DOCTYPE iq SYSTEM 'http://example.com/x.dtd'><iq/>",
        b"<!DOCTYPE a [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]><a/>",
    ],
)
def test_a_message_with_a_dtd_is_found(frame):
    assert declares_dtd(frame)  # RFC 6120 §11.1: restricted-xml


@pytest.mark.parametrize(
    "frame",
    [
        b"<iq xmlns='jabber:client' type='get' id='1'/>",
        b"<a>&lt;!DOCTYPE a&gt;</a>",  # the text of a DTD, not a DTD
        b"<a><![CDATA[<!DOCTYPE a>]]></a>",
        b"<a/><!DOCTYPE a>",  # misplaced: not well-formed, which the core says
        b"<a></b>",
        b"",
    ],
)
def test_a_message_without_a_dtd_is_not_taken_for_one(frame):
    assert not declares_dtd(frame)


def test_bosh_body_is_parsed_with_its_children():
    body = parse_body(
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='7' sid='s'>"
        b"<presence xmlns='jabber:client'/></body>",
        65536,
    )
    assert body.tag == BODY and body.get("rid") == "7" and len(body) == 1


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


def new_session(disconnect_on_failure: bool, verified: bool) -> AsyncC2SSession:
    cfg = config(disconnect_on_failure)
    listener = cfg.listen_http[0]
    return AsyncC2SSession(
        cfg,
        listener,
        listener.tls,
        transport="ws",
        peer="test",
        registry=ConnectionRegistry(),
        authenticator=FakeAuthenticator(verified),
    )


def start(disconnect_on_failure: bool, verified: bool) -> bool:
    return asyncio.run(new_session(disconnect_on_failure, verified).start([]))


def test_disconnect_on_failure_ends_a_session_whose_certificate_our_verification_refuses():
    assert start(disconnect_on_failure=True, verified=False) is False


def test_disconnect_on_failure_keeps_a_session_whose_certificate_passed():
    assert start(disconnect_on_failure=True, verified=True) is True


def test_without_disconnect_on_failure_a_refused_certificate_keeps_the_session():
    assert start(disconnect_on_failure=False, verified=False) is True


def test_an_address_past_the_auth_failure_limit_is_refused_after_the_delay(xmpp_options):
    """XEP-0205 §3 on WebSocket and BOSH: the adapters refuse the session (HTTP 403 / policy-violation)."""
    from xmppauth import limits  # noqa: PLC0415

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

    def connection_lost(self) -> None:
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
    session = new_session(disconnect_on_failure=False, verified=True)

    async def run():
        await session.start([])
        session.arm_auth_deadline(0)
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert session.closed and session.close_condition == "connection-timeout"  # RFC 6120 §4.9.3.4


def test_a_session_within_its_auth_deadline_stays_open():
    session = new_session(disconnect_on_failure=False, verified=True)

    async def run():
        await session.start([])
        session.arm_auth_deadline(60)
        await asyncio.sleep(0.05)
        still_open = not session.closed
        session.connection_lost()  # cancels the deadline
        return still_open

    assert asyncio.run(run())


class _ClosedSession:
    """Just what ``_flush`` reads of a session: one frame waiting, then the stream closes."""

    peer = "127.0.0.1:1"
    closed = True

    def frames(self):
        return [b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"]


def test_a_websocket_the_client_already_closed_is_not_sent_to_and_raises_nothing(caplog):
    from autobahn.exception import Disconnected

    from transport.http.websocket import XmppWebsocketConsumer

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
        with caplog.at_level(logging.DEBUG, logger="transport.http.websocket"):
            await consumer._flush()
            await consumer._flush()  # closed now: not even tried
        return consumer

    consumer = asyncio.run(flush_twice())
    assert consumer._ws_closed
    assert len(sent) == 1
    assert [r.levelno for r in caplog.records if r.name == "transport.http.websocket"] == [logging.DEBUG]


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
        body = fromstring(f"<body xmlns='{HTTPBIND}' rid='2' sid='sid'/>")
        task = asyncio.create_task(app.request(session, body, 2))
        while session.held is None:
            await asyncio.sleep(0)
        timeout_at = max(handle.when() for handle in loop._scheduled if not handle.cancelled())
        loop.call_at(timeout_at, deliver)  # same instant, queued after the timeout: one loop turn
        return await task

    assert b"id='m1'" in asyncio.run(run())
