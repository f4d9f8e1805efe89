"""What operators do with certificates: create and import CAs, issue, import, revoke, hold, publish CRLs.

The admin, the ``pki`` command and the jobs are thin callers of these functions (the django-ca way), so
each action has one implementation. Private keys of our CAs are encrypted at rest (certauth.pki.keys).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from accounts.models import Account
from certauth import pki
from certauth.models import Certificate, CertificateAuthority, RevocationReason

logger = logging.getLogger(__name__)

# Sent after a certificate stops being usable (revoked or held); live sessions listen (issue 5).
certificate_invalidated = Signal()  # kwargs: certificate (Certificate row)

CRL_VALIDITY = timedelta(days=7)
UB_COMMON_NAME = 64  # RFC 5280 Appendix A: ub-common-name
DEFAULT_CA_NAME = "xmppauth development CA"


class PkiError(Exception):
    """An operator request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued certificate with its private key (handed to the user, never stored)."""

    row: Certificate
    certificate: x509.Certificate
    private_key: PrivateKeyTypes
    ca_certificate: x509.Certificate

    def pkcs12(self, password: bytes, *, legacy: bool = False) -> bytes:
        return pki.export_pkcs12(
            self.certificate,
            self.private_key,
            ca_chain=[self.ca_certificate],
            password=password,
            friendly_name=(self.row.xmpp_addrs[0] if self.row.xmpp_addrs else self.row.subject).encode(),
            legacy=legacy,
        )

    def pem_bundle(self, password: bytes) -> bytes:
        """Certificate, CA certificate and the private key encrypted with ``password``, as PEM."""
        return (
            pki.certificate_to_pem(self.certificate).encode()
            + pki.certificate_to_pem(self.ca_certificate).encode()
            + pki.private_key_to_pem(self.private_key, password=password)
        )


# --- certificate authorities -------------------------------------------------------------------------


def _ca_fields(cert: x509.Certificate) -> dict:
    facts = pki.cert_facts(cert)
    return {
        "certificate_pem": pki.certificate_to_pem(cert),
        "subject": facts.subject,
        "fingerprint_sha256": facts.fingerprint_sha256,
        "not_before": facts.not_before,
        "not_after": facts.not_after,
    }


@transaction.atomic
def create_ca(
    name: str, *, key_type: str = "ec-p256", days: int = 3650, trusted: bool = True
) -> CertificateAuthority:
    """Create one of our own CAs; its key is stored encrypted under settings.KEY_ENCRYPTION_KEY."""
    if CertificateAuthority.objects.filter(name=name).exists():
        raise PkiError(f"a CA named {name!r} exists already")
    key = pki.generate_private_key(key_type)
    cert = pki.build_ca(name, key, days=days)
    ca = CertificateAuthority.objects.create(
        name=name,
        encrypted_private_key=pki.encrypt_private_key(key, settings.KEY_ENCRYPTION_KEY),
        origin=CertificateAuthority.Origin.OURS,
        trusted_for_client_auth=trusted,
        **_ca_fields(cert),
    )
    publish_crl(ca)
    ca.refresh_from_db()
    logger.info("created CA %r (%s)", name, ca.fingerprint_sha256)
    return ca


@transaction.atomic
def import_ca(
    pem: bytes, *, name: str | None = None, trusted: bool = True, allowed_domains: Sequence[str] = ()
) -> CertificateAuthority:
    """Import an external CA certificate (no key); it is trusted for client authentication if asked, for
    ``allowed_domains`` only when given (checked by the caller: ``certauth.forms.clean_allowed_domains``)."""
    try:
        cert = pki.load_certificate(pem)
        facts = pki.cert_facts(cert)  # ValueError too, for a certificate we cannot read (fuzzing found some)
    except ValueError as exc:
        raise PkiError(f"not a certificate: {exc}") from exc
    if not facts.is_ca:
        raise PkiError("this certificate is not a CA (basicConstraints cA is not true)")
    if CertificateAuthority.objects.filter(fingerprint_sha256=facts.fingerprint_sha256).exists():
        raise PkiError(f"this CA is imported already ({facts.fingerprint_sha256})")
    name = name or facts.common_name or facts.subject
    ca = CertificateAuthority.objects.create(
        name=name, trusted_for_client_auth=trusted, allowed_domains=list(allowed_domains), **_ca_fields(cert)
    )
    logger.info("imported CA %r (%s)", name, ca.fingerprint_sha256)
    return ca


def ca_certificate(ca: CertificateAuthority) -> x509.Certificate:
    return pki.load_certificate(ca.certificate_pem.encode())


def ca_private_key(ca: CertificateAuthority) -> PrivateKeyTypes:
    if not ca.is_ours:
        raise PkiError(f"{ca.name} is an imported CA: we do not hold its key")
    return pki.decrypt_private_key(bytes(ca.encrypted_private_key), settings.KEY_ENCRYPTION_KEY)


def default_ca() -> CertificateAuthority:
    """The CA that issues when none is named: our oldest CA."""
    ca = CertificateAuthority.objects.exclude(encrypted_private_key=None).order_by("created_at", "pk").first()
    if ca is None:
        raise PkiError("no CA of ours exists: run `python manage.py pki init-ca` first")
    return ca


def crl_base_url() -> str | None:
    """Where new certificates say our CRLs are (RFC 5280 §4.2.1.13), without the ``/crl/<id>.crl`` part.

    In order: ``XMPPAUTH_PUBLIC_URL`` (the environment's override, e.g. behind a proxy that maps ports),
    ``[xmppauth] crl_base_url`` (checked at start-up against a plain-HTTP listener), the first
    ``crl_only = true`` listener, else the first ``[[listen.http]]`` (where certificates issued before there
    was a CRL listener point; it keeps serving ``/crl/``). Hosts are the first hosted domain.
    """
    config = settings.XMPP
    if settings.XMPPAUTH_PUBLIC_URL:
        return settings.XMPPAUTH_PUBLIC_URL
    if config.options.crl_base_url:
        return config.options.crl_base_url.rstrip("/")
    listeners = sorted(config.listen_http, key=lambda li: not li.crl_only)  # stable: file order otherwise
    if not listeners:
        return None
    listener = listeners[0]
    scheme = "https" if listener.tls is not None else "http"
    return f"{scheme}://{config.hosts[0]}:{listener.port}"


def crl_url(ca: CertificateAuthority) -> str | None:
    """The distribution point our certificates name (served by certauth.views.crl)."""
    base = crl_base_url()
    return None if base is None else f"{base}/crl/{ca.pk}.crl"


# --- certificates ------------------------------------------------------------------------------------


def record_certificate(
    cert: x509.Certificate, *, source: str, account: Account | None, issuer: CertificateAuthority | None
) -> Certificate:
    facts = pki.cert_facts(cert)
    return Certificate.objects.create(
        serial=facts.serial,
        issuer=issuer,
        issuer_name=facts.issuer,
        fingerprint_sha256=facts.fingerprint_sha256,
        subject=facts.subject,
        common_name=facts.common_name or "",
        xmpp_addrs=list(facts.xmpp_addrs),
        dns_names=list(facts.dns_names),
        not_before=facts.not_before,
        not_after=facts.not_after,
        account=account,
        source=source,
        pem=pki.certificate_to_pem(cert),
    )


@transaction.atomic
def issue_for_account(
    account: Account,
    *,
    ca: CertificateAuthority | None = None,
    key_type: str = "ec-p256",
    days: int = 365,
    common_name: str | None = None,
) -> IssuedCertificate:
    """Issue a client certificate whose xmppAddr is the account's JID (XEP-0178 §3).

    Its subject is ``CN=<common_name>``, by default ``CN=<the JID>`` so lists and clients show whose it is
    (the ``common_name`` verifier never reads the CN of a certificate that carries an xmppAddr: DESIGN §0);
    a JID longer than the CN's 64 characters (RFC 5280 ub-common-name) leaves the subject empty.
    """
    if days < 1:
        raise PkiError("validity must be at least one day")
    ca = ca or default_ca()
    issuer_cert, issuer_key = ca_certificate(ca), ca_private_key(ca)
    key = pki.generate_private_key(key_type)
    cert = pki.issue_certificate(
        issuer_cert,
        issuer_key,
        key.public_key(),
        xmpp_addrs=[account.jid],
        common_name=common_name or (account.jid if len(account.jid) <= UB_COMMON_NAME else None),
        days=days,
        crl_url=crl_url(ca),
    )
    row = record_certificate(cert, source=Certificate.Source.ISSUED, account=account, issuer=ca)
    logger.info("issued certificate %s for %s by %s", row.serial, account.jid, ca.name)
    return IssuedCertificate(row=row, certificate=cert, private_key=key, ca_certificate=issuer_cert)


@transaction.atomic
def sign_csr_for_account(
    account: Account, csr_pem: bytes, *, ca: CertificateAuthority | None = None, days: int = 365
) -> Certificate:
    """Sign a CSR for an account; the xmppAddr is the account's JID, whatever the CSR asks for."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate signing request: {exc}") from exc
    ca = ca or default_ca()
    try:
        cert = pki.sign_csr(
            ca_certificate(ca),
            ca_private_key(ca),
            csr,
            xmpp_addrs=[account.jid],
            days=days,
            crl_url=crl_url(ca),
        )
    except ValueError as exc:
        raise PkiError(str(exc)) from exc
    row = record_certificate(cert, source=Certificate.Source.ISSUED, account=account, issuer=ca)
    logger.info("signed CSR: certificate %s for %s by %s", row.serial, account.jid, ca.name)
    return row


def find_issuer(cert: x509.Certificate) -> CertificateAuthority | None:
    for ca in CertificateAuthority.objects.all():
        try:
            cert.verify_directly_issued_by(ca_certificate(ca))
        except (ValueError, TypeError, x509.InvalidSignature):
            continue
        return ca
    return None


@transaction.atomic
def import_certificate(pem: bytes, *, account: Account | None = None) -> Certificate:
    """Register an existing client certificate (the `db` auth method needs it registered to an account)."""
    try:
        cert = pki.load_certificate(pem)
        pki.cert_facts(cert)  # what record_attempt reads: refuse here a certificate we cannot read
    except ValueError as exc:
        raise PkiError(f"not a certificate: {exc}") from exc
    fingerprint = pki.fingerprint_sha256(cert)
    if Certificate.objects.filter(fingerprint_sha256=fingerprint).exists():
        raise PkiError(f"this certificate is registered already ({fingerprint})")
    row = record_certificate(
        cert, source=Certificate.Source.IMPORTED, account=account, issuer=find_issuer(cert)
    )
    logger.info("imported certificate %s (%s)", row.serial, row.subject)
    return row


def find_certificate(serial_or_fingerprint: str) -> Certificate:
    """A certificate by SHA-256 fingerprint (hex, colons allowed) or by serial (hex)."""
    needle = serial_or_fingerprint.strip().lower().replace(":", "")
    if needle.startswith("0x"):
        needle = needle[2:]
    matches = list(Certificate.objects.filter(fingerprint_sha256=needle)) or list(
        Certificate.objects.filter(serial=needle.lstrip("0") or "0")
    )
    if not matches:
        raise PkiError(f"no certificate with serial or fingerprint {serial_or_fingerprint!r}")
    if len(matches) > 1:
        raise PkiError(
            f"{len(matches)} certificates have serial {serial_or_fingerprint!r}: use the fingerprint"
        )
    return matches[0]


# --- revocation --------------------------------------------------------------------------------------


def _after_status_change(row: Certificate, *, end_sessions: bool = True) -> None:
    if row.issuer is not None and row.issuer.is_ours:
        publish_crl(row.issuer)
    if end_sessions:
        transaction.on_commit(lambda: certificate_invalidated.send(sender=Certificate, certificate=row))


@transaction.atomic
def revoke(
    row: Certificate, reason: str = RevocationReason.UNSPECIFIED, *, when: datetime | None = None
) -> Certificate:
    """Revoke for good (RFC 5280 §5.3.1 reason); a held certificate may be revoked, not a revoked one."""
    if reason not in RevocationReason.values or reason == RevocationReason.CERTIFICATE_HOLD:
        accepted = ", ".join(v for v in RevocationReason.values if v != RevocationReason.CERTIFICATE_HOLD)
        raise PkiError(
            f"unknown revocation reason {reason!r}; accepted: {accepted} (use hold for certificateHold)"
        )
    row = Certificate.objects.select_for_update().get(pk=row.pk)
    if row.status == Certificate.Status.REVOKED:
        raise PkiError(f"certificate {row.serial} is revoked already")
    row.status = Certificate.Status.REVOKED
    row.revoked_at = when or timezone.now()
    row.revocation_reason = reason
    row.save(update_fields=["status", "revoked_at", "revocation_reason"])
    logger.info(
        "revoked certificate %s (%s, %s)", row.serial, row.subject, row.get_revocation_reason_display()
    )
    _after_status_change(row)
    return row


@transaction.atomic
def hold(row: Certificate, *, when: datetime | None = None, end_sessions: bool = True) -> Certificate:
    """Suspend (RFC 5280 certificateHold); ``release`` undoes it. ``end_sessions=False``: no new login, but
    the sessions logged in with it stay (a user's XEP-0257 disable, §2.3, unlike its revoke, §2.4)."""
    row = Certificate.objects.select_for_update().get(pk=row.pk)
    if row.status != Certificate.Status.ACTIVE:
        raise PkiError(f"certificate {row.serial} is {row.get_status_display()}, not active")
    row.status = Certificate.Status.ON_HOLD
    row.revoked_at = when or timezone.now()
    row.revocation_reason = RevocationReason.CERTIFICATE_HOLD
    row.save(update_fields=["status", "revoked_at", "revocation_reason"])
    logger.info("put certificate %s (%s) on hold", row.serial, row.subject)
    _after_status_change(row, end_sessions=end_sessions)
    return row


@transaction.atomic
def release(row: Certificate) -> Certificate:
    """Lift a hold (RFC 5280 §5.3.1: removeFromCRL, here by leaving the next CRL)."""
    row = Certificate.objects.select_for_update().get(pk=row.pk)
    if row.status != Certificate.Status.ON_HOLD:
        raise PkiError(f"certificate {row.serial} is {row.get_status_display()}, not on hold")
    row.status = Certificate.Status.ACTIVE
    row.revoked_at = None
    row.revocation_reason = ""
    row.save(update_fields=["status", "revoked_at", "revocation_reason"])
    logger.info("released certificate %s (%s) from hold", row.serial, row.subject)
    if row.issuer is not None and row.issuer.is_ours:
        publish_crl(row.issuer)
    return row


@transaction.atomic
def publish_crl(ca: CertificateAuthority) -> bytes:
    """Regenerate and store the CRL of one of our CAs; returns it as DER."""
    ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
    now = datetime.now(UTC)
    revoked = [
        pki.RevokedEntry(
            serial=int(row.serial, 16), revoked_at=row.revoked_at, reason=row.revocation_reason or None
        )
        for row in ca.certificates.exclude(status=Certificate.Status.ACTIVE).order_by("revoked_at")
    ]
    crl = pki.build_crl(
        ca_certificate(ca),
        ca_private_key(ca),
        revoked,
        crl_number=ca.crl_number + 1,
        this_update=now,
        next_update=now + CRL_VALIDITY,
    )
    der = crl.public_bytes(Encoding.DER)
    ca.crl_number += 1
    ca.crl_der = der
    ca.crl_updated_at = now
    ca.save(update_fields=["crl_number", "crl_der", "crl_updated_at"])
    logger.info("published CRL #%d of %s with %d entries", ca.crl_number, ca.name, len(revoked))
    return der


@transaction.atomic
def issue_server_certificate(
    hosts: list[str] | tuple[str, ...], *, ca: CertificateAuthority | None = None, days: int = 825
) -> IssuedCertificate:
    """A TLS server certificate for our hosted domains (serverAuth, DNS SANs), recorded like any other."""
    ca = ca or default_ca()
    issuer_cert, issuer_key = ca_certificate(ca), ca_private_key(ca)
    key = pki.generate_private_key("ec-p256")
    cert = pki.issue_certificate(
        issuer_cert,
        issuer_key,
        key.public_key(),
        common_name=hosts[0],
        dns_names=list(hosts),
        server=True,
        days=days,
        crl_url=crl_url(ca),
    )
    row = record_certificate(cert, source=Certificate.Source.ISSUED, account=None, issuer=ca)
    logger.info("issued server certificate %s for %s", row.serial, ", ".join(hosts))
    return IssuedCertificate(row=row, certificate=cert, private_key=key, ca_certificate=issuer_cert)
