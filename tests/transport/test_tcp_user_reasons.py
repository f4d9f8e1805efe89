"""Over TCP: every attempt in the auth events (issue 18 §3) and a reason a user's client can show (§5).

Specs: RFC 6120 §6.4.5 (a SASL ``<failure/>`` carries an optional ``<text/>``), §6.5.10 (``not-authorized``).
A client that presents a revoked, held, expired or untrusted certificate and tries EXTERNAL (EXTERNAL is not
offered to it, DESIGN §4) reads its own certificate's status (``certauth.userstatus``); everyone else reads
the generic text. A client without a certificate that leaves without trying is one ``AuthEvent``, and so is
a refusal the core decides alone; refusals from one address stop being stored at
``[xmppauth] auth_events_per_minute``. The listener is the real one of ``tests/transport/conftest.py``
(``disconnect_on_failure = false``, so the refused certificate's connection goes on to SASL).
"""

from __future__ import annotations

import time

import pytest

from accounts.models import Account, Domain
from accounts.passwords import set_password
from certauth import services, userstatus
from certauth.models import AuthEvent
from tests.certs import make_client
from tests.transport.rawxmpp import (
    STREAM_END,
    auth_external,
    read_to_eof,
    sasl,
    sasl_failure_condition,
    starttls,
)
from tests.transport.tlsclient import client_context
from tests.transport.xmppclient import slixmpp_login
from transport.xmpp.errors import SASL_FAILURE_TEXT
from xmppauth.config import AuthConfig, PasswordOptions

pytestmark = pytest.mark.django_db(transaction=True)

GENERIC = SASL_FAILURE_TEXT["not-authorized"]


@pytest.fixture
def revoked(pki):
    cert = make_client(pki.ca, jids=["alice@localhost"])
    services.revoke(services.import_certificate(cert.pem))
    return cert


@pytest.fixture
def held(pki):
    cert = make_client(pki.ca, jids=["alice@localhost"])
    services.hold(services.import_certificate(cert.pem))  # RFC 5280 §5.3.1 certificateHold
    return cert


KINDS = {
    "revoked": userstatus.TEXT_REVOKED,
    "held": userstatus.TEXT_ON_HOLD,
    "expired": userstatus.TEXT_EXPIRED,
    "untrusted": userstatus.TEXT_UNTRUSTED,
    "self_signed": userstatus.TEXT_UNTRUSTED,  # verify_mode peer: a self-signed leaf is not trusted
}


def certificate(request, pki, kind: str):
    return request.getfixturevalue(kind) if kind in ("revoked", "held") else getattr(pki, kind)


def failure_text(answer: bytes) -> str:
    start = answer.index(b"<text")
    return answer[answer.index(b">", start) + 1 : answer.index(b"</text>")].decode()


def wait_for_events(count: int, **filters) -> list[AuthEvent]:
    """The auth events matching ``filters`` once there are ``count`` (the driver records in a thread)."""
    deadline = time.monotonic() + 10
    while True:
        events = list(AuthEvent.objects.filter(**filters).order_by("pk"))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


@pytest.mark.parametrize("kind", list(KINDS))
def test_refused_certificate_tries_external_and_reads_its_own_status(c2s, tmp_path, pki, request, kind):
    client = certificate(request, pki, kind)
    port = c2s("starttls", disconnect_on_failure=False)
    sock, features = starttls(port, client_context(tmp_path, client))
    with sock:
        assert b"EXTERNAL" not in features, features  # DESIGN §4: not offered to a refused certificate
        answer = sasl(sock, auth_external("="))
    assert sasl_failure_condition(answer) == "not-authorized", answer  # RFC 6120 §6.5.10
    assert failure_text(answer) == KINDS[kind], answer


@pytest.mark.parametrize("kind", ["revoked", "expired", "untrusted"])
def test_slixmpp_failed_auth_carries_the_reason(c2s, tmp_path, pki, request, kind):
    port = c2s("starttls", disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, certificate(request, pki, kind), external_anyway=True)
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome
    assert outcome.sasl_texts == [KINDS[kind]], outcome


def test_the_reason_tells_nothing_about_the_account_or_the_ca(c2s, tmp_path, pki, revoked):
    port = c2s("starttls", disconnect_on_failure=False)
    sock, _ = starttls(port, client_context(tmp_path, revoked))
    with sock:
        answer = sasl(sock, auth_external("="))
    for hidden in (b"alice", b"keyCompromise", b"unspecified", b"CRL", b"test client CA", b"20"):
        assert hidden not in answer, (hidden, answer)


def test_valid_certificate_of_a_disabled_account_reads_only_the_generic_text(c2s, tmp_path, pki):
    domain, _ = Domain.objects.get_or_create(name="localhost")
    Account.objects.create(localpart="alice", domain=domain, active=False)
    outcome = slixmpp_login(c2s("starttls", disconnect_on_failure=False), tmp_path, pki.valid)
    assert outcome.sasl_failures == ["not-authorized"] and outcome.sasl_texts == [GENERIC], outcome


PASSWORDS = AuthConfig(
    methods=("rdbms", "pki"),
    sasl_mechanisms=("plain", "external"),
    password=PasswordOptions(hashes=("sha256",), scram_iterations=4096),
)


def test_wrong_password_reads_only_not_authorized_and_the_generic_text(c2s, tmp_path):
    domain, _ = Domain.objects.get_or_create(name="localhost")
    account = Account.objects.create(localpart="alice", domain=domain)
    set_password(account, "right horse", PASSWORDS.password, validate=False)
    port = c2s("starttls", auth=PASSWORDS, disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, None, mechanism="PLAIN", password="wrong horse")
    assert outcome.sasl_failures == ["not-authorized"] and outcome.sasl_texts == [GENERIC], outcome


