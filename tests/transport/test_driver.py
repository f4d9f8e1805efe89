"""The session driver (transport/driver.py) with the real core and a fake adapter: no sockets, no threads.

The adapter records what the driver asks of it (bytes sent, close, database calls run inline, timers on a
Twisted ``Clock``), so each rule the driver owns is a few lines: the auth deadline the core asks for
(RFC 6120 §4.9.3.4), the XEP-0199 keepalive (§4.2), the certificate check and disconnect decision
(MongooseIM ``disconnect_on_failure``), teardown (the session registry forgets the session).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.transport.rawxmpp import STREAM_HEADER
from transport.driver import SessionDriver, leaf_fingerprint
from transport.sessions.registry import LiveSessions
from transport.xmpp import C2SConnection, IdentityDecision, StreamSettings
from xmppauth.config import TlsOptions

SASL_EXTERNAL = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"
BIND = (
    b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>phone</resource></bind></iq>"
)
FACTS = SimpleNamespace(subject="CN=alice", serial="0a", not_after=None)


class FakeAdapter:
    """What a transport gives the driver, recorded; database calls run inline, timers on a Clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.sent = b""
        self.closed: bool | None = None  # None: not asked; else the ``abort`` flag it was asked with
        self.tls_started = 0

    def send(self, data: bytes) -> None:
        self.sent += data

    def close(self, abort: bool = False) -> None:
        assert self.closed is None, "the driver asked twice"
        self.closed = abort

    def run_in_thread(self, function, done, failed) -> None:
        try:
            result = function()
        except Exception as exc:
            failed(repr(exc))
        else:
            done(result)

    def call_later(self, seconds, function):
        return self.clock.callLater(seconds, function)

    def start_tls(self) -> None:
        self.tls_started += 1

    def take(self) -> bytes:
        sent, self.sent = self.sent, b""
        return sent


@dataclass
class Check:
    facts: object
    verified: bool
    reason: str


class FakeAuthenticator:
    """Certificate verdicts given by the test; EXTERNAL accepts alice; the bind re-check passes."""

    issuer_ca_id = None

    def __init__(self, verified: bool = True, reason: str = "chain verified") -> None:
        self.check = Check(FACTS, verified, reason)

    def check_certificate(self, chain):
        return self.check

    def authenticate_external(self, facts, authzid, domain):
        return IdentityDecision.accept("alice@localhost")  # the core's one verdict type

    def refusal_at_bind(self, full_jid):
        return None


@pytest.fixture
def sessions(monkeypatch) -> LiveSessions:
    """A session registry of its own whose bind re-check runs inline (no reactor thread)."""
    registry = LiveSessions(reactor=Clock())
    monkeypatch.setattr(registry, "_in_thread", lambda function, *args: defer.maybeDeferred(function, *args))
    return registry


def new_driver(
    sessions: LiveSessions,
    *,
    ping_interval: float = 0,
    auth_timeout: float = 60,
    authenticator: FakeAuthenticator | None = None,
    disconnect_on_failure: bool = False,
) -> tuple[SessionDriver, FakeAdapter]:
    settings = StreamSettings(
        hosted_domains=("localhost",), tls_mode="tls", ping_interval=ping_interval, auth_timeout=auth_timeout
    )
    adapter = FakeAdapter()
    driver = SessionDriver(
        C2SConnection(settings, log_id="test"),
        authenticator or FakeAuthenticator(),
        adapter,
        transport="tls",
        peer="192.0.2.1:40000",
        tls_options=TlsOptions(mode="tls", verify_mode="peer", disconnect_on_failure=disconnect_on_failure),
        sessions=sessions,
    )
    driver.open()
    return driver, adapter


def log_in(driver: SessionDriver, adapter: FakeAdapter) -> None:
    """Direct TLS with a verified certificate, SASL EXTERNAL, bind alice@localhost/phone."""
    driver.certificate_presented([])
    driver.receive(STREAM_HEADER)
    driver.receive(SASL_EXTERNAL)
    driver.receive(STREAM_HEADER)
    driver.receive(BIND)
    assert driver.jid == "alice@localhost/phone", adapter.sent
    adapter.take()


def test_auth_deadline_fires_a_connection_timeout_stream_error(sessions):
    driver, adapter = new_driver(sessions, auth_timeout=60)
    driver.certificate_presented([])
    driver.receive(STREAM_HEADER)
    adapter.clock.advance(59)
    assert adapter.closed is None
    adapter.clock.advance(1)
    sent = adapter.take()
    assert b"<connection-timeout" in sent and sent.endswith(b"</stream:stream>")  # RFC 6120 §4.9.3.4
    assert adapter.closed is False  # flushed, then closed (not aborted)
    assert driver.close_condition == "connection-timeout"


