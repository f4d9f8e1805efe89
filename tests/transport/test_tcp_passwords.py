"""End to end over TCP: slixmpp logs in with SCRAM and PLAIN (method rdbms) beside EXTERNAL (pki), on one
listener and one account; wrong password, unknown user and disabled account get their SASL conditions.

Specs: RFC 6120 §6.4-6.5, RFC 5802 / RFC 7677 (SCRAM), RFC 4616 (PLAIN), issue 14 points 1-3.
"""

from __future__ import annotations

import base64
import re

import pytest

from accounts.models import Account, Domain, PasswordCredential
from accounts.passwords import set_password
from certauth.models import AuthEvent
from tests.transport.rawxmpp import (
    FEATURES_END,
    STREAM_HEADER,
    read_until,
    sasl,
    sasl_failure_condition,
    starttls,
)
from tests.transport.tlsclient import client_context
from tests.transport.xmppclient import slixmpp_login
from xmppauth.config import AuthConfig, PasswordOptions

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
# As the seed's second example (certificate or password), with SCRAM-SHA-256 and PLAIN added.
RDBMS_AND_PKI = AuthConfig(
    methods=("rdbms", "pki"),
    sasl_mechanisms=("scram_sha256", "scram_sha1", "plain", "external"),
    password=PasswordOptions(hashes=("sha", "sha256"), scram_iterations=4096),
)


@pytest.fixture
def alice(db):
    domain, _ = Domain.objects.get_or_create(name="localhost")
    account = Account.objects.create(localpart="alice", domain=domain)
    set_password(account, PASSWORD, RDBMS_AND_PKI.password, validate=False)
    return account


def assert_bound(outcome, bare: str) -> None:
    assert outcome.bound_jid is not None and outcome.bound_jid.startswith(bare + "/"), outcome


def assert_refused(outcome, condition: str) -> None:
    assert outcome.bound_jid is None, outcome
    assert outcome.sasl_failures == [condition], outcome


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-id").first()


def test_only_salted_keys_are_stored(alice):
    rows = PasswordCredential.objects.filter(account=alice).order_by("hash")
    assert [row.hash for row in rows] == ["sha", "sha256"]
    for row in rows:
        assert PASSWORD.encode() not in bytes(row.stored_key) + bytes(row.server_key) + bytes(row.salt)
        assert row.iterations == 4096


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct_tls"])
def test_password_mechanism_logs_in(c2s, tmp_path, alice, mechanism, direct):
    port = c2s("tls" if direct else "starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, None, mechanism=mechanism, password=PASSWORD, direct_tls=direct)
    assert_bound(outcome, "alice@localhost")
    event = last_event()
    assert (event.outcome, event.jid_granted) == (AuthEvent.Outcome.SUCCESS, "alice@localhost")
    assert mechanism in event.reason


def test_external_and_password_on_the_same_listener_and_account(c2s, tmp_path, pki, alice):
    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    assert_bound(slixmpp_login(port, tmp_path, pki.valid), "alice@localhost")
    assert_bound(
        slixmpp_login(port, tmp_path, pki.valid, mechanism="SCRAM-SHA-256", password=PASSWORD),
        "alice@localhost",
    )
    assert Account.objects.filter(localpart="alice").count() == 1


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_wrong_password_is_not_authorized(c2s, tmp_path, alice, mechanism):
    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, None, mechanism=mechanism, password="wrong")
    assert_refused(outcome, "not-authorized")
    event = last_event()
    assert (event.outcome, event.condition) == (AuthEvent.Outcome.FAILURE, "not-authorized")
    assert "wrong password" in event.reason and event.jid_requested == "alice@localhost"
    assert "wrong" not in event.reason.replace("wrong password", "")  # the password is never recorded


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_unknown_user_is_not_authorized_like_a_wrong_password(c2s, tmp_path, alice, mechanism):
    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, None, jid="mallory@localhost", mechanism=mechanism, password="x")
    assert_refused(outcome, "not-authorized")  # no user enumeration (RFC 5802 §9)
    event = last_event()
    assert "unknown user" in event.reason and event.jid_requested == "mallory@localhost"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_disabled_account_is_account_disabled_with_the_right_password(c2s, tmp_path, alice, mechanism):
    Account.objects.filter(pk=alice.pk).update(active=False)
    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    assert_refused(
        slixmpp_login(port, tmp_path, None, mechanism=mechanism, password=PASSWORD), "account-disabled"
    )
    assert "disabled" in last_event().reason
    # Without the password nobody learns that the account exists and is disabled.
    assert_refused(slixmpp_login(port, tmp_path, None, mechanism=mechanism, password="x"), "not-authorized")


