"""No window between a revocation and a bound session, over TCP with real TLS (issue 11 point 6).

Specs: RFC 6120 §7 (resource binding), §4.9.3.16 and §13.7.2.3 (``reset`` when the stream's certificate is
revoked), §4.9.3.12 (``not-authorized``: binding refused to an account disabled since SASL success).

A raw client does STARTTLS and SASL EXTERNAL against the real listener, core, authenticator and database;
then, before it binds, the certificate is revoked (or held, or the account disabled) as the admin does,
and the client waits until the termination watcher has applied that command *and forgotten it*: the case
the old "recent commands" window (``transport.sessions.registry.RECENT``, 10 s) never covered. The window is
shrunk to
1 s here (time control instead of sleeping 10 s); each test asserts the command is out of it before it binds.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from twisted.internet.task import LoopingCall

from accounts.models import Account
from certauth import services
from certauth.authenticator import CertificateAuthenticator
from certauth.models import AuthEvent, RevocationReason
from tests.certs import make_client
from tests.transport.rawxmpp import (
    FEATURES_END,
    STREAM_HEADER,
    SUCCESS,
    auth_external,
    ping,
    read_to_eof,
    read_until,
    sasl,
    starttls,
    stream_error_condition,
)
from tests.transport.tlsclient import client_context
from transport.sessions import registry as live
from transport.sessions import terminations as sessions
from transport.sessions.models import SessionTermination

pytestmark = pytest.mark.django_db(transaction=True)

SHORT_RECENT = timedelta(seconds=1)
BIND = (
    b"<iq type='set' id='late'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>late</resource>"
    b"</bind></iq>"
)


@pytest.fixture
def watcher(on_reactor, monkeypatch):
    """This process's termination watcher, polling the table every 50 ms, with RECENT shrunk to 1 s."""
    from twisted.internet import reactor

    monkeypatch.setattr(live, "RECENT", SHORT_RECENT)
    the_watcher = live.TerminationWatcher(live.sessions, reactor, interval=0.05)
    # What start() does, with its one synchronous query here rather than on the running reactor's thread.
    the_watcher.last_id = sessions.last_termination_id()
    the_watcher.started_at = timezone.now()
    the_watcher.loop = LoopingCall(the_watcher.poll)
    the_watcher.loop.clock = reactor
    # LoopingCall.start's Deferred fires only when the loop stops: do not wait for it.
    on_reactor(lambda: the_watcher.loop.start(the_watcher.interval, now=False) and None)
    yield the_watcher
    on_reactor(the_watcher.stop)
    on_reactor(live.sessions.forget_older_than, timezone.now() + timedelta(days=1))


@pytest.fixture
def alice(pki):
    """A certificate for alice@localhost from the trusted CA, known to the database (so it can be revoked)."""
    issued = make_client(pki.ca, jids=["alice@localhost"])
    return issued, services.import_certificate(issued.pem)


