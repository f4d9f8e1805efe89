"""`manage.py pki`: the same operator actions as the admin, from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Account
from certauth import pki, services
from certauth.models import Certificate, CertificateAuthority

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


P12_PASSWORD = "pw1234-secret"


def password_file(directory: Path, password: str = P12_PASSWORD) -> str:
    path = directory / "p12-password.txt"
    path.write_text(password + "\n")
    return str(path)


def pki_cmd(*args: str) -> str:
    out = StringIO()
    call_command("pki", *args, stdout=out)
    return out.getvalue()


def test_init_ca_creates_an_encrypted_ca_and_its_crl():
    output = pki_cmd("init-ca", "--name", "Ops CA", "--key-type", "rsa-2048")
    ca = CertificateAuthority.objects.get(name="Ops CA")
    assert "created CA Ops CA" in output and ca.is_ours and ca.trusted_for_client_auth
    assert ca.crl_der and pki.crl_signed_by(pki.load_crl(bytes(ca.crl_der)), services.ca_certificate(ca))


def test_issue_writes_p12_pem_and_key_and_creates_the_account(tmp_path):
    pki_cmd("init-ca")
    output = pki_cmd(
        "issue",
        "Alice@LocalHost",
        "--out",
        str(tmp_path),
        "--p12-password-file",
        password_file(tmp_path),
        "--days",
        "10",
    )
    assert "alice@localhost" in output
    account = Account.objects.by_jid("alice@localhost")
    assert account.created_by == Account.Origin.COMMAND
    key, cert, _ = pki.load_pkcs12((tmp_path / "alice@localhost.p12").read_bytes(), P12_PASSWORD.encode())
    assert pki.xmppaddrs_of(cert) == ["alice@localhost"]
    assert (tmp_path / "alice@localhost.p12").stat().st_mode & 0o077 == 0
    assert pki.load_certificate((tmp_path / "alice@localhost.crt.pem").read_bytes()) == cert
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "alice@localhost.key.pem").read_bytes()
    row = Certificate.objects.get(account=account)
    assert (row.not_after - row.not_before).days == 10


def test_issued_p12_opens_with_openssl(tmp_path):
    pki_cmd("init-ca")
    pki_cmd("issue", "bob@localhost", "--out", str(tmp_path), "--p12-password-file", password_file(tmp_path))
    result = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-in",
            str(tmp_path / "bob@localhost.p12"),
            "-passin",
            f"pass:{P12_PASSWORD}",
            "-nokeys",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "BEGIN CERTIFICATE" in result.stdout


def test_issue_refuses_an_invalid_jid(tmp_path):
    pki_cmd("init-ca")
    with pytest.raises(CommandError, match="not a bare JID"):
        pki_cmd(
            "issue",
            "alice@localhost/phone",
            "--out",
            str(tmp_path),
            "--p12-password-file",
            password_file(tmp_path),
        )
    with pytest.raises(CommandError, match="not a bare JID"):
        pki_cmd(
            "issue",
            "a lice@localhost",
            "--out",
            str(tmp_path),
            "--p12-password-file",
            password_file(tmp_path),
        )
    assert not Account.objects.exists()


def test_issue_without_a_ca_says_to_create_one(tmp_path):
    with pytest.raises(CommandError, match="pki init-ca"):
        pki_cmd(
            "issue", "alice@localhost", "--out", str(tmp_path), "--p12-password-file", password_file(tmp_path)
        )


def test_revoke_by_serial_and_fingerprint_then_crl_lists_both(tmp_path):
    pki_cmd("init-ca")
    pki_cmd("issue", "a@localhost", "--out", str(tmp_path), "--p12-password-file", password_file(tmp_path))
    pki_cmd("issue", "b@localhost", "--out", str(tmp_path), "--p12-password-file", password_file(tmp_path))
    first, second = Certificate.objects.order_by("pk")
    assert "revoked" in pki_cmd("revoke", first.serial, "--reason", "key_compromise")
    pki_cmd("revoke", ":".join(second.fingerprint_sha256[i : i + 2] for i in range(0, 64, 2)).upper())
    with pytest.raises(CommandError, match="revoked already"):
        pki_cmd("revoke", first.serial)
    ca = CertificateAuthority.objects.get()
    pki_cmd("crl", ca.name, "--out", str(tmp_path / "ca.crl"))
    crl = pki.load_crl((tmp_path / "ca.crl").read_bytes())
    assert pki.crl_signed_by(crl, services.ca_certificate(ca))
    reasons = {f"{e.serial:x}": e.reason for e in pki.revoked_entries(crl)}
    assert reasons == {first.serial: "key_compromise", second.serial: None}


def test_hold_and_release(tmp_path):
    pki_cmd("init-ca")
    pki_cmd("issue", "a@localhost", "--out", str(tmp_path), "--p12-password-file", password_file(tmp_path))
    row = Certificate.objects.get()
    pki_cmd("hold", row.serial)
    row.refresh_from_db()
    assert row.status == Certificate.Status.ON_HOLD
    pki_cmd("release", row.serial)
    row.refresh_from_db()
    assert row.status == Certificate.Status.ACTIVE
    with pytest.raises(CommandError, match="not on hold"):
        pki_cmd("release", row.serial)


def test_revoke_unknown_certificate_is_a_clear_error():
    with pytest.raises(CommandError, match="no certificate with serial or fingerprint"):
        pki_cmd("revoke", "deadbeef")


def test_import_ca_and_list(tmp_path):
    from tests.certs import make_ca

    external = make_ca("Partner CA")
    (tmp_path / "partner.pem").write_bytes(external.pem)
    assert "imported CA Partner CA" in pki_cmd("import-ca", str(tmp_path / "partner.pem"))
    assert "Partner CA [imported, trusted]" in pki_cmd("list")
    with pytest.raises(CommandError, match="imported already"):
        pki_cmd("import-ca", str(tmp_path / "partner.pem"))
    with pytest.raises(CommandError, match="cannot read"):
        pki_cmd("import-ca", str(tmp_path / "missing.pem"))


def test_list_shows_serials_as_the_product_does_and_revoke_takes_the_openssl_form(tmp_path):
    """Serials are lower hex without leading zeros everywhere (admin, logs, CRL lookups, ``pki list``);
    ``openssl x509 -serial`` pads and upper-cases them, and that form finds the certificate too."""
    from tests.certs import make_ca, make_client

    cert = make_client(make_ca("Partner CA"), serial=0x00AB_CDEF_0123_4567_89)
    (tmp_path / "client.pem").write_bytes(cert.pem)
    pki_cmd("import-cert", str(tmp_path / "client.pem"))
    listed = [line.split()[0] for line in pki_cmd("list").splitlines() if not line.startswith("CA ")]
    assert listed == ["abcdef0123456789"]
    assert "revoked" in pki_cmd("revoke", "00:AB:CD:EF:01:23:45:67:89".replace(":", ""))


def test_crl_of_an_imported_ca_is_refused(tmp_path):
    from tests.certs import make_ca

    (tmp_path / "partner.pem").write_bytes(make_ca("Partner CA").pem)
    pki_cmd("import-ca", str(tmp_path / "partner.pem"))
    with pytest.raises(CommandError, match="imported CA"):
        pki_cmd("crl", "Partner CA", "--out", str(tmp_path / "x.crl"))


def test_command_line_exits_non_zero_with_a_message(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "XMPPAUTH_VAR_DIR": str(tmp_path),
    }
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    result = subprocess.run(
        [sys.executable, "manage.py", "pki", "revoke", "nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "no certificate with serial or fingerprint 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_republish_task_renews_only_crls_past_half_their_validity():
    from datetime import timedelta

    from django.utils import timezone

    from certauth.tasks import republish_our_crls

    fresh = services.create_ca("Fresh CA")
    old = services.create_ca("Old CA")
    CertificateAuthority.objects.filter(pk=old.pk).update(
        crl_updated_at=timezone.now() - services.CRL_VALIDITY / 2 - timedelta(minutes=1)
    )
    assert republish_our_crls() == 1
    assert CertificateAuthority.objects.get(pk=old.pk).crl_number == old.crl_number + 1
    assert CertificateAuthority.objects.get(pk=fresh.pk).crl_number == fresh.crl_number


def test_legacy_p12_uses_3des_and_opens_with_openssl_legacy(tmp_path):
    pki_cmd("init-ca")
    pki_cmd(
        "issue",
        "old@localhost",
        "--out",
        str(tmp_path),
        "--p12-password-file",
        password_file(tmp_path),
        "--p12-legacy",
    )
    p12 = tmp_path / "old@localhost.p12"
    info = subprocess.run(
        ["openssl", "pkcs12", "-info", "-in", str(p12), "-passin", f"pass:{P12_PASSWORD}", "-nokeys"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info.stderr and "MAC: sha1" in info.stderr
    assert pki.xmppaddrs_of(pki.load_pkcs12(p12.read_bytes(), P12_PASSWORD.encode())[1]) == ["old@localhost"]


# --- issue 12 §9: passwords, key files and bundles ----------------------------------------------------


def test_issue_reads_the_password_from_the_environment(tmp_path, monkeypatch):
    pki_cmd("init-ca")
    monkeypatch.setenv("XMPPAUTH_P12_PASSWORD", "from-the-env-1")
    pki_cmd("issue", "env@localhost", "--out", str(tmp_path))
    _, cert, _ = pki.load_pkcs12((tmp_path / "env@localhost.p12").read_bytes(), b"from-the-env-1")
    assert pki.xmppaddrs_of(cert) == ["env@localhost"]
    with pytest.raises(ValueError):
        pki.load_pkcs12((tmp_path / "env@localhost.p12").read_bytes(), P12_PASSWORD.encode())


def test_issue_refuses_a_password_shorter_than_ten_characters(tmp_path):
    pki_cmd("init-ca")
    with pytest.raises(CommandError, match="at least 10 characters") as refused:
        pki_cmd(
            "issue",
            "a@localhost",
            "--out",
            str(tmp_path),
            "--p12-password-file",
            password_file(tmp_path, "123456789"),
        )
    assert refused.value.returncode == 2
    assert not (tmp_path / "a@localhost.p12").exists()
    pki_cmd(
        "issue",
        "a@localhost",
        "--out",
        str(tmp_path),
        "--p12-password-file",
        password_file(tmp_path, "1234567890"),
    )
    assert (tmp_path / "a@localhost.p12").exists()


def test_issue_without_password_or_terminal_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XMPPAUTH_P12_PASSWORD", "REDIS_URL")}
    env.update(
        XMPPAUTH_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    manage = [sys.executable, "manage.py"]
    for args in (["migrate", "--noinput"], ["pki", "init-ca"]):
        done = subprocess.run(
            [*manage, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    result = subprocess.run(
        [*manage, "pki", "issue", "a@localhost", "--out", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--p12-password-file" in lines[0] and "XMPPAUTH_P12_PASSWORD" in lines[0], (
        lines
    )
    assert (
        "--p12-password "
        not in subprocess.run(
            [*manage, "pki", "issue", "--help"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )  # no password on the command line, where ps shows it


def test_p12_is_pbes2_aes256_with_600000_kdf_iterations(tmp_path):
    pki_cmd("init-ca")
    pki_cmd("issue", "p@localhost", "--out", str(tmp_path), "--p12-password-file", password_file(tmp_path))
    info = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-info",
            "-noout",
            "-in",
            str(tmp_path / "p@localhost.p12"),
            "-passin",
            f"pass:{P12_PASSWORD}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    assert "PBES2" in info.stderr and "AES-256-CBC" in info.stderr, info.stderr
    assert "Iteration 600000" in info.stderr and "3DES" not in info.stderr, info.stderr


def test_key_file_rewritten_over_a_world_readable_file_becomes_0600(tmp_path):
    pki_cmd("init-ca")
    key_file = tmp_path / "k@localhost.key.pem"
    key_file.write_text("old")
    key_file.chmod(0o644)
    pki_cmd("issue", "k@localhost", "--out", str(tmp_path), "--p12-password-file", password_file(tmp_path))
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k@localhost.p12").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()


def test_the_removed_password_option_is_an_error_not_an_abbreviation_of_the_file_option(tmp_path):
    pki_cmd("init-ca")
    with pytest.raises(CommandError, match="unrecognized arguments|--p12-password"):
        pki_cmd("issue", "a@localhost", "--out", str(tmp_path), "--p12-password", "secret-password")
    assert not (tmp_path / "a@localhost.p12").exists()