def _mechanisms(features: bytes) -> list[str]:
    return [m.decode() for m in re.findall(rb"<mechanism>([^<]+)</mechanism>", features)]


def test_mechanisms_are_offered_in_the_configured_order_only_over_tls(c2s, tmp_path, pki, alice):
    import socket

    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(STREAM_HEADER)
    before = read_until(raw, *FEATURES_END)
    assert _mechanisms(before) == []  # RFC 6120 §13.8: no password before TLS
    reply = sasl(raw, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHg=</auth>")
    assert sasl_failure_condition(reply) == "encryption-required"  # RFC 6120 §6.5.3
    raw.close()
    sock, features = starttls(port, client_context(tmp_path, pki.valid))
    assert _mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "EXTERNAL"]
    sock.close()
    sock, features = starttls(port, client_context(tmp_path, None))
    assert _mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]  # no certificate, no EXTERNAL
    sock.close()


def test_pki_only_offers_no_password_mechanism(c2s, tmp_path, alice):
    port = c2s("starttls", auth=AuthConfig(), disconnect_on_failure=False)
    sock, features = starttls(port, client_context(tmp_path, None))
    assert _mechanisms(features) == []
    reply = sasl(
        sock,
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
        + base64.b64encode(b"\0alice\0" + PASSWORD.encode())
        + b"</auth>",
    )
    assert sasl_failure_condition(reply) == "invalid-mechanism"
    sock.close()


def test_malformed_plain_is_malformed_request(c2s, tmp_path, alice):
    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    sock, _ = starttls(port, client_context(tmp_path, None))
    reply = sasl(
        sock,
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
        + base64.b64encode(b"alice-no-separators")
        + b"</auth>",
    )
    assert sasl_failure_condition(reply) == "malformed-request"
    reply = sasl(sock, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%%%</auth>")
    assert sasl_failure_condition(reply) == "incorrect-encoding"
    sock.close()


# Issue 14 §3: after a refused certificate, the password mechanisms (disconnect_on_failure = false).
REFUSED = ["expired", "untrusted", "revoked"]


@pytest.fixture
def refused_cert(request, pki):
    def get(kind: str):
        if kind == "revoked":
            from certauth import services
            from tests.certs import make_client

            cert = make_client(pki.ca, jids=["alice@localhost"])
            services.revoke(services.import_certificate(cert.pem))
            return cert
        return getattr(pki, kind)

    return get


@pytest.mark.parametrize("kind", REFUSED)
def test_refused_certificate_falls_back_to_the_password(c2s, tmp_path, alice, refused_cert, kind):
    cert = refused_cert(kind)
    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=False)
    sock, features = starttls(port, client_context(tmp_path, cert))
    assert _mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]  # no EXTERNAL for it
    sock.close()
    outcome = slixmpp_login(port, tmp_path, cert, mechanism="SCRAM-SHA-256", password=PASSWORD)
    assert_bound(outcome, "alice@localhost")
    assert last_event().reason == "SCRAM-SHA-256 password"


@pytest.mark.parametrize("kind", REFUSED)
def test_refused_certificate_is_disconnected_when_disconnect_on_failure(
    c2s, tmp_path, alice, refused_cert, kind
):
    cert = refused_cert(kind)
    port = c2s("starttls", auth=RDBMS_AND_PKI, disconnect_on_failure=True)
    outcome = slixmpp_login(port, tmp_path, cert, mechanism="SCRAM-SHA-256", password=PASSWORD)
    assert outcome.bound_jid is None and outcome.sasl_failures == [] and outcome.disconnected, outcome
    assert not AuthEvent.objects.filter(outcome=AuthEvent.Outcome.SUCCESS).exists()


def test_scram_sha512_logs_in(c2s, tmp_path, db):
    auth = AuthConfig(
        methods=("rdbms",),
        sasl_mechanisms=("scram_sha512",),
        password=PasswordOptions(hashes=("sha512",), scram_iterations=4096),
    )
    domain, _ = Domain.objects.get_or_create(name="localhost")
    set_password(
        Account.objects.create(localpart="alice", domain=domain), PASSWORD, auth.password, validate=False
    )
    port = c2s("starttls", auth=auth, disconnect_on_failure=False)
    assert_bound(
        slixmpp_login(port, tmp_path, None, mechanism="SCRAM-SHA-512", password=PASSWORD), "alice@localhost"
    )
    # Keys of the other hashes were not stored: SCRAM-SHA-256 is neither offered nor possible.
    assert set(PasswordCredential.objects.values_list("hash", flat=True)) == {"sha512"}
