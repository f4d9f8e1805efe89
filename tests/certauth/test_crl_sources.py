"""certauth.crlsources: distribution points, operator URLs and tls.crl_files (RFC 5280 §4.2.1.13, §6.3.3)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from accounts.models import Account, Domain
from certauth import crlfetch, pki, services
from certauth.crlsources import sync_crl_sources
from certauth.models import Certificate, CrlSource
from tests.certauth.crlhelpers import add_ca_row, add_source, make_crl, options
from tests.certs import Issued, make_ca, utcnow
from xmppauth.config import C2SListener, Config, HttpListener, TlsOptions

pytestmark = pytest.mark.django_db

DP = "http://pki.example/ext.crl"


def client_with_distribution_point(ca: Issued, url: str = DP) -> Issued:
    key = pki.generate_private_key("ec-p256")
    cert = pki.issue_certificate(ca.cert, ca.key, key.public_key(), xmpp_addrs=["a@localhost"], crl_url=url)
    return Issued(cert, key, ca)


def config_with_crl_files(*paths: str, http_paths: tuple[str, ...] = ()) -> Config:
    return Config(
        listen_c2s=(C2SListener(tls=TlsOptions(crl_files=tuple(paths))),),
        listen_http=(HttpListener(port=5443, tls=TlsOptions(crl_files=http_paths)),),
    )


def locations(kind: str) -> list[tuple[str, str]]:
    return list(CrlSource.objects.filter(kind=kind).values_list("ca__name", "location").order_by("location"))


def test_distribution_point_of_an_imported_certificate_becomes_a_source():
    ca = make_ca("External CA")
    add_ca_row(ca, "External CA")
    services.import_certificate(client_with_distribution_point(ca).pem)
    assert locations(CrlSource.Kind.DISTRIBUTION_POINT) == [("External CA", DP)]


def test_sync_finds_distribution_points_of_known_certificates_once():
    ca = make_ca("External CA")
    row = add_ca_row(ca, "External CA")
    Certificate.objects.bulk_create(  # bulk_create sends no post_save: only the sync can find them
        [
            Certificate(
                serial=format(issued.cert.serial_number, "x"),
                issuer=row,
                issuer_name=issued.facts.issuer,
                fingerprint_sha256=issued.facts.fingerprint_sha256,
                subject=issued.facts.subject,
                not_before=issued.facts.not_before,
                not_after=issued.facts.not_after,
                source=Certificate.Source.IMPORTED,
                pem=issued.pem.decode(),
            )
            for issued in (client_with_distribution_point(ca), client_with_distribution_point(ca, DP + "2"))
        ]
    )
    first = sync_crl_sources(Config())
    second = sync_crl_sources(Config())
    assert locations(CrlSource.Kind.DISTRIBUTION_POINT) == [("External CA", DP), ("External CA", DP + "2")]
    assert (len(first.created), len(second.created)) == (2, 0)


def test_our_own_ca_gets_no_source(settings):
    settings.XMPPAUTH_PUBLIC_URL = "http://xmpp.example"
    ours = services.create_ca("Our CA")
    account = Account.objects.create(localpart="a", domain=Domain.objects.create(name="localhost"))
    issued = services.issue_for_account(account, ca=ours)  # names our CRL URL as distribution point
    assert pki.crl_distribution_urls(issued.certificate) == [f"http://xmpp.example/crl/{ours.pk}.crl"]
    sync_crl_sources(Config())
    assert not CrlSource.objects.exists()


def test_untrusted_external_ca_gets_no_source():
    ca = make_ca("External CA")
    row = add_ca_row(ca, "External CA")
    row.trusted_for_client_auth = False
    row.save()
    services.import_certificate(client_with_distribution_point(ca).pem)
    sync_crl_sources(Config())
    assert not CrlSource.objects.exists()


def test_crl_file_is_matched_to_its_ca_by_name_and_signature(tmp_path: Path):
    ca = make_ca("External CA")
    add_ca_row(make_ca("External CA 2"), "Decoy")
    add_ca_row(ca, "External CA")
    path = tmp_path / "ext.crl"
    path.write_bytes(make_crl(ca, [0x42]))

    result = sync_crl_sources(config_with_crl_files(str(path)))

    assert locations(CrlSource.Kind.FILE) == [("External CA", str(path))]
    assert result.unmatched_files == []


def test_crl_file_signed_by_an_impostor_is_not_attached(tmp_path: Path):
    ca = make_ca("External CA")
    add_ca_row(ca, "External CA")
    path = tmp_path / "forged.crl"
    path.write_bytes(make_crl(ca, [0x42], signing_key=make_ca("External CA").key))
    result = sync_crl_sources(config_with_crl_files(str(path)))
    assert result.unmatched_files == [str(path)]
    assert not CrlSource.objects.exists()


def test_crl_files_of_http_listeners_count_too_and_are_loaded(tmp_path: Path):
    ca = make_ca("External CA")
    add_ca_row(ca, "External CA")
    path = tmp_path / "ext.pem"
    path.write_bytes(make_crl(ca, [0x42, 0x43], pem=True))
    sync_crl_sources(config_with_crl_files(http_paths=(str(path),)))
    source = CrlSource.objects.get(kind=CrlSource.Kind.FILE)

    outcome = crlfetch.refresh_source(source, options=options())

    assert outcome.ok, outcome.message
    assert set(source.revoked_serials.values_list("serial", flat=True)) == {"42", "43"}


def test_crl_file_that_left_the_config_is_removed_and_others_stay(tmp_path: Path):
    ca = make_ca("External CA")
    row = add_ca_row(ca, "External CA")
    path = tmp_path / "ext.crl"
    path.write_bytes(make_crl(ca))
    sync_crl_sources(config_with_crl_files(str(path)))
    add_source(row, "http://operator.example/ca.crl")

    result = sync_crl_sources(Config())

    assert result.removed == [str(path)]
    assert locations(CrlSource.Kind.FILE) == []
    assert locations(CrlSource.Kind.OPERATOR_URL) == [("External CA", "http://operator.example/ca.crl")]


def test_crl_file_too_large_is_refused(tmp_path: Path):
    row = add_ca_row(make_ca("External CA"), "External CA")
    path = tmp_path / "big.crl"
    path.write_bytes(bytes(2048))
    source = add_source(row, str(path), kind=CrlSource.Kind.FILE)
    outcome = crlfetch.refresh_source(source, options=options(), max_bytes=1024)
    assert outcome.message == "file larger than 1024 bytes (2048 bytes)"


def test_missing_crl_file_is_a_failure_not_a_crash(tmp_path: Path):
    row = add_ca_row(make_ca("External CA"), "External CA")
    source = add_source(row, str(tmp_path / "absent.crl"), kind=CrlSource.Kind.FILE)
    outcome = crlfetch.refresh_source(source, options=options())
    assert outcome.message == f"cannot read {tmp_path / 'absent.crl'}: No such file or directory"
    source.refresh_from_db()
    assert source.state == CrlSource.State.FAILING
    assert source.next_refresh_at > utcnow() + timedelta(seconds=30)