def test_a_bound_session_outlives_the_auth_deadline(sessions):
    driver, adapter = new_driver(sessions, auth_timeout=60)
    log_in(driver, adapter)
    adapter.clock.advance(600)
    assert adapter.closed is None and adapter.take() == b""
    assert adapter.clock.getDelayedCalls() == []  # the deadline was cancelled, no keepalive asked for


def test_silent_session_is_pinged_and_kept_while_it_answers(sessions):
    driver, adapter = new_driver(sessions, ping_interval=60)
    log_in(driver, adapter)
    adapter.clock.advance(60)
    ping = adapter.take()
    assert b"urn:xmpp:ping" in ping and b'to="alice@localhost/phone"' in ping  # XEP-0199 §4.2
    assert b'from="localhost"' in ping and b'id="keepalive-1"' in ping
    driver.receive(b"<iq type='result' id='keepalive-1'/>")  # the pong: swallowed by the core
    assert adapter.take() == b""
    adapter.clock.advance(60)
    assert b'id="keepalive-2"' in adapter.take()  # answered, so a new round instead of a close
    assert adapter.closed is None


def test_any_input_restarts_the_silence_clock(sessions):
    driver, adapter = new_driver(sessions, ping_interval=60)
    log_in(driver, adapter)
    adapter.clock.advance(59)
    driver.receive(b" ")  # whitespace keepalive from the client (RFC 6120 §4.6.1)
    adapter.clock.advance(59)
    assert adapter.take() == b""
    adapter.clock.advance(1)
    assert b"urn:xmpp:ping" in adapter.take()


def test_missing_pong_closes_with_connection_timeout(sessions):
    driver, adapter = new_driver(sessions, ping_interval=60)
    log_in(driver, adapter)
    adapter.clock.advance(60)
    assert b"urn:xmpp:ping" in adapter.take()
    adapter.clock.advance(60)
    sent = adapter.take()
    assert b"<connection-timeout" in sent and b"no answer to ping" in sent  # RFC 6120 §4.9.3.4
    assert adapter.closed is False


def test_ping_interval_zero_never_pings(sessions):
    driver, adapter = new_driver(sessions, ping_interval=0)
    log_in(driver, adapter)
    adapter.clock.advance(3600)
    assert adapter.take() == b"" and adapter.closed is None


def test_teardown_unregisters_the_session_and_cancels_the_timers(sessions):
    driver, adapter = new_driver(sessions, ping_interval=60)
    log_in(driver, adapter)
    (handle,) = sessions.handles.values()
    assert handle.facts.full_jid == "alice@localhost/phone" and handle.facts.transport == "tls"
    driver.connection_lost("test")
    assert len(sessions) == 0
    assert adapter.clock.getDelayedCalls() == []
    assert driver.core.closed
    driver.receive(b"<presence/>")  # input after the end is ignored, nothing is sent
    assert adapter.take() == b""


def test_teardown_before_the_bind_result_never_binds(sessions, monkeypatch):
    pending = []
    monkeypatch.setattr(
        sessions, "_in_thread", lambda function, *args: pending.append((function, args)) or defer.Deferred()
    )
    driver, adapter = new_driver(sessions)
    driver.certificate_presented([])
    for data in (STREAM_HEADER, SASL_EXTERNAL, STREAM_HEADER, BIND):
        driver.receive(data)
    assert driver.jid is None and len(sessions) == 1  # registered, the re-check not answered yet
    driver.connection_lost("test")
    assert len(sessions) == 0 and driver.jid is None


def test_certificate_refused_with_disconnect_on_failure_aborts_and_logs_the_reason(sessions, caplog):
    refused = FakeAuthenticator(verified=False, reason="certificate revoked (keyCompromise)")
    driver, adapter = new_driver(sessions, authenticator=refused, disconnect_on_failure=True)
    ready = []
    with caplog.at_level(logging.WARNING, logger="transport.driver"):
        driver.certificate_presented([], on_ready=ready.append)
    assert adapter.closed is True and adapter.take() == b""  # not one byte of XMPP
    assert ready == [False]
    assert "certificate refused, disconnecting: certificate revoked (keyCompromise)" in caplog.text


def test_refused_certificate_without_disconnect_on_failure_is_kept_and_external_is_not_offered(
    sessions, caplog
):
    refused = FakeAuthenticator(verified=False, reason="certificate revoked (keyCompromise)")
    driver, adapter = new_driver(sessions, authenticator=refused, disconnect_on_failure=False)
    ready = []
    driver.certificate_presented([], on_ready=ready.append)
    assert ready == [True] and adapter.closed is None
    with caplog.at_level(logging.INFO):
        driver.receive(STREAM_HEADER)
        driver.receive(SASL_EXTERNAL)
    assert b"EXTERNAL" not in adapter.take().split(b"</stream:features>")[0]
    assert "certificate revoked (keyCompromise)" in caplog.text  # the real reason, not "no certificate"
    assert "presented no certificate" not in caplog.text