def after_sasl(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """STARTTLS, SASL EXTERNAL success, the restarted stream's features offering bind: one step before it."""
    sock, features = starttls(port, context)
    assert b"EXTERNAL" in features, features
    assert SUCCESS in sasl(sock, auth_external("="))
    sock.sendall(STREAM_HEADER)  # RFC 6120 §6.4.6
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in read_until(sock, *FEATURES_END)
    return sock


def wait_until_forgotten(on_reactor, watcher: live.TerminationWatcher, command: SessionTermination) -> None:
    """Until the watcher applied ``command`` (to no session: none is bound) and dropped it from the window
    in which new sessions are still matched against it; then a bind can only be refused by the re-check."""
    deadline = time.monotonic() + 30
    while True:
        applied = on_reactor(lambda: watcher.last_id >= command.pk)
        remembered = on_reactor(lambda: [c.id for c in live.sessions.recent if c.id == command.pk])
        if applied and not remembered:
            break
        assert time.monotonic() < deadline, "the watcher did not apply and forget the command within 30 s"
        time.sleep(0.05)
    assert timezone.now() - command.created_at > SHORT_RECENT  # beyond the (shrunk) old window


def bind_refused(sock: ssl.SSLSocket) -> tuple[str | None, str]:
    """Send the bind request; the stream error's condition and text. Fails if a bind result came back."""
    sock.sendall(BIND)
    data = read_to_eof(sock)
    assert b"<jid>" not in data and b"type='result'" not in data and b'type="result"' not in data, data
    text = re.search(rb"<text[^>]*>(.*?)</text>", data, re.S)
    return stream_error_condition(data), text[1].decode() if text else ""


def bound_sessions_of(on_reactor, bare: str) -> list[str]:
    return on_reactor(
        lambda: [h.facts.full_jid for h in live.sessions.handles.values() if h.facts.bare_jid == bare]
    )


def last_bind_event() -> AuthEvent:
    return AuthEvent.objects.filter(reason__startswith="bind refused").order_by("-pk").first()


def test_certificate_revoked_between_sasl_and_bind_never_binds(c2s, watcher, on_reactor, alice, tmp_path):
    port = c2s("starttls")
    issued, row = alice
    sock = after_sasl(port, client_context(tmp_path, issued))
    try:
        services.revoke(row, RevocationReason.KEY_COMPROMISE)
        wait_until_forgotten(on_reactor, watcher, SessionTermination.objects.latest("pk"))
        condition, text = bind_refused(sock)
    finally:
        sock.close()
    assert condition == "reset"  # RFC 6120 §4.9.3.16
    assert text.startswith("bind refused: certificate revoked ") and text.endswith(" keyCompromise")
    assert bound_sessions_of(on_reactor, "alice@localhost") == []
    event = last_bind_event()
    assert (event.condition, event.jid_requested, event.reason) == ("reset", "alice@localhost/late", text)
    assert event.cert_fingerprint == issued.facts.fingerprint_sha256


def test_certificate_held_between_sasl_and_bind_never_binds(c2s, watcher, on_reactor, alice, tmp_path):
    port = c2s("tls")  # direct TLS (XEP-0368) takes the same path
    issued, row = alice
    context = client_context(tmp_path, issued)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    try:
        sock.sendall(STREAM_HEADER)
        assert b"EXTERNAL" in read_until(sock, *FEATURES_END)
        assert SUCCESS in sasl(sock, auth_external("="))
        sock.sendall(STREAM_HEADER)
        read_until(sock, *FEATURES_END)
        services.hold(row)  # RFC 5280 §5.3.1 certificateHold
        wait_until_forgotten(on_reactor, watcher, SessionTermination.objects.latest("pk"))
        condition, text = bind_refused(sock)
    finally:
        sock.close()
    assert condition == "reset"
    assert text.startswith("bind refused: certificate on hold since ")
    assert last_bind_event().condition == "reset"
    assert bound_sessions_of(on_reactor, "alice@localhost") == []


def test_account_disabled_between_sasl_and_bind_never_binds(c2s, watcher, on_reactor, alice, tmp_path):
    port = c2s("starttls")
    issued, _ = alice
    sock = after_sasl(port, client_context(tmp_path, issued))
    try:
        account = Account.objects.by_jid("alice@localhost")  # created at this first login (pki)
        account.active = False
        account.save()  # as the admin does: orders alice's sessions ended
        wait_until_forgotten(on_reactor, watcher, SessionTermination.objects.latest("pk"))
        condition, text = bind_refused(sock)
    finally:
        sock.close()
    assert condition == "not-authorized"  # RFC 6120 §4.9.3.12
    assert text == "bind refused: account alice@localhost is disabled"
    event = last_bind_event()
    assert (event.condition, event.reason) == ("not-authorized", text)
    assert bound_sessions_of(on_reactor, "alice@localhost") == []


def test_good_certificate_binds_after_the_same_wait(c2s, watcher, on_reactor, alice, pki, tmp_path):
    port = c2s("starttls")
    issued, _ = alice
    sock = after_sasl(port, client_context(tmp_path, issued))
    try:
        other = services.import_certificate(make_client(pki.ca, jids=["bob@localhost"]).pem)
        services.revoke(other, RevocationReason.KEY_COMPROMISE)  # someone else's revocation, same timing
        wait_until_forgotten(on_reactor, watcher, SessionTermination.objects.latest("pk"))
        sock.sendall(BIND)
        reply = read_until(sock, b"</iq>")
        assert b"<jid>alice@localhost/late</jid>" in reply, reply
        assert bound_sessions_of(on_reactor, "alice@localhost") == ["alice@localhost/late"]
        assert re.search(rb"type=['\"]result['\"]", ping(sock, "p1"))  # the session answers
    finally:
        sock.close()
    assert last_bind_event() is None


def test_without_the_bind_check_this_scenario_would_bind(
    c2s, watcher, on_reactor, alice, tmp_path, monkeypatch
):
    """Guards the scenario above: beyond the old window nothing but the bind check refuses the session
    (with it disabled, the revoked certificate binds, as it did before issue 11 point 6)."""
    monkeypatch.setattr(CertificateAuthenticator, "refusal_at_bind", lambda self, full_jid: None)
    port = c2s("starttls")
    issued, row = alice
    sock = after_sasl(port, client_context(tmp_path, issued))
    try:
        services.revoke(row, RevocationReason.KEY_COMPROMISE)
        wait_until_forgotten(on_reactor, watcher, SessionTermination.objects.latest("pk"))
        sock.sendall(BIND)
        assert b"<jid>alice@localhost/late</jid>" in read_until(sock, b"</iq>")
    finally:
        sock.close()
