"""Over TCP: every attempt in the auth events (issue 18 §3) and a reason a user's client can show (§5).

Specs: RFC 6120 §4.9.3.12 (``not-authorized`` stream error: stream negotiation refused), §4.9.2 (its
``<text/>``), §6.4.5 (a SASL ``<failure/>`` carries an optional ``<text/>``), §6.5.10. EXTERNAL is not offered
to a revoked, held, expired or untrusted certificate (DESIGN §4). Where nothing else would be offered, the
stream ends with ``not-authorized`` and the certificate's own status (``certauth.userstatus``) instead of an
empty ``<mechanisms/>``; with password mechanisms offered the features go out, and a client that tries
EXTERNAL anyway reads the status in the SASL failure. Everyone else reads the generic text. A client without
a certificate that leaves without trying is one ``AuthEvent``, and so is a refusal the core decides alone;
refusals from one address stop being stored at ``[xmppauth] auth_events_per_minute``. The listener is the
real one of ``tests/transport/conftest.py`` (``disconnect_on_failure = false``, so the refused certificate's
connection goes on to the stream).
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
    stream_error_condition,
    text_of,
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


PASSWORDS = AuthConfig(
    methods=("rdbms", "pki"),
    sasl_mechanisms=("plain", "external"),
    password=PasswordOptions(hashes=("sha256",), scram_iterations=4096),
)


def certificate(request, pki, kind: str):
    return request.getfixturevalue(kind) if kind in ("revoked", "held") else getattr(pki, kind)


def stream_error_after_starttls(port: int, tmp_path, client) -> bytes:
    """STARTTLS with ``client``'s certificate and the restart: what the server sent, from its stream error on
    (it closed the connection after it)."""
    sock, answer = starttls(port, client_context(tmp_path, client))
    with sock:
        answer += read_to_eof(sock)
    assert b"<stream:features" not in answer, answer  # the restarted stream offers nothing
    return answer[answer.index(b"<stream:error>") :]


def wait_for_events(count: int, **filters) -> list[AuthEvent]:
    """The auth events matching ``filters`` once there are ``count`` (the driver records in a thread)."""
    deadline = time.monotonic() + 10
    while True:
        events = list(AuthEvent.objects.filter(**filters).order_by("pk"))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


@pytest.mark.parametrize("kind", list(KINDS))
def test_refused_certificate_with_nothing_else_offered_reads_its_status_in_a_stream_error(
    c2s, tmp_path, pki, request, kind
):
    port = c2s("starttls", disconnect_on_failure=False)
    answer = stream_error_after_starttls(port, tmp_path, certificate(request, pki, kind))
    assert stream_error_condition(answer) == "not-authorized", answer  # RFC 6120 §4.9.3.12
    assert text_of(answer) == KINDS[kind], answer
    assert answer.endswith(STREAM_END), answer


@pytest.mark.parametrize("kind", list(KINDS))
def test_refused_certificate_with_passwords_offered_tries_external_and_reads_its_own_status(
    c2s, tmp_path, pki, request, kind
):
    port = c2s("starttls", auth=PASSWORDS, disconnect_on_failure=False)
    sock, features = starttls(port, client_context(tmp_path, certificate(request, pki, kind)))
    with sock:
        assert b">PLAIN<" in features and b"EXTERNAL" not in features, features  # DESIGN §4
        assert b"stream:error" not in features, features
        answer = sasl(sock, auth_external("="))
    assert sasl_failure_condition(answer) == "not-authorized", answer  # RFC 6120 §6.5.10
    assert text_of(answer) == KINDS[kind], answer


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct_tls"])
@pytest.mark.parametrize("kind", ["revoked", "expired", "untrusted"])
def test_slixmpp_reads_the_status_in_the_stream_error(c2s, tmp_path, pki, request, kind, direct_tls):
    port = c2s("tls" if direct_tls else "starttls", disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, certificate(request, pki, kind), direct_tls=direct_tls)
    assert outcome.bound_jid is None and outcome.sasl_failures == [], outcome
    assert outcome.stream_errors == [("not-authorized", KINDS[kind])], outcome
    assert not outcome.no_usable_mechanism, outcome  # not "no appropriate login method"


def test_slixmpp_without_a_certificate_reads_no_stream_error(c2s, tmp_path):
    outcome = slixmpp_login(c2s("starttls", disconnect_on_failure=False), tmp_path, None)
    assert outcome.bound_jid is None and outcome.no_usable_mechanism and outcome.stream_errors == [], outcome


@pytest.mark.parametrize("kind", ["revoked", "expired", "untrusted"])
def test_slixmpp_failed_auth_carries_the_reason_when_passwords_are_offered(c2s, tmp_path, pki, request, kind):
    port = c2s("starttls", auth=PASSWORDS, disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, certificate(request, pki, kind), external_anyway=True)
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome
    assert outcome.sasl_texts == [KINDS[kind]] and outcome.stream_errors == [], outcome


def test_the_reason_tells_nothing_about_the_account_or_the_ca(c2s, tmp_path, pki, revoked):
    port = c2s("starttls", disconnect_on_failure=False)
    answers = [stream_error_after_starttls(port, tmp_path, revoked)]
    port = c2s("starttls", auth=PASSWORDS, disconnect_on_failure=False)
    sock, _ = starttls(port, client_context(tmp_path, revoked))
    with sock:
        answers.append(sasl(sock, auth_external("=")))
    for answer in answers:
        assert text_of(answer) == userstatus.TEXT_REVOKED, answer
        for hidden in (b"alice", b"keyCompromise", b"unspecified", b"CRL", b"test client CA", b"20"):
            assert hidden not in answer, (hidden, answer)


def test_valid_certificate_of_a_disabled_account_reads_only_the_generic_text(c2s, tmp_path, pki):
    domain, _ = Domain.objects.get_or_create(name="localhost")
    Account.objects.create(localpart="alice", domain=domain, active=False)
    outcome = slixmpp_login(c2s("starttls", disconnect_on_failure=False), tmp_path, pki.valid)
    assert outcome.sasl_failures == ["not-authorized"] and outcome.sasl_texts == [GENERIC], outcome


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
        assert sasl_failure_condition(answer) == "not-authorized" and text_of(answer) == GENERIC
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


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("untrusted", "issuer not trusted"), ("revoked", "revoked "), ("expired", "expired ")],
)
def test_refused_certificate_ended_by_the_stream_error_is_recorded_once_with_subject_and_fingerprint(
    c2s, tmp_path, pki, request, kind, reason
):
    client = certificate(request, pki, kind)
    answer = stream_error_after_starttls(c2s("starttls", disconnect_on_failure=False), tmp_path, client)
    assert stream_error_condition(answer) == "not-authorized", answer
    (event,) = wait_for_events(1)
    assert event.cert_fingerprint == client.facts.fingerprint_sha256
    assert event.cert_subject == client.facts.subject
    assert (event.outcome, event.condition) == ("failure", ""), event.reason
    assert event.reason.startswith(f"certificate refused: {reason}"), event.reason
    time.sleep(0.3)
    assert AuthEvent.objects.count() == 1  # the check's record; the stream error adds none


def test_refused_certificate_that_leaves_without_trying_is_recorded_once(c2s, tmp_path, pki):
    port = c2s("starttls", auth=PASSWORDS, disconnect_on_failure=False)  # features sent: no stream error
    sock, features = starttls(port, client_context(tmp_path, pki.untrusted))
    with sock:
        assert b"stream:error" not in features, features
        sock.sendall(STREAM_END)
        read_to_eof(sock)
    (event,) = wait_for_events(1)
    assert event.cert_fingerprint == pki.untrusted.facts.fingerprint_sha256
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