def test_input_during_a_database_call_waits_for_its_answer(sessions):
    answers = []

    class Deferring(FakeAdapter):
        def run_in_thread(self, function, done, failed) -> None:
            answers.append(lambda: done(function()))

    adapter = Deferring()
    settings = StreamSettings(hosted_domains=("localhost",), tls_mode="tls")
    driver = SessionDriver(
        C2SConnection(settings, log_id="test"),
        FakeAuthenticator(),
        adapter,
        transport="tls",
        peer="192.0.2.1:40000",
        tls_options=TlsOptions(mode="tls", verify_mode="peer", disconnect_on_failure=False),
        sessions=sessions,
    )
    driver.certificate_presented([])
    driver.receive(STREAM_HEADER)  # held: the certificate check has not answered
    assert adapter.take() == b""
    answers.pop()()
    assert b"<mechanism>EXTERNAL</mechanism>" in adapter.take()


def test_leaf_fingerprint_is_the_same_for_a_certificate_and_its_pem():
    from tests.certs import make_ca, make_client

    client = make_client(make_ca("driver test CA"), jids=["alice@localhost"])
    fingerprint = client.facts.fingerprint_sha256
    assert leaf_fingerprint([client.cert]) == fingerprint
    assert leaf_fingerprint([client.pem]) == fingerprint
    assert leaf_fingerprint([]) is None and leaf_fingerprint([b"not a certificate"]) is None


def test_driver_imports_neither_twisted_nor_asyncio():
    import ast
    from pathlib import Path

    import transport.driver

    tree = ast.parse(Path(transport.driver.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in ("twisted", "asyncio", "transport")} - {
        "transport.sessions",
        "transport.tls.policy",
        "transport.xmpp.events",
    }


def test_the_session_fingerprint_is_the_checked_facts_own(sessions):
    """Issue 17 §6: the leaf is hashed once, by the check; the driver takes its facts' fingerprint."""
    authenticator = FakeAuthenticator()
    authenticator.check = Check(SimpleNamespace(**vars(FACTS), fingerprint_sha256="ab" * 32), True, "ok")
    driver, _ = new_driver(sessions, authenticator=authenticator)
    driver.certificate_presented([])  # no chain to hash: the value can only come from the facts
    assert driver.cert_fingerprint == "ab" * 32


def test_without_facts_the_session_fingerprint_is_the_chains_leaf(sessions):
    from certauth.pki import fingerprint_sha256
    from tests.certs import make_ca, make_client

    client = make_client(make_ca(), jids=["alice@localhost"])
    authenticator = FakeAuthenticator(verified=False, reason="unparsable")
    authenticator.check = Check(None, False, "unparsable")
    driver, _ = new_driver(sessions, authenticator=authenticator)
    driver.certificate_presented([client.cert])
    assert driver.cert_fingerprint == fingerprint_sha256(client.cert)


class FromMemoryAuthenticator(FakeAuthenticator):
    """Also decides on the loop (``accepted_from_memory``): the given check, or None (not from memory)."""

    def __init__(self, from_memory: Check | None, verified: bool = True) -> None:
        super().__init__(verified)
        self.from_memory = from_memory
        self.asked: list[str] = []

    def accepted_from_memory(self, chain):
        self.asked.append("memory")
        return self.from_memory

    def check_certificate(self, chain):
        self.asked.append("worker")
        return self.check


class CountingAdapter(FakeAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.threads = 0

    def run_in_thread(self, function, done, failed) -> None:
        self.threads += 1
        super().run_in_thread(function, done, failed)


@pytest.mark.parametrize("from_memory", [True, False])
def test_a_check_decided_from_memory_needs_no_worker_thread(sessions, from_memory):
    authenticator = FromMemoryAuthenticator(Check(FACTS, True, "chain verified") if from_memory else None)
    driver, _ = new_driver(sessions, authenticator=authenticator)
    adapter = CountingAdapter()
    driver.adapter = adapter
    driver.certificate_presented([b"leaf"])
    assert authenticator.asked == (["memory"] if from_memory else ["memory", "worker"])
    assert adapter.threads == (0 if from_memory else 1)
    driver.receive(STREAM_HEADER)
    assert b"EXTERNAL" in adapter.take()  # the verified certificate is offered either way


def test_a_failing_check_from_memory_falls_back_to_the_worker(sessions, caplog):
    class Failing(FromMemoryAuthenticator):
        def accepted_from_memory(self, chain):
            raise RuntimeError("boom")

    authenticator = Failing(None, verified=False)
    driver, adapter = new_driver(sessions, authenticator=authenticator)
    with caplog.at_level(logging.ERROR, logger="transport.driver"):
        driver.certificate_presented([b"leaf"])
    assert authenticator.asked == ["worker"] and "in-memory certificate check failed" in caplog.text
    driver.receive(STREAM_HEADER)
    assert b"EXTERNAL" not in adapter.take()  # the worker's verdict (not verified) decides
