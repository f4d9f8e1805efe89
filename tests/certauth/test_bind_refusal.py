"""``CertificateAuthenticator.refusal_at_bind``: what changed between SASL success and resource binding.

Issue 11 point 6: a certificate revoked, held or expired, or an account disabled, after the handshake never
reaches a bound session. RFC 6120 §4.9.3.16 (``reset``: the certificate no longer holds) and §4.9.3.12
(``not-authorized``: binding refused to a disabled account). The transports call this through
``transport.sessions.registry.bind_session`` (tests/transport/test_bind_recheck.py drives it over real TLS).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import Account
from certauth.authenticator import CertificateAuthenticator
from certauth.models import AuthEvent, Certificate, CrlSource, RevocationReason, RevokedSerial
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.test_authenticator import DOMAIN, make_account, register
from tests.certs import make_ca, make_client
from xmppauth.config import AuthConfig, Config, TlsOptions, XmppauthOptions

pytestmark = pytest.mark.django_db

FULL_JID = "alice@localhost/phone"
PEER = "127.0.0.1:40000"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def ca():
    return make_ca("Bind CA")


@pytest.fixture
def ca_row(ca):
    return add_ca_row(ca, name="Bind CA")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def authenticated(ca, clock: Clock, **client_args) -> tuple[CertificateAuthenticator, object]:
    """An authenticator whose connection passed the handshake check and SASL EXTERNAL as alice."""
    config = Config(
        hosts=(DOMAIN,),
        auth=AuthConfig(methods=("pki",)),
        options=XmppauthOptions(crl_grace_seconds=3600),
    )
    auth = CertificateAuthenticator(config, TlsOptions(verify_mode="peer"), "tcp", PEER, clock=clock)
    alice = make_client(ca, jids=["alice@localhost"], **client_args)
    check = auth.check_certificate([alice.der])
    assert check.verified, check.reason
    assert auth.authenticate_external(check.facts, None, DOMAIN).jid == "alice@localhost"
    return auth, alice


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


def test_nothing_changed_since_sasl_binds_and_records_nothing(ca, ca_row, clock):
    auth, _ = authenticated(ca, clock)
    events = AuthEvent.objects.count()
    assert auth.refusal_at_bind(FULL_JID) is None
    assert AuthEvent.objects.count() == events  # a bind that passes costs no write


def test_certificate_revoked_since_sasl_is_refused_with_reset_and_recorded(ca, ca_row, clock):
    auth, alice = authenticated(ca, clock)
    register(
        alice,
        status=Certificate.Status.REVOKED,
        revoked_at=datetime(2026, 12, 6, tzinfo=UTC),
        revocation_reason=RevocationReason.KEY_COMPROMISE,
    )
    refusal = auth.refusal_at_bind(FULL_JID)
    assert (refusal.condition, refusal.reason) == (
        "reset",
        "bind refused: certificate revoked 2026-12-06 keyCompromise",
    )
    event = last_event()
    assert (event.outcome, event.condition, event.reason, event.jid_requested, event.jid_granted) == (
        AuthEvent.Outcome.FAILURE,
        "reset",
        refusal.reason,
        FULL_JID,
        "",
    )
    assert event.cert_fingerprint == alice.facts.fingerprint_sha256


def test_certificate_put_on_hold_since_sasl_is_refused_with_reset(ca, ca_row, clock):
    auth, alice = authenticated(ca, clock)
    register(
        alice,
        status=Certificate.Status.ON_HOLD,
        revoked_at=datetime(2026, 12, 6, tzinfo=UTC),
        revocation_reason=RevocationReason.CERTIFICATE_HOLD,
    )
    refusal = auth.refusal_at_bind(FULL_JID)
    assert refusal.condition == "reset"
    assert refusal.reason == "bind refused: certificate on hold since 2026-12-06"


def test_serial_listed_by_a_crl_fetched_since_sasl_is_refused_with_reset(ca, ca_row, clock):
    auth, _ = authenticated(ca, clock, serial=0xB1D)
    source = CrlSource.objects.create(
        ca=ca_row, kind=CrlSource.Kind.OPERATOR_URL, location="http://crl.test/b.crl"
    )
    RevokedSerial.objects.create(
        source=source, ca=ca_row, serial="b1d", revoked_at=datetime(2026, 12, 6, tzinfo=UTC)
    )
    refusal = auth.refusal_at_bind(FULL_JID)
    assert refusal.condition == "reset"
    assert refusal.reason == "bind refused: certificate revoked 2026-12-06 (CRL http://crl.test/b.crl)"


def test_crl_gone_stale_since_sasl_is_refused_fail_closed(ca, ca_row, clock):
    auth, _ = authenticated(ca, clock)
    CrlSource.objects.create(
        ca=ca_row,
        kind=CrlSource.Kind.DISTRIBUTION_POINT,
        location="http://crl.test/stale.crl",
        state=CrlSource.State.OK,
        next_update=clock.now - timedelta(hours=2),  # grace is 1 h
    )
    refusal = auth.refusal_at_bind(FULL_JID)
    assert refusal.condition == "reset"
    assert refusal.reason.startswith(
        "bind refused: certificate revocation status unknown: CRL http://crl.test/"
    )


def test_certificate_expired_since_sasl_is_refused_with_reset(ca, ca_row, clock):
    auth, alice = authenticated(ca, clock)
    clock.now = alice.facts.not_after - timedelta(seconds=1)
    assert auth.refusal_at_bind(FULL_JID) is None  # still valid: the boundary, one second before
    clock.now = alice.facts.not_after + timedelta(seconds=1)
    refusal = auth.refusal_at_bind(FULL_JID)
    assert refusal.condition == "reset"
    assert refusal.reason.startswith("bind refused: certificate expired ")
    assert last_event().condition == "reset"


def test_account_disabled_since_sasl_is_refused_with_not_authorized(ca, ca_row, clock):
    auth, _ = authenticated(ca, clock)  # pki: the account was created at this first login
    account = make_account("bob@localhost")  # another account's state changes nothing
    account.active = False
    account.save()
    assert auth.refusal_at_bind(FULL_JID) is None
    Account.objects.filter(localpart="alice").update(active=False)
    refusal = auth.refusal_at_bind(FULL_JID)
    assert (refusal.condition, refusal.reason) == (
        "not-authorized",
        "bind refused: account alice@localhost is disabled",
    )
    assert (last_event().condition, last_event().jid_requested) == ("not-authorized", FULL_JID)


def test_bind_without_a_certificate_checked_at_the_handshake_is_refused(clock):
    config = Config(hosts=(DOMAIN,), auth=AuthConfig(methods=("pki",)))
    auth = CertificateAuthenticator(config, TlsOptions(verify_mode="peer"), "tcp", PEER, clock=clock)
    refusal = auth.refusal_at_bind(FULL_JID)
    assert refusal.condition == "not-authorized"
    assert refusal.reason == "bind refused: no verified client certificate on this connection"


# --- a password session (issue 14): no certificate, so only its account is asked again ---------------------


def password_session(password: str = "correct horse battery") -> CertificateAuthenticator:
    """An authenticator whose connection logged in as alice with PLAIN (method rdbms), no certificate."""
    from accounts.passwords import set_password
    from transport.xmpp.events import PasswordStepRequest

    auth_config = AuthConfig(methods=("rdbms",), sasl_mechanisms=("plain",))
    set_password(make_account("alice@localhost"), password, auth_config.password, validate=False)
    config = Config(hosts=(DOMAIN,), auth=auth_config)
    auth = CertificateAuthenticator(config, TlsOptions(verify_mode="peer"), "tcp", PEER)
    step = PasswordStepRequest("PLAIN", b"\0alice\0" + password.encode(), DOMAIN, True, {}, False)
    assert auth.authenticate_password(step).jid == "alice@localhost"
    return auth


def test_a_password_session_binds_its_own_active_account():
    assert password_session().refusal_at_bind(FULL_JID) is None


def test_a_password_session_is_refused_at_bind_once_its_account_is_disabled():
    auth = password_session()
    Account.objects.filter(localpart="alice").update(active=False)
    refusal = auth.refusal_at_bind(FULL_JID)
    assert refusal is not None and refusal.condition == "not-authorized"
    assert "account alice@localhost is disabled or gone" in refusal.reason
    assert AuthEvent.objects.order_by("-pk").first().reason == refusal.reason


def test_a_password_session_is_refused_at_bind_once_its_account_is_gone():
    auth = password_session()
    Account.objects.filter(localpart="alice").delete()
    refusal = auth.refusal_at_bind(FULL_JID)
    assert refusal is not None and "disabled or gone" in refusal.reason


def test_a_password_session_cannot_bind_another_accounts_jid():
    auth = password_session()
    make_account("bob@localhost")
    refusal = auth.refusal_at_bind("bob@localhost/phone")
    assert refusal is not None and refusal.condition == "not-authorized"
    assert "not the JID the password proved" in refusal.reason
