"""`manage.py pki ...`: the operator's certificate actions, through the same services as the admin.

init-ca, import-ca FILE, issue JID --out DIR, import-cert FILE, revoke, hold, release,
crl CA --out FILE, list.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import Account, Domain
from certauth import pki, services
from certauth.forms import clean_allowed_domains
from certauth.models import Certificate, CertificateAuthority, RevocationReason
from transport.xmpp.jid import InvalidJid, parse_bare_jid
from xmppauth.secrets import write_private

PASSWORD_ENV = "XMPPAUTH_P12_PASSWORD"
NO_PASSWORD = (
    f"no PKCS#12 password: give --p12-password-file FILE, set {PASSWORD_ENV}, or run from a terminal"
)


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        write_private(path, data)
    else:
        path.write_bytes(data)


class Command(BaseCommand):
    help = "Manage certificate authorities and client certificates."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=type(parser), metavar="ACTION")
        # No abbreviated options: the removed --p12-password must not silently mean --p12-password-file.
        kw = {
            "called_from_command_line": getattr(parser, "called_from_command_line", None),
            "allow_abbrev": False,
        }

        p = sub.add_parser("init-ca", help="create one of our own CAs", **kw)
        p.add_argument("--name", default=services.DEFAULT_CA_NAME)
        p.add_argument("--key-type", default="ec-p256", choices=pki.KEY_TYPES)
        p.add_argument("--days", type=int, default=3650)
        p.add_argument("--not-trusted", action="store_true", help="do not trust it for client logins")

        p = sub.add_parser("import-ca", help="import an external CA certificate (PEM)", **kw)
        p.add_argument("file")
        p.add_argument("--name")
        p.add_argument("--not-trusted", action="store_true")
        p.add_argument(
            "--domains", default="", help="hosted domains it may vouch for, comma-separated (default: all)"
        )

        p = sub.add_parser("issue", help="issue a client certificate for a JID", **kw)
        p.add_argument("jid")
        p.add_argument("--out", required=True, help="directory for JID.p12, JID.crt.pem, JID.key.pem")
        p.add_argument(
            "--p12-password-file",
            help=f"file whose first line is the password (else ${PASSWORD_ENV}, else asked on the terminal)",
        )
        p.add_argument("--key-type", default="ec-p256", choices=pki.KEY_TYPES)
        p.add_argument("--days", type=int, default=365)
        p.add_argument("--cn", help="optional subject commonName")
        p.add_argument("--ca", help="name of the issuing CA (default: our oldest)")
        p.add_argument("--p12-legacy", action="store_true", help="3DES/SHA-1 .p12 for clients refusing AES")

        p = sub.add_parser("import-cert", help="register an existing client certificate (PEM)", **kw)
        p.add_argument("file")
        p.add_argument("--account", help="JID of the account it belongs to")

        for action, what in (("revoke", "revoke"), ("hold", "put on hold"), ("release", "release from hold")):
            p = sub.add_parser(action, help=f"{what} a certificate", **kw)
            p.add_argument("certificate", help="serial (hex) or SHA-256 fingerprint")
            if action == "revoke":
                accepted = [v for v in RevocationReason.values if v != RevocationReason.CERTIFICATE_HOLD]
                p.add_argument("--reason", default="unspecified", choices=accepted)

        p = sub.add_parser("crl", help="write the current CRL of one of our CAs", **kw)
        p.add_argument("ca", help="CA name or id")
        p.add_argument("--out", required=True)
        p.add_argument("--pem", action="store_true", help="PEM instead of DER")

        sub.add_parser("list", help="list CAs and certificates", **kw)

    def handle(self, *args, action: str, **options) -> None:
        try:
            getattr(self, "do_" + action.replace("-", "_"))(**options)
        except services.PkiError as exc:
            raise CommandError(str(exc)) from exc

    # -- actions ---------------------------------------------------------------------------------------

    def do_init_ca(self, *, name: str, key_type: str, days: int, not_trusted: bool, **_) -> None:
        ca = services.create_ca(name, key_type=key_type, days=days, trusted=not not_trusted)
        self.stdout.write(f"created CA {ca.name} (id {ca.pk}, SHA-256 {ca.fingerprint_sha256})")

    def do_import_ca(self, *, file: str, name: str | None, not_trusted: bool, domains: str, **_) -> None:
        try:  # the admin's rule: lower-cased, IDNA-encodable, hosted
            allowed = clean_allowed_domains(d for d in domains.replace(",", " ").split() if d)
        except ValidationError as exc:
            raise CommandError(f"--domains: {'; '.join(exc.messages)}") from exc
        ca = services.import_ca(self._read(file), name=name, trusted=not not_trusted, allowed_domains=allowed)
        trust = "trusted" if ca.trusted_for_client_auth else "not trusted"
        limit = f", for {', '.join(ca.allowed_domains)} only" if ca.allowed_domains else ""
        self.stdout.write(f"imported CA {ca.name} (id {ca.pk}, {trust} for client logins{limit})")

    def do_issue(
        self,
        *,
        jid: str,
        out: str,
        p12_password_file: str | None,
        key_type: str,
        days: int,
        cn: str | None,
        ca: str | None,
        p12_legacy: bool = False,
        **_,
    ) -> None:
        password = self._password(p12_password_file)
        with transaction.atomic():
            account = self._account(jid, create=True)
            issued = services.issue_for_account(
                account, ca=self._ca(ca) if ca else None, key_type=key_type, days=days, common_name=cn
            )
        directory = Path(out)
        base = account.jid
        _write(directory / f"{base}.p12", issued.pkcs12(password.encode(), legacy=p12_legacy), private=True)
        _write(directory / f"{base}.crt.pem", pki.certificate_to_pem(issued.certificate).encode())
        _write(
            directory / f"{base}.key.pem",
            pki.private_key_to_pem(issued.private_key, password.encode()),
            private=True,
        )
        _write(directory / "ca.pem", pki.certificate_to_pem(issued.ca_certificate).encode())
        self.stdout.write(
            f"issued certificate {issued.row.serial} for {account.jid}, valid until "
            f"{issued.row.not_after:%Y-%m-%d}; wrote {base}.p12, {base}.crt.pem, {base}.key.pem, ca.pem "
            f"in {directory}"
        )

    def do_import_cert(self, *, file: str, account: str | None, **_) -> None:
        owner = self._account(account, create=False) if account else None
        row = services.import_certificate(self._read(file), account=owner)
        self.stdout.write(f"imported certificate {row.serial} ({row.subject})")

    def do_revoke(self, *, certificate: str, reason: str, **_) -> None:
        row = services.revoke(services.find_certificate(certificate), reason)
        self.stdout.write(
            f"revoked certificate {row.serial} ({row.subject}): {row.get_revocation_reason_display()}"
        )

    def do_hold(self, *, certificate: str, **_) -> None:
        row = services.hold(services.find_certificate(certificate))
        self.stdout.write(f"certificate {row.serial} ({row.subject}) is on hold")

    def do_release(self, *, certificate: str, **_) -> None:
        row = services.release(services.find_certificate(certificate))
        self.stdout.write(f"certificate {row.serial} ({row.subject}) is active again")

    def do_crl(self, *, ca: str, out: str, pem: bool, **_) -> None:
        authority = self._ca(ca)
        if not authority.is_ours:
            raise CommandError(f"{authority.name} is an imported CA: we do not publish its CRL")
        der = bytes(authority.crl_der) if authority.crl_der else services.publish_crl(authority)
        data = pki.load_crl(der).public_bytes(Encoding.PEM) if pem else der
        _write(Path(out), data)
        self.stdout.write(f"wrote CRL #{authority.crl_number} of {authority.name} to {out}")

    def do_list(self, **_) -> None:
        for ca in CertificateAuthority.objects.all():
            kind = "ours" if ca.is_ours else "imported"
            trust = "trusted" if ca.trusted_for_client_auth else "not trusted"
            self.stdout.write(f"CA {ca.pk} {ca.name} [{kind}, {trust}] until {ca.not_after:%Y-%m-%d}")
        for row in Certificate.objects.select_related("account__domain", "issuer"):
            owner = row.account.jid if row.account else "-"
            self.stdout.write(
                f"{row.serial} {row.status:8} {owner} {row.subject} until {row.not_after:%Y-%m-%d} "
                f"sha256={row.fingerprint_sha256}"
            )

    # -- helpers ---------------------------------------------------------------------------------------

    def _read(self, file: str) -> bytes:
        try:
            return Path(file).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from exc

    def _password(self, password_file: str | None) -> str:
        """From the file, else the environment, else the terminal; never from argv (``ps`` shows it)."""
        if password_file:
            lines = self._read(password_file).decode("utf-8", "replace").splitlines()
            password = lines[0] if lines else ""
        elif os.environ.get(PASSWORD_ENV):
            password = os.environ[PASSWORD_ENV]
        elif sys.stdin.isatty():
            password = getpass.getpass("PKCS#12 password: ")
            if password != getpass.getpass("again: "):
                raise CommandError("the passwords differ", returncode=2)
        else:
            raise CommandError(NO_PASSWORD, returncode=2)
        if len(password) < pki.MIN_PASSWORD_LENGTH:
            raise CommandError(
                f"the PKCS#12 password must have at least {pki.MIN_PASSWORD_LENGTH} characters", returncode=2
            )
        return password

    def _ca(self, name_or_id: str) -> CertificateAuthority:
        query = {"pk": int(name_or_id)} if name_or_id.isdigit() else {"name": name_or_id}
        try:
            return CertificateAuthority.objects.get(**query)
        except CertificateAuthority.DoesNotExist as exc:
            raise CommandError(f"no CA {name_or_id!r} (see `pki list`)") from exc

    def _account(self, jid: str, *, create: bool) -> Account:
        try:
            parsed = parse_bare_jid(jid)
        except InvalidJid as exc:
            raise CommandError(f"{jid!r} is not a bare JID user@domain: {exc}") from exc
        try:
            return Account.objects.by_jid(parsed.bare)
        except Account.DoesNotExist:
            if not create:
                raise CommandError(f"no account {parsed.bare}") from None
        domain, _ = Domain.objects.get_or_create(name=parsed.domain)
        return Account.objects.create(
            localpart=parsed.local, domain=domain, created_by=Account.Origin.COMMAND
        )
