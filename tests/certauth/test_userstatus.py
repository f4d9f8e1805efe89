"""What a client reads about its own refused certificate (issue 18 §5): the reasons the real checks give
(``certauth.verify``, ``certauth.revocation``) turned into ``certauth.userstatus`` sentences, and nothing for
any other reason. RFC 6120 §6.4.5."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from certauth import userstatus
from certauth.models import Certificate, RevocationReason
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.test_authenticator import authenticator, login, register
from tests.certs import Issued, make_ca, make_client, make_expired, make_not_yet_valid, make_self_signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def ca() -> Issued:
    return make_ca("DB CA")


@pytest.fixture
def ca_row(ca):
    return add_ca_row(ca, name="DB CA")


def test_revoked_certificate_check_carries_the_revoked_text(ca, ca_row):
    alice = make_client(ca)
    register(alice, status=Certificate.Status.REVOKED, revoked_at=datetime(2026, 11, 2, tzinfo=UTC),
             revocation_reason=RevocationReason.KEY_COMPROMISE)  # fmt: skip
    check, result = login(authenticator(), alice)
    assert check.user_text == userstatus.TEXT_REVOKED
    assert "keyCompromise" not in check.user_text and not result.accepted


def test_held_certificate_check_carries_the_on_hold_text(ca, ca_row):
    alice = make_client(ca)
    register(alice, status=Certificate.Status.ON_HOLD, revoked_at=datetime(2026, 10, 1, tzinfo=UTC))
    assert authenticator().check_certificate([alice.der]).user_text == userstatus.TEXT_ON_HOLD


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda issuer: make_expired(issuer), userstatus.TEXT_EXPIRED),
        (lambda issuer: make_not_yet_valid(issuer), userstatus.TEXT_NOT_YET_VALID),
        (lambda issuer: make_client(make_ca("Unknown CA")), userstatus.TEXT_UNTRUSTED),
        (lambda issuer: make_self_signed(), userstatus.TEXT_UNTRUSTED),
    ],
    ids=["expired", "not_yet_valid", "untrusted", "self_signed"],
)
def test_verification_refusals_carry_their_text(ca, ca_row, make, text):
    check = authenticator().check_certificate([make(ca).der])
    assert not check.verified and check.user_text == text, check


def test_revoked_since_the_handshake_is_told_at_sasl_time(ca, ca_row):
    alice = make_client(ca, jids=["alice@localhost"])
    auth = authenticator()
    check = auth.check_certificate([alice.der])
    assert check.verified and check.user_text == ""
    register(alice, status=Certificate.Status.REVOKED, revoked_at=datetime(2026, 11, 2, tzinfo=UTC))
    result = auth.authenticate_external(check.facts, None, "localhost")
    assert (result.condition, result.user_text) == ("not-authorized", userstatus.TEXT_REVOKED)


@pytest.mark.parametrize(
    "reason",
    [
        "extended key usage lacks clientAuth",
        "chain through intermediate CA CN=Sub, which is revoked 2026-11-02",  # not the user's own certificate
        "revocation status unknown: CRL http://crl.example/ca.crl stale",
        "pki: account alice@example.org is disabled",
        "",
    ],
)
def test_any_other_reason_gets_no_text(reason):
    assert userstatus.user_text(reason) == ""
