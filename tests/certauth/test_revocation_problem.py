"""certauth.revocation.revocation_problem, the one-statement check a login runs, says what the ORM lookups
say (RFC 5280 §5.3.1 revocation and hold, DESIGN §5 fail closed on stale CRLs), in every state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certauth.models import Certificate, CrlSource, RevocationReason, RevokedSerial
from certauth.revocation import crl_staleness, revocation_problem, revocation_status
from tests.certauth.test_authenticator import add_ca_row, crl_source, register
from tests.certs import make_ca, make_client

pytestmark = pytest.mark.django_db

GRACE = timedelta(hours=1)
NOW = datetime.now(UTC)

SOURCES = {
    "no source": [],
    "fresh": [dict(next_update=NOW + timedelta(days=1))],
    "past nextUpdate within grace": [dict(next_update=NOW - timedelta(minutes=30))],
    "past nextUpdate and grace": [dict(next_update=NOW - timedelta(hours=2))],
    "stale and fresh": [
        dict(next_update=NOW - timedelta(days=2), location="http://old/crl"),
        dict(next_update=NOW + timedelta(days=2), location="http://new/crl"),
    ],
    "stale, fail-open": [dict(next_update=NOW - timedelta(days=2), fail_open=True)],
    "never fetched": [dict(next_update=None)],
}
CERTIFICATE = ["unknown", "active", "revoked", "on hold", "serial in CRL", "CRL hold"]


def old_answer(facts, ca_id, fail_open=False):
    return revocation_status(facts, ca_id) or crl_staleness(ca_id, now=NOW, grace=GRACE, fail_open=fail_open)


@pytest.mark.parametrize("sources", SOURCES)
@pytest.mark.parametrize("certificate", CERTIFICATE)
def test_one_statement_answers_as_the_orm_lookups(sources, certificate):
    ca = make_ca("Q CA")
    ca_row = add_ca_row(ca, name="Q CA")
    client = make_client(ca)
    for source in SOURCES[sources]:
        crl_source(ca_row, **source)
    if certificate == "active":
        register(client)
    elif certificate in ("revoked", "on hold"):
        register(
            client,
            status=Certificate.Status.REVOKED if certificate == "revoked" else Certificate.Status.ON_HOLD,
            revoked_at=NOW,
        )
    elif certificate in ("serial in CRL", "CRL hold"):
        source = CrlSource.objects.create(
            ca=ca_row,
            kind=CrlSource.Kind.DISTRIBUTION_POINT,
            location="http://listing/crl",
            next_update=NOW + timedelta(days=1),
        )
        hold = certificate == "CRL hold"
        reason = RevocationReason.CERTIFICATE_HOLD if hold else RevocationReason.UNSPECIFIED
        RevokedSerial.objects.create(
            ca=ca_row, source=source, serial=client.facts.serial, revoked_at=NOW, reason=reason
        )
    expected = old_answer(client.facts, ca_row.pk)
    assert revocation_problem(client.facts, ca_row.pk, now=NOW, grace=GRACE) == expected
    if certificate in ("revoked", "on hold", "serial in CRL", "CRL hold"):
        assert expected is not None  # the matrix holds refusals, not only acceptances
    if certificate in ("unknown", "active") and sources == "past nextUpdate and grace":
        assert expected is not None


def test_without_an_issuer_row_only_our_own_status_counts():
    client = make_client(make_ca("Loose CA"))
    assert revocation_problem(client.facts, None, now=NOW, grace=GRACE) is None
    register(client, status=Certificate.Status.REVOKED, revoked_at=NOW)
    assert revocation_problem(client.facts, None, now=NOW, grace=GRACE) == old_answer(client.facts, None)
    assert revocation_problem(client.facts, None, now=NOW, grace=GRACE) is not None


def test_config_fail_open_is_honoured():
    ca = make_ca("F CA")
    ca_row = add_ca_row(ca, name="F CA")
    crl_source(ca_row, next_update=NOW - timedelta(days=2))
    client = make_client(ca)
    assert revocation_problem(client.facts, ca_row.pk, now=NOW, grace=GRACE) is not None
    assert revocation_problem(client.facts, ca_row.pk, now=NOW, grace=GRACE, fail_open=True) is None
