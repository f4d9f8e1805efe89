"""Certificate facts: the plain values the identity rules, the admin and the DB need from a certificate.

Specs: RFC 5280 §4.1 (fields), RFC 4514 (string form of names), RFC 6120 §13.7.1.4 (xmppAddr).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from .xmppaddr import xmppaddr_entries_in, xmppaddrs_in


@dataclass(frozen=True)
class CertFacts:
    """What we know of one certificate, without the certificate object."""

    fingerprint_sha256: str  # lower hex, no colons
    serial: str  # lower hex, no leading zeros: format(serial_number, "x")
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    common_name: str | None  # the last CN of the subject, if any
    xmpp_addrs: tuple[str, ...]
    dns_names: tuple[str, ...]
    not_before: datetime  # aware, UTC
    not_after: datetime  # aware, UTC
    is_ca: bool
    extended_key_usages: tuple[str, ...] | None  # dotted OIDs; None when there is no EKU extension
    is_self_signed: bool  # subject == issuer (self-issued, RFC 5280 §3.2); the signature is not checked
    xmpp_addr_entries: int = 0  # SAN otherNames with the xmppAddr OID, malformed ones included


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower hex without colons."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[-1].value  # the most specific CN, as TLS libraries do
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def cert_facts(cert: x509.Certificate, fingerprint: str | None = None) -> CertFacts:
    """Extract :class:`CertFacts` from ``cert``; ``ValueError`` when its names or extensions cannot be parsed.
    ``fingerprint``: ``fingerprint_sha256(cert)`` when the caller computed it already.

    cryptography parses names and extensions on first use and raises ``DuplicateExtension`` (RFC 5280 §4.2:
    "MUST NOT include more than one instance of a particular extension"), ``UnsupportedGeneralNameType``, or
    ``TypeError`` (a BIT STRING attribute under another OID than x500UniqueIdentifier), which are not
    ``ValueError``: they are turned into one here, so callers refuse such a certificate with a reason.
    """
    for part in ("subject", "issuer", "extensions"):  # parsed here, once, so every failure has one type
        try:
            getattr(cert, part)
        except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
            raise ValueError(f"certificate {part} cannot be parsed: {exc}") from None
    # One pass over the extensions, by type: each type read below occurs at most once (a duplicate was refused
    # above; only UnrecognizedExtension may repeat, and it is not read).
    values = {type(extension.value): extension.value for extension in cert.extensions}
    basic = values.get(x509.BasicConstraints)
    eku = values.get(x509.ExtendedKeyUsage)
    san = values.get(x509.SubjectAlternativeName)
    dns_names: tuple[str, ...] = ()
    xmpp_addrs: tuple[str, ...] = ()
    xmpp_addr_entries = 0
    if isinstance(san, x509.SubjectAlternativeName):
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        xmpp_addrs = tuple(xmppaddrs_in(san, cert.serial_number))
        xmpp_addr_entries = xmppaddr_entries_in(san)
    return CertFacts(
        fingerprint_sha256=fingerprint or fingerprint_sha256(cert),
        serial=format(cert.serial_number, "x"),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=_common_name(cert.subject),
        xmpp_addrs=xmpp_addrs,
        dns_names=dns_names,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=isinstance(basic, x509.BasicConstraints) and basic.ca,
        extended_key_usages=(
            tuple(oid.dotted_string for oid in eku) if isinstance(eku, x509.ExtendedKeyUsage) else None
        ),
        is_self_signed=cert.subject == cert.issuer,
        xmpp_addr_entries=xmpp_addr_entries,
    )
