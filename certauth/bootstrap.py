"""What a first start needs: hosted domains, a development CA, a server certificate, an admin user.

Idempotent: `make run` calls it on every start; it only creates what is missing or no longer fits.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from accounts import domains
from certauth import pki, services
from certauth.models import CertificateAuthority
from xmppauth.secrets import private_directory, write_private

logger = logging.getLogger(__name__)

RENEW_BEFORE = timedelta(days=30)


@dataclass
class BootstrapReport:
    done: list[str] = field(default_factory=list)
    admin_password: str | None = None  # only when generated now; shown once, never logged


def pki_dir() -> Path:
    return Path(settings.VAR_DIR) / "pki"


def _server_certificate_fits(path: Path, hosts: tuple[str, ...], ca: CertificateAuthority) -> bool:
    try:
        cert = pki.load_certificates(path.read_bytes())[0]  # leaf first, then the CA
    except (OSError, ValueError, IndexError):
        return False
    facts = pki.cert_facts(cert)
    return (
        set(hosts) <= set(facts.dns_names)
        and facts.not_after - RENEW_BEFORE > datetime.now(UTC)
        and facts.issuer == ca.subject
    )


def ensure_server_certificate(hosts: tuple[str, ...], ca: CertificateAuthority) -> bool:
    """Write var/pki/server.pem, server.key and ca.pem unless a fitting certificate is there."""
    directory = private_directory(pki_dir())
    (directory / "ca.pem").write_text(ca.certificate_pem)
    if _server_certificate_fits(directory / "server.pem", hosts, ca):
        return False
    issued = services.issue_server_certificate(hosts, ca=ca)
    write_private(directory / "server.key", pki.private_key_to_pem(issued.private_key))
    (directory / "server.pem").write_text(
        pki.certificate_to_pem(issued.certificate) + pki.certificate_to_pem(issued.ca_certificate)
    )
    return True


def ensure_admin_user(report: BootstrapReport) -> None:
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return
    username = os.environ.get("XMPPAUTH_ADMIN_USER", "admin")
    password = os.environ.get("XMPPAUTH_ADMIN_PASSWORD")
    if not password:
        password = secrets.token_urlsafe(12)
        report.admin_password = password
    user_model.objects.create_superuser(username=username, email="", password=password)
    report.done.append(f"created admin user {username!r}")


def bootstrap() -> BootstrapReport:
    report = BootstrapReport()
    hosts = settings.XMPP.hosts
    created = domains.ensure_rows(hosts)
    if created:
        report.done.append(f"added hosted domains {', '.join(created)}")
    ca = CertificateAuthority.objects.exclude(encrypted_private_key=None).order_by("created_at", "pk").first()
    if ca is None:
        ca = services.create_ca(services.DEFAULT_CA_NAME)
        report.done.append(f"created CA {ca.name!r}")
    if ensure_server_certificate(hosts, ca):
        report.done.append(f"wrote a server certificate for {', '.join(hosts)} to {pki_dir()}")
    ensure_admin_user(report)
    return report
