"""Benchmark: cost of the credentials re-check at resource binding (prints figures; not a test).

``CertificateAuthenticator.refusal_at_bind`` runs once per bind, in the worker thread that already inserts the
session's row (transport.sessions.registry.bind_session): the certificate's expiry, its revocation (the
one-statement
check of certauth.revocation) and the account's active flag (one statement). Issue 11 point 6.

Run: ``.venv/bin/python -m bench.bind_check`` from the checkout. Uses a throw-away test database (SQLite by
default, or ``DATABASE_URL``) holding 10 000 certificates, 10 000 CRL-listed serials and 10 000 accounts.
"""

from __future__ import annotations

import timeit
from datetime import UTC, datetime, timedelta

from bench.testdb import in_test_database


def main() -> None:
    in_test_database(run)


def run() -> None:
    from django.db import connection

    from accounts.models import Account, Domain
    from certauth import services, trust
    from certauth.authenticator import CertificateAuthenticator
    from certauth.models import Certificate, CrlSource, RevokedSerial
    from tests.certs import make_ca, make_client
    from xmppauth.config import AuthConfig, Config, TlsOptions

    now = datetime.now(UTC)
    issuer = make_ca("bench bind CA")
    ca = services.import_ca(issuer.pem, name="bench bind CA")
    trust.invalidate()
    source = CrlSource.objects.create(  # a fresh CRL: the common case
        ca=ca,
        kind=CrlSource.Kind.OPERATOR_URL,
        location="http://bench/crl",
        last_success_at=now,
        next_update=now + timedelta(days=1),
    )
    n = 10_000
    Certificate.objects.bulk_create(
        Certificate(
            serial=format(i, "x"),
            issuer=ca,
            issuer_name="CN=bench",
            fingerprint_sha256=f"{i:064x}",
            subject=f"CN=u{i}",
            not_before=now,
            not_after=now,
            source=Certificate.Source.IMPORTED,
            pem="-",
        )
        for i in range(n)
    )
    RevokedSerial.objects.bulk_create(
        RevokedSerial(source=source, ca=ca, serial=format(n + i, "x"), revoked_at=now) for i in range(n)
    )
    domain = Domain.objects.create(name="localhost")
    Account.objects.bulk_create(Account(localpart=f"u{i}", domain=domain) for i in range(n))
    config = Config(hosts=("localhost",), auth=AuthConfig(methods=("pki",)))
    auth = CertificateAuthenticator(config, TlsOptions(verify_mode="peer"), "tcp", "127.0.0.1:1")
    alice = make_client(issuer, jids=["alice@localhost"])
    check = auth.check_certificate([alice.der])
    assert check.verified, check.reason
    assert auth.authenticate_external(check.facts, None, "localhost").accepted
    assert auth.refusal_at_bind("alice@localhost/bench") is None
    from certauth.authmethods import ExternalAttempt, refuse_inactive

    attempt = ExternalAttempt("alice@localhost", check.facts, alice.der)
    runs = 2000
    for label, call in (
        ("refusal_at_bind (a bind that passes)", lambda: auth.refusal_at_bind("alice@localhost/bench")),
        ("  of which revocation_problem_now", auth.revocation_problem_now),
        ("  of which refuse_inactive", lambda: refuse_inactive(attempt)),
    ):
        per_call = timeit.timeit(call, number=runs) / runs
        print(f"{connection.vendor:10} {per_call * 1e3:.3f} ms per {label}")


if __name__ == "__main__":
    main()
