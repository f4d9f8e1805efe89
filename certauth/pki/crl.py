"""Certificate revocation lists: building ours, reading and checking others'.

Spec: RFC 5280 §5 (CRL profile: §5.2.1 AKI, §5.2.3 CRL number, §5.3.1 reason code) and §4.2.1.13 (CRL
distribution points in certificates).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from .keys import PrivateKey, signature_hash

_PEM_MARK = b"-----BEGIN"


@dataclass
class RevokedEntry:
    """One revoked serial; ``reason`` is an ``x509.ReasonFlags`` name (``"key_compromise"``) or None."""

    serial: int
    revoked_at: dt.datetime
    reason: str | None = None


def _reason_flag(reason: str) -> x509.ReasonFlags:
    try:
        return x509.ReasonFlags[reason]
    except KeyError:
        accepted = ", ".join(flag.name for flag in x509.ReasonFlags)
        raise ValueError(f"unknown revocation reason {reason!r}; accepted values: {accepted}") from None


def build_crl(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    revoked: Iterable[RevokedEntry],
    *,
    crl_number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """A CRL of ``revoked`` signed by our CA."""
    revoked_certificates = []
    for entry in revoked:
        revoked_builder = (
            x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        )
        # RFC 5280 §5.3.1: the reason code is omitted rather than sent as unspecified.
        if entry.reason is not None and entry.reason != "unspecified":
            revoked_builder = revoked_builder.add_extension(
                x509.CRLReason(_reason_flag(entry.reason)), critical=False
            )
        revoked_certificates.append(revoked_builder.build())
    # The list goes in whole: add_revoked_certificate copies it each time (100,000 entries took minutes).
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked_certificates)
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)  # RFC 5280 §5.2.3
    )
    try:  # RFC 5280 §5.2.1: AKI = the CA's SKI
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    builder = builder.add_extension(aki, critical=False)
    return builder.sign(ca_key, signature_hash(ca_key))


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER."""
    data = bytes(data)
    if _PEM_MARK in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def crl_signed_by(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate) -> bool:
    """True when ``crl`` names ``ca_cert``'s subject as issuer and is signed by the CA's key."""
    if crl.issuer != ca_cert.subject:
        return False
    try:
        return crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a key type that cannot sign CRLs
        return False


def crl_number_of(crl: x509.CertificateRevocationList) -> int | None:
    """The CRL number (RFC 5280 §5.2.3), or None when absent."""
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def revoked_entries(crl: x509.CertificateRevocationList) -> list[RevokedEntry]:
    """The revoked serials of ``crl`` with their date and reason name (None when no reason code)."""
    entries: list[RevokedEntry] = []
    for revoked in crl:
        try:
            reason: str | None = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            reason = None
        entries.append(RevokedEntry(revoked.serial_number, revoked.revocation_date_utc, reason))
    return entries


def crl_distribution_urls(cert: x509.Certificate) -> list[str]:
    """The http(s) full-name URIs of the certificate's CRL distribution points (RFC 5280 §4.2.1.13)."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls: list[str] = []
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
                ("http://", "https://")
            ):
                urls.append(name.value)
    return urls
