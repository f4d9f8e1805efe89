"""Building certificates: our CA, the client (and server) certificates it issues, CSR signing.

Spec: RFC 5280 §4.1 and §4.2 (profile and extensions), RFC 6120 §13.7.1.4 (xmppAddr), XEP-0178 (client certs).

Subject decision: a certificate gets ``CN=<common_name>`` when a common name is given, else an *empty* subject
with a critical SAN (RFC 5280 §4.1.2.6, §4.2.1.6). We do not copy the first xmppAddr into the CN, so the
``common_name`` SASL EXTERNAL verifier never mistakes a JID for a localpart. A certificate without a CN and
without any name is refused (ValueError). CN-only certificates (no xmppAddr) carry no SAN at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from .keys import PrivateKey, signature_hash
from .oids import CLIENT_AUTH_OID, SERVER_AUTH_OID
from .xmppaddr import xmppaddr_other_name

# Client clocks run slow: backdate notBefore a little (a common CA practice).
BACKDATE = dt.timedelta(minutes=5)


def _validity(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    start = not_before if not_before is not None else now - BACKDATE
    end = not_after if not_after is not None else now + dt.timedelta(days=days)
    if end <= start:
        raise ValueError(f"notAfter {end.isoformat()} is not after notBefore {start.isoformat()}")
    return start, end


def _subject(common_name: str | None, organization: str | None = None) -> x509.Name:
    attrs: list[x509.NameAttribute] = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # RFC 5280 §4.2.1.1: the AKI equals the issuer's SKI.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def build_ca(
    common_name: str, key: PrivateKey, *, days: int = 3650, organization: str | None = None
) -> x509.Certificate:
    """A self-signed CA that may sign end-entity certificates and CRLs only (pathLen 0)."""
    name = _subject(common_name, organization)
    start, end = _validity(days, None, None)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        # RFC 5280 §4.2.1.9: CA true, critical; pathLen 0 = no intermediate below us.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # RFC 5280 §4.2.1.3: keyCertSign and cRLSign.
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(key, signature_hash(key))


def _end_entity_builder(
    issuer_name: x509.Name,
    public_key: CertificatePublicKeyTypes,
    *,
    xmpp_addrs: Sequence[str],
    common_name: str | None,
    dns_names: Sequence[str],
    server: bool,
    days: int,
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
    extended_key_usages: Sequence[x509.ObjectIdentifier] | None,
    serial: int | None,
) -> x509.CertificateBuilder:
    names: list[x509.GeneralName] = [xmppaddr_other_name(jid) for jid in xmpp_addrs]
    names += [x509.DNSName(d) for d in dns_names]
    if not common_name and not names:
        raise ValueError("a certificate needs a common name or at least one xmppAddr or DNS name")
    subject = _subject(common_name)
    start, end = _validity(days, not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # RFC 5280 §4.2.1.3: signing for TLS; RSA key exchange also needs keyEncipherment.
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    )
    if extended_key_usages is None:
        extended_key_usages = [SERVER_AUTH_OID] if server else [CLIENT_AUTH_OID]
    if extended_key_usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usages)), critical=False)
    if names:
        # RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty.
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
    return builder


def _crl_distribution_points(crl_url: str) -> x509.CRLDistributionPoints:
    # RFC 5280 §4.2.1.13: one distribution point with a full-name URI.
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None, crl_issuer=None
    )
    return x509.CRLDistributionPoints([point])


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: CertificatePublicKeyTypes,
    *,
    xmpp_addrs: Sequence[str] = (),
    common_name: str | None = None,
    days: int = 365,
    crl_url: str | None = None,
    dns_names: Sequence[str] = (),
    server: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extended_key_usages: Sequence[x509.ObjectIdentifier] | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """An end-entity certificate for ``public_key`` signed by our CA.

    EKU is clientAuth, or serverAuth when ``server``; ``extended_key_usages`` overrides it (empty = no EKU
    extension). ``not_before``/``not_after`` override the validity (``days`` from now otherwise).
    """
    builder = _end_entity_builder(
        ca_cert.subject,
        public_key,
        xmpp_addrs=xmpp_addrs,
        common_name=common_name,
        dns_names=dns_names,
        server=server,
        days=days,
        not_before=not_before,
        not_after=not_after,
        extended_key_usages=extended_key_usages,
        serial=serial,
    )
    builder = builder.add_extension(_authority_key_identifier(ca_cert), critical=False)
    if crl_url:
        builder = builder.add_extension(_crl_distribution_points(crl_url), critical=False)
    return builder.sign(ca_key, signature_hash(ca_key))


def sign_csr(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    csr: x509.CertificateSigningRequest,
    *,
    xmpp_addrs: Sequence[str],
    common_name: str | None = None,
    days: int = 365,
    crl_url: str | None = None,
) -> x509.Certificate:
    """Issue a client certificate for the key of ``csr``.

    The CSR proves possession of the key only (RFC 2986 §3): its subject and SAN are not trusted, the names
    come from the caller. ValueError if the CSR's signature does not verify.
    """
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature does not verify")
    return issue_certificate(
        ca_cert,
        ca_key,
        csr.public_key(),
        xmpp_addrs=xmpp_addrs,
        common_name=common_name,
        days=days,
        crl_url=crl_url,
    )


def build_self_signed_client(
    key: PrivateKey,
    *,
    xmpp_addrs: Sequence[str] = (),
    common_name: str | None = None,
    days: int = 365,
) -> x509.Certificate:
    """A self-signed (not CA) client certificate, as clients make for XEP-0178 self-signed logins."""
    public_key = key.public_key()
    builder = _end_entity_builder(
        _subject(common_name),
        public_key,
        xmpp_addrs=xmpp_addrs,
        common_name=common_name,
        dns_names=(),
        server=False,
        days=days,
        not_before=None,
        not_after=None,
        extended_key_usages=None,
        serial=None,
    )
    return builder.sign(key, signature_hash(key))
