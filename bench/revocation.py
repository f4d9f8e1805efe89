"""Benchmark: cost of certauth.revocation.revocation_status and of the login's path check (prints figures).

Run: ``.venv/bin/python -m bench.revocation`` from the checkout. Uses a throw-away test database (SQLite by
default, or ``DATABASE_URL``) filled with 10 000 certificates and 10 000 CRL-listed serials.
"""

from __future__ import annotations

import timeit
from dataclasses import replace
from datetime import UTC, datetime

from bench.testdb import in_test_database


def main() -> None:
    in_test_database(run)


def run() -> None:
    from django.db import connection

    from certauth.models import Certificate, CertificateAuthority, CrlSource, RevokedSerial
    from certauth.pki import build_ca, cert_facts, generate_private_key
    from certauth.revocation import revocation_status

    now = datetime.now(UTC)
    ca_cert = build_ca("bench CA", generate_private_key("ec-p256"))
    facts = cert_facts(ca_cert)
    ca = CertificateAuthority.objects.create(
        name="bench",
        certificate_pem="-",
        subject=facts.subject,
        fingerprint_sha256=facts.fingerprint_sha256,
        not_before=now,
        not_after=now,
    )
    source = CrlSource.objects.create(ca=ca, kind=CrlSource.Kind.OPERATOR_URL, location="http://bench/crl")
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
            source=Certificate.Source.ISSUED,
            pem="-",
        )
        for i in range(n)
    )
    RevokedSerial.objects.bulk_create(
        RevokedSerial(source=source, ca=ca, serial=format(n + i, "x"), revoked_at=now) for i in range(n)
    )
    known = replace(facts, fingerprint_sha256=f"{n // 2:064x}", serial=format(n // 2, "x"))
    listed = replace(facts, fingerprint_sha256="f" * 64, serial=format(n + n // 2, "x"))
    unknown = replace(facts, fingerprint_sha256="e" * 64, serial="ffffffff")
    assert revocation_status(listed, ca) is not None
    runs = 2000
    for label, subject in (("registered, active", known), ("CRL-listed", listed), ("unknown", unknown)):
        per_call = timeit.timeit(lambda subject=subject: revocation_status(subject, ca), number=runs) / runs
        print(f"{connection.vendor:10} {label:20} {per_call * 1e3:.3f} ms per revocation_status")
    run_path(ca, source, now, runs)


def run_path(ca, source, now, runs: int) -> None:
    """The login's check (``path_revocation_problem``, one statement): a leaf of a root, and a leaf sent with
    an intermediate (two links), each CA holding a fresh CRL; nothing to refuse, the common case."""
    from datetime import timedelta

    from django.db import connection

    from certauth.models import CertificateAuthority, CrlSource
    from certauth.revocation import PathLink, path_revocation_problem

    CrlSource.objects.filter(pk=source.pk).update(last_success_at=now, next_update=now + timedelta(days=1))
    inter = CertificateAuthority.objects.create(
        name="bench inter",
        certificate_pem="-",
        subject="CN=bench inter",
        fingerprint_sha256="d" * 64,
        not_before=now,
        not_after=now,
        origin=CertificateAuthority.Origin.LEARNED,
        trusted_for_client_auth=False,
    )
    CrlSource.objects.create(
        ca=inter,
        kind=CrlSource.Kind.DISTRIBUTION_POINT,
        location="http://bench/inter",
        last_success_at=now,
        next_update=now + timedelta(days=1),
    )
    leaf = PathLink("e" * 64, "ffffffff", "CN=leaf", "CN=bench", ca.pk, is_leaf=True)
    leaf_of_inter = PathLink("e" * 64, "ffffffff", "CN=leaf", "CN=bench inter", inter.pk, is_leaf=True)
    inter_link = PathLink("d" * 64, "abcdef", "CN=bench inter", "CN=bench", ca.pk, is_leaf=False)
    grace = timedelta(hours=1)
    for label, links in (("leaf of a root", [leaf]), ("leaf + intermediate", [leaf_of_inter, inter_link])):
        for require in (False, True):
            assert path_revocation_problem(links, now=now, grace=grace, require_revocation=require) is None
            per_call = (
                timeit.timeit(
                    lambda links=links, require=require: path_revocation_problem(
                        links, now=now, grace=grace, require_revocation=require
                    ),
                    number=runs,
                )
                / runs
            )
            what = f"{label}{', require_revocation' if require else ''}"
            print(f"{connection.vendor:10} {what:40} {per_call * 1e3:.3f} ms per path_revocation_problem")


if __name__ == "__main__":
    main()
