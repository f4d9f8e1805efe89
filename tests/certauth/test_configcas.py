"""certauth.configcas: tls.cacertfile CAs as rows, tls.crl_files strict and loaded, CAs without revocation.

Issue 11 points 1, 2 and 4, in process against the test database; the same start-up in real processes (the
one line on stderr, the four transports) is in ``test_configcas_processes.py`` and
``tests/transport/test_config_ca_revocation.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from certauth import services, trust
from certauth.configcas import (
    ConfigCaError,
    cas_without_revocation_source,
    prepare,
    sync_config_cas,
    warn_cas_without_revocation_source,
)
from certauth.models import AuthEvent, CertificateAuthority, CrlSource, RevokedSerial
from tests.certauth.crlhelpers import add_ca_row, authenticator, make_crl
from tests.certs import make_ca, make_client
from xmppauth.config import C2SListener, Config, HttpListener, TlsOptions, XmppauthOptions

pytestmark = pytest.mark.django_db

Origin = CertificateAuthority.Origin


def config(
    cacertfile: Path | None = None,
    *,
    crl_files: tuple[Path, ...] = (),
    domains: tuple[str, ...] = (),
    http_cacertfile: Path | None = None,
    http_domains: tuple[str, ...] = (),
    require_revocation: bool = False,
) -> Config:
    c2s = TlsOptions(
        cacertfile=str(cacertfile) if cacertfile else None,
        crl_files=tuple(str(p) for p in crl_files),
        cacert_domains=domains,
    )
    http = TlsOptions(
        cacertfile=str(http_cacertfile) if http_cacertfile else None, cacert_domains=http_domains
    )
    return Config(
        hosts=("localhost",),
        listen_c2s=(C2SListener(tls=c2s),),
        listen_http=(HttpListener(tls=http),),
        source="test.toml",
        options=XmppauthOptions(crl_grace_seconds=3600, require_revocation=require_revocation),
    )


def write(path: Path, *blobs: bytes) -> Path:
    path.write_bytes(b"".join(blobs))
    return path


def check(cacertfile: Path | None, client) -> tuple[bool, str]:
    """The real chain and revocation check of a listener whose tls.cacertfile is ``cacertfile``."""
    auth = authenticator()
    auth.listener_tls = TlsOptions(verify_mode="peer", cacertfile=str(cacertfile) if cacertfile else None)
    result = auth.check_certificate([client.der])
    return result.verified, result.reason


# --- point 1: config CAs as rows ---------------------------------------------------------------------------


def test_a_cacertfile_ca_becomes_a_config_row_with_its_files_and_domains(tmp_path):
    ca = make_ca("Partner CA")
    path = write(tmp_path / "ca.pem", ca.pem)
    sync_config_cas(config(path, domains=("localhost",)))
    row = CertificateAuthority.objects.get(fingerprint_sha256=ca.facts.fingerprint_sha256)
    assert (row.name, row.origin, row.config_files, row.allowed_domains) == (
        "Partner CA",
        Origin.CONFIG,
        [str(path)],
        ["localhost"],
    )
    assert row.trusted_for_client_auth and not row.is_ours


def test_sync_is_idempotent(tmp_path):
    path = write(tmp_path / "ca.pem", make_ca("A").pem, make_ca("B").pem)
    first = sync_config_cas(config(path))
    second = sync_config_cas(config(path))
    assert sorted(first.created) == ["A", "B"]
    assert second.created == second.updated == second.untrusted == []
    assert CertificateAuthority.objects.count() == 2


def test_an_imported_ca_listed_in_a_cacertfile_keeps_its_row_and_origin(tmp_path):
    ca = make_ca("Imported CA")
    row = add_ca_row(ca, "imported by the operator")
    path = write(tmp_path / "ca.pem", ca.pem)
    sync_config_cas(config(path))
    row.refresh_from_db()
    assert (row.name, row.origin, row.config_files) == (
        "imported by the operator",
        Origin.IMPORTED,
        [str(path)],
    )
    assert CertificateAuthority.objects.count() == 1


def test_our_own_ca_listed_in_a_cacertfile_stays_ours(tmp_path):
    ours = services.create_ca("Our CA")
    path = write(tmp_path / "ca.pem", ours.certificate_pem.encode())
    sync_config_cas(config(path))
    ours.refresh_from_db()
    assert (ours.origin, ours.config_files, ours.is_ours) == (Origin.OURS, [str(path)], True)


def test_a_config_ca_removed_from_the_file_is_no_longer_trusted(tmp_path):
    kept, removed = make_ca("Kept CA"), make_ca("Removed CA")
    path = write(tmp_path / "ca.pem", kept.pem, removed.pem)
    sync_config_cas(config(path))
    assert check(path, make_client(removed)) == (True, "chain verified")

    write(path, kept.pem)  # the operator edits the file and restarts
    report = sync_config_cas(config(path))
    trust.invalidate()

    assert report.untrusted == ["Removed CA"]
    assert check(path, make_client(removed)) == (False, "issuer not trusted")
    assert check(path, make_client(kept)) == (True, "chain verified")
    row = CertificateAuthority.objects.get(name="Removed CA")
    assert (row.origin, row.config_files, row.trusted_for_client_auth) == (Origin.CONFIG, [], False)


def test_an_imported_ca_removed_from_the_file_stays_trusted_as_imported(tmp_path):
    ca = make_ca("Imported CA")
    add_ca_row(ca, "Imported CA")
    path = write(tmp_path / "ca.pem", ca.pem)
    sync_config_cas(config(path))
    write(path, make_ca("Other").pem)
    sync_config_cas(config(path))
    row = CertificateAuthority.objects.get(name="Imported CA")
    assert (row.config_files, row.trusted_for_client_auth) == ([], True)
    assert check(None, make_client(ca)) == (True, "chain verified")


def test_a_config_ca_is_trusted_only_by_the_listener_whose_cacertfile_lists_it(tmp_path):
    c2s_ca, http_ca = make_ca("C2S CA"), make_ca("HTTP CA")
    c2s_file = write(tmp_path / "c2s.pem", c2s_ca.pem)
    http_file = write(tmp_path / "http.pem", http_ca.pem)
    sync_config_cas(config(c2s_file, http_cacertfile=http_file))
    assert check(c2s_file, make_client(c2s_ca)) == (True, "chain verified")
    assert check(c2s_file, make_client(http_ca)) == (False, "issuer not trusted")
    assert check(http_file, make_client(http_ca)) == (True, "chain verified")
    assert check(None, make_client(c2s_ca)) == (False, "issuer not trusted (no trust anchors configured)")


def test_one_ca_in_two_listeners_with_different_cacert_domains_stops_start_up(tmp_path):
    ca = make_ca("Shared CA")
    c2s_file = write(tmp_path / "c2s.pem", ca.pem)
    http_file = write(tmp_path / "http.pem", ca.pem)
    cfg = config(c2s_file, domains=("localhost",), http_cacertfile=http_file, http_domains=("example.org",))
    with pytest.raises(ConfigCaError) as raised:
        sync_config_cas(cfg)
    assert str(raised.value) == (
        "test.toml: listen.c2s[0].tls.cacert_domains and listen.http[0].tls.cacert_domains give CA "
        "CN=Shared CA different domains (['localhost'] and ['example.org']); list it with the same domains, "
        "or in one cacertfile only"
    )
    assert not CertificateAuthority.objects.exists()


def test_one_ca_in_two_listeners_with_the_same_domains_is_one_row_listing_both_files(tmp_path):
    ca = make_ca("Shared CA")
    c2s_file = write(tmp_path / "c2s.pem", ca.pem)
    http_file = write(tmp_path / "http.pem", ca.pem)
    sync_config_cas(
        config(c2s_file, domains=("localhost",), http_cacertfile=http_file, http_domains=("localhost",))
    )
    row = CertificateAuthority.objects.get()
    assert row.config_files == [str(c2s_file), str(http_file)]


def test_cacert_domains_cannot_change_the_admins_domains_of_an_imported_ca(tmp_path):
    ca = make_ca("Imported CA")
    add_ca_row(ca, "Imported CA")
    path = write(tmp_path / "ca.pem", ca.pem)
    with pytest.raises(ConfigCaError) as raised:
        sync_config_cas(config(path, domains=("localhost",)))
    assert str(raised.value) == (
        "test.toml: listen.c2s[0].tls.cacert_domains: CA 'Imported CA' is imported in the admin with allowed "
        "domains all set in the admin; set them there, or list this CA in no tls.cacertfile"
    )
    assert CertificateAuthority.objects.get().config_files == []


def test_cacert_domains_equal_to_the_admins_domains_of_an_imported_ca_are_accepted(tmp_path):
    ca = make_ca("Imported CA")
    row = add_ca_row(ca, "Imported CA")
    row.allowed_domains = ["localhost"]
    row.save()
    path = write(tmp_path / "ca.pem", ca.pem)
    sync_config_cas(config(path, domains=("localhost",)))
    row.refresh_from_db()
    assert (row.origin, row.config_files, row.allowed_domains) == (
        Origin.IMPORTED,
        [str(path)],
        ["localhost"],
    )


def test_an_unreadable_cacertfile_stops_start_up_naming_the_key(tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigCaError) as raised:
        sync_config_cas(config(missing))
    assert (
        str(raised.value) == f"test.toml: listen.c2s[0].tls.cacertfile: {missing}: No such file or directory"
    )


# --- point 2: tls.crl_files ---------------------------------------------------------------------------------


def test_crl_file_of_a_config_ca_is_loaded_at_start_up_and_refuses_the_listed_certificate(tmp_path):
    ca = make_ca("Partner CA")
    revoked, good = make_client(ca, jids=["bob@localhost"]), make_client(ca)
    path = write(tmp_path / "ca.pem", ca.pem)
    crl = write(tmp_path / "ca.crl", make_crl(ca, [revoked.cert.serial_number]))
    prepare(config(path, crl_files=(crl,)))

    source = CrlSource.objects.get()
    assert (source.ca.name, source.kind, source.location, source.state) == (
        "Partner CA",
        CrlSource.Kind.FILE,
        str(crl),
        CrlSource.State.OK,
    )
    assert list(RevokedSerial.objects.values_list("serial", flat=True)) == [
        format(revoked.cert.serial_number, "x")
    ]
    assert check(path, revoked) == (False, f"revoked 2026-09-03 keyCompromise (CRL {crl})")
    event = AuthEvent.objects.order_by("-pk").first()
    assert event.reason == f"certificate refused: revoked 2026-09-03 keyCompromise (CRL {crl})"
    assert check(path, good) == (True, "chain verified")


@pytest.mark.parametrize("origin", ["imported", "ours"])
def test_crl_file_applies_to_the_ca_that_signed_it_whatever_its_origin(tmp_path, origin):
    if origin == "ours":
        row = services.create_ca("Our CA")
        ca_cert, ca_key = services.ca_certificate(row), services.ca_private_key(row)
    else:
        issued = make_ca("Imported CA")
        row, ca_cert, ca_key = add_ca_row(issued, "Imported CA"), issued.cert, issued.key
    from tests.certs import Issued

    ca = Issued(ca_cert, ca_key, None)
    revoked = make_client(ca, jids=["bob@localhost"])
    crl = write(tmp_path / "ca.crl", make_crl(ca, [revoked.cert.serial_number]))
    prepare(config(crl_files=(crl,)))
    assert CrlSource.objects.get().ca == row
    assert check(None, revoked) == (False, f"revoked 2026-09-03 keyCompromise (CRL {crl})")


def _bad_crl_files(tmp_path: Path):
    ca, stranger = make_ca("Partner CA"), make_ca("Stranger CA")
    cacertfile = write(tmp_path / "ca.pem", ca.pem)
    forged = make_crl(ca, [1], signing_key=make_ca("Partner CA").key)
    return cacertfile, {
        "unreadable": (tmp_path / "missing.crl", None, "cannot be read: No such file or directory"),
        "not a CRL": (
            tmp_path / "ca.pem.crl",
            ca.pem,
            "not a CRL (PEM or DER): Valid PEM but no BEGIN X509 CRL/END X509 delimiters. Are you sure this "
            "is a CRL?",
        ),
        "bad signature": (
            tmp_path / "forged.crl",
            forged,
            "bad signature: issuer CN=Partner CA is CA Partner CA, whose key did not sign it",
        ),
        "no trusted CA": (
            tmp_path / "stranger.crl",
            make_crl(stranger, [1]),
            "matches no trusted CA (issuer CN=Stranger CA)",
        ),
    }


@pytest.mark.parametrize("kind", ["unreadable", "not a CRL", "bad signature", "no trusted CA"])
def test_a_bad_crl_files_entry_stops_start_up_with_one_line(tmp_path, kind):
    cacertfile, cases = _bad_crl_files(tmp_path)
    path, data, reason = cases[kind]
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ConfigCaError) as raised:
        prepare(config(cacertfile, crl_files=(path,)))
    assert str(raised.value) == f"test.toml: listen.c2s[0].tls.crl_files: {path}: {reason}"
    assert "\n" not in str(raised.value)
    assert not CrlSource.objects.exists()


def test_an_untrusted_row_does_not_own_a_crl_file(tmp_path):
    ca = make_ca("Distrusted CA")
    add_ca_row(ca, "Distrusted CA", trusted=False)
    crl = write(tmp_path / "ca.crl", make_crl(ca, [1]))
    with pytest.raises(ConfigCaError, match="matches no trusted CA"):
        prepare(config(crl_files=(crl,)))


def test_the_periodic_sync_keeps_the_source_of_a_crl_file_that_went_bad(tmp_path, caplog):
    from certauth.crlsources import sync_crl_sources

    ca = make_ca("Partner CA")
    path = write(tmp_path / "ca.pem", ca.pem)
    crl = write(tmp_path / "ca.crl", make_crl(ca, [1]))
    cfg = config(path, crl_files=(crl,))
    prepare(cfg)
    crl.write_bytes(b"garbage")
    with caplog.at_level(logging.ERROR, logger="certauth.crlsources"):
        result = sync_crl_sources(cfg)
    assert result.unmatched_files == [str(crl)]
    assert CrlSource.objects.filter(location=str(crl)).exists()  # held CRL kept; it goes stale, then refuses
    assert f"tls.crl_files {crl}: not a CRL" in caplog.text


# --- point 4: CAs without a revocation source ---------------------------------------------------------------


def test_each_trusted_ca_without_a_revocation_source_is_warned_about_once(tmp_path, caplog):
    config_ca, covered_ca, imported_ca = make_ca("Config CA"), make_ca("Covered CA"), make_ca("Imported CA")
    path = write(tmp_path / "ca.pem", config_ca.pem, covered_ca.pem)
    crl = write(tmp_path / "covered.crl", make_crl(covered_ca, []))
    add_ca_row(imported_ca, "Imported CA")
    add_ca_row(make_ca("Distrusted CA"), "Distrusted CA", trusted=False)
    services.create_ca("Our CA")  # our status and our CRL are its revocation source
    with caplog.at_level(logging.WARNING, logger="certauth.configcas"):
        prepare(config(path, crl_files=(crl,)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    tail = (
        " has no revocation source (no CRL distribution point, operator URL or tls.crl_files entry): a "
        "revoked certificate it issued is accepted ([xmppauth] require_revocation = false)"
    )
    assert warnings == [
        "CA 'Config CA' (tls.cacertfile (config))" + tail,
        "CA 'Imported CA' (imported in the admin)" + tail,
    ]


def test_the_warning_says_require_revocation_refuses_when_it_is_on(tmp_path, caplog):
    path = write(tmp_path / "ca.pem", make_ca("Config CA").pem)
    sync_config_cas(config(path))
    with caplog.at_level(logging.WARNING, logger="certauth.configcas"):
        names = warn_cas_without_revocation_source(config(path, require_revocation=True))
    assert names == ["Config CA"]
    assert "[xmppauth] require_revocation = true refuses its certificates" in caplog.text


def test_a_ca_with_a_source_or_ours_is_not_without_revocation_source(tmp_path):
    ca = make_ca("Covered CA")
    row = add_ca_row(ca, "Covered CA")
    CrlSource.objects.create(ca=row, kind=CrlSource.Kind.OPERATOR_URL, location="http://127.0.0.1:9/ca.crl")
    services.create_ca("Our CA")
    assert cas_without_revocation_source() == []