# --- issue 18 §3: every attempt, once ---------------------------------------------------------------------


def test_no_certificate_and_no_attempt_is_one_auth_event(c2s, tmp_path):
    port = c2s("starttls", disconnect_on_failure=False)
    sock, features = starttls(port, client_context(tmp_path, None))
    with sock:
        assert b"EXTERNAL" not in features
        sock.sendall(STREAM_END)  # the client gives up: "no appropriate login method"
        read_to_eof(sock)
    (event,) = wait_for_events(1, transport="tcp")
    assert (event.outcome, event.condition, event.cert_fingerprint) == ("failure", "", "")
    assert event.reason == "no client certificate presented; the connection ended without a login"
    assert event.peer.startswith("127.0.0.1:")
    time.sleep(0.3)
    assert AuthEvent.objects.count() == 1  # once


def test_no_certificate_external_attempt_is_one_auth_event_with_the_core_reason(c2s, tmp_path):
    port = c2s("starttls", disconnect_on_failure=False)
    sock, _ = starttls(port, client_context(tmp_path, None))
    with sock:
        answer = sasl(sock, auth_external("="))
        assert sasl_failure_condition(answer) == "not-authorized" and failure_text(answer) == GENERIC
        sock.sendall(STREAM_END)
        read_to_eof(sock)
    (event,) = wait_for_events(1)
    assert (event.transport, event.outcome, event.condition) == ("tcp", "failure", "not-authorized")
    assert event.reason.startswith("SASL EXTERNAL: SASL EXTERNAL needs a verified client certificate")
    time.sleep(0.3)
    assert AuthEvent.objects.count() == 1  # the attempt, not also "ended without a login"


def test_mechanism_not_offered_is_recorded_with_the_certificate(c2s, tmp_path, pki):
    port = c2s("starttls", disconnect_on_failure=False)
    sock, _ = starttls(port, client_context(tmp_path, pki.valid))
    with sock:
        answer = sasl(sock, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NONE'>=</auth>")
    assert sasl_failure_condition(answer) == "invalid-mechanism", answer
    (event,) = wait_for_events(1, condition="invalid-mechanism")
    assert event.reason == "SASL X-NONE: mechanism 'X-NONE' is not offered"
    assert event.cert_fingerprint == pki.valid.facts.fingerprint_sha256


def test_refused_certificate_is_recorded_once_with_subject_and_fingerprint(c2s, tmp_path, pki):
    port = c2s("starttls", disconnect_on_failure=False)
    sock, _ = starttls(port, client_context(tmp_path, pki.untrusted))
    with sock:
        sock.sendall(STREAM_END)
        read_to_eof(sock)
    (event,) = wait_for_events(1)
    assert event.cert_fingerprint == pki.untrusted.facts.fingerprint_sha256
    assert event.cert_subject == pki.untrusted.facts.subject
    assert event.reason.startswith("certificate refused: issuer not trusted")
    time.sleep(0.3)
    assert AuthEvent.objects.count() == 1


def test_a_flood_of_attempts_from_one_address_is_capped(c2s, tmp_path, xmpp_options):
    xmpp_options(auth_events_per_minute=3, auth_failures_per_minute=1000)
    port = c2s("starttls", disconnect_on_failure=False)
    for _ in range(3):
        sock, _ = starttls(port, client_context(tmp_path, None))
        with sock:
            for _ in range(2):  # two refusals per connection, then one more without a certificate
                sasl(sock, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NONE'>=</auth>")
            sock.sendall(STREAM_END)
            read_to_eof(sock)
    wait_for_events(3, peer__startswith="127.0.0.1:")
    time.sleep(0.5)  # anything past the cap would have landed by now
    assert AuthEvent.objects.filter(peer__startswith="127.0.0.1:").count() == 3


# With disconnect_on_failure = true (the default) the handshake itself refuses: no session, no text for the
# client (README), but the attempt is recorded all the same, with the certificate when one came.


def refused_handshake(port: int, tmp_path, client) -> None:
    try:
        sock, _ = starttls(port, client_context(tmp_path, client))
        with sock:
            read_to_eof(sock)
    except (OSError, AssertionError):  # the TLS alert, or the connection cut, wherever the client sees it
        pass


@pytest.mark.parametrize(
    ("kind", "alert"),
    [("none", "certificate_required"), ("untrusted", "unknown_ca"), ("expired", "certificate_expired")],
)
def test_handshake_refused_by_openssl_is_one_auth_event(c2s, tmp_path, pki, kind, alert):
    client = None if kind == "none" else getattr(pki, kind)
    refused_handshake(c2s("starttls"), tmp_path, client)
    (event,) = wait_for_events(1)
    assert (event.transport, event.outcome, event.condition) == ("tcp", "failure", ""), event.reason
    assert event.reason.startswith(f"TLS handshake refused: {alert}"), event.reason
    assert event.cert_fingerprint == (client.facts.fingerprint_sha256 if client else "")
    assert event.cert_subject == (client.facts.subject if client else "")
    time.sleep(0.3)
    assert AuthEvent.objects.count() == 1


def test_revoked_certificate_cut_after_the_handshake_is_one_auth_event(c2s, tmp_path, revoked):
    refused_handshake(c2s("starttls"), tmp_path, revoked)
    (event,) = wait_for_events(1)
    assert event.reason.startswith("certificate refused: revoked "), event.reason
    assert event.cert_fingerprint == revoked.facts.fingerprint_sha256
    time.sleep(0.3)
    assert AuthEvent.objects.count() == 1
