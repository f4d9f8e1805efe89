"""Test certificates, made fresh by every test run through ``certauth.pki`` (no key is ever committed).

Usage::

    from tests.certs import make_ca, make_client, make_self_signed

    ca = make_ca("Test CA")
    alice = make_client(ca, jids=["alice@localhost"])        # clientAuth EKU, valid now for 30 days
    bob = make_client(ca, common_name="bob", jids=())        # CN only, no SAN
    expired = make_client(ca, jids=["x@localhost"], not_after=days_from_now(-1))
    server_only = make_client(ca, jids=["x@localhost"], ekus=[SERVER_AUTH])
    no_eku = make_client(ca, jids=["x@localhost"], ekus=[])
    own = make_self_signed(jids=["carol@localhost"])

    alice.cert / alice.key / alice.pem / alice.der / alice.facts / alice.chain  (leaf first, up to the CA)

Every object is a :class:`Issued` (certificate + private key + the issuer it was made by). Keys are EC P-256:
fast enough to make dozens per test. ``NOW`` is not fixed: certificates are valid relative to the real clock,
so pass ``now=datetime.now(UTC)`` (or :func:`utcnow`) to code under test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certauth.pki import (
    CLIENT_AUTH_OID,
    SERVER_AUTH_OID,
    CertFacts,
    PrivateKey,
    build_ca,
    build_self_signed_client,
    cert_facts,
    generate_private_key,
    issue_certificate,
)
from certauth.pki.keys import signature_hash

CLIENT_AUTH = CLIENT_AUTH_OID
SERVER_AUTH = SERVER_AUTH_OID
KEY_TYPE = "ec-p256"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def days_from_now(days: float) -> dt.datetime:
    """An aware UTC moment ``days`` from now (negative: in the past)."""
    return utcnow() + dt.timedelta(days=days)


@dataclass(frozen=True)
class Issued:
    """A certificate, its private key, and the CA that issued it (``None`` for CAs and self-signed ones)."""

    cert: x509.Certificate
    key: PrivateKey
    issuer: Issued | None = None

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @cached_property
    def facts(self) -> CertFacts:
        return cert_facts(self.cert)

    @property
    def chain(self) -> list[x509.Certificate]:
        """This certificate and its issuers, leaf first (what a TLS client sends, root included)."""
        certs = [self.cert]
        issuer = self.issuer
        while issuer is not None:
            certs.append(issuer.cert)
            issuer = issuer.issuer
        return certs

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def make_ca(common_name: str = "xmppauth test CA", *, days: int = 365) -> Issued:
    """A self-signed root CA (basicConstraints CA, pathLen 0, keyCertSign + cRLSign)."""
    key = generate_private_key(KEY_TYPE)
    return Issued(build_ca(common_name, key, days=days), key)


def make_client(
    ca: Issued,
    *,
    jids: Sequence[str] = ("alice@localhost",),
    common_name: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    ekus: Sequence[x509.ObjectIdentifier] | None = None,
    serial: int | None = None,
    dns_names: Sequence[str] = (),
    signing_key: PrivateKey | None = None,
    crl_url: str | None = None,
) -> Issued:
    """A client certificate issued by ``ca``, valid from 5 minutes ago for 30 days unless told otherwise.

    ``ekus=None`` gives the default (clientAuth); ``ekus=[]`` omits the EKU extension. ``signing_key`` signs
    with another key than the CA's (a forged certificate whose signature does not verify). ``crl_url``: a
    CRL distribution point (RFC 5280 §4.2.1.13), which names ``ca``'s CRL.
    """
    key = generate_private_key(KEY_TYPE)
    if not_before is None and not_after is not None and not_after <= utcnow():
        not_before = not_after - dt.timedelta(days=30)
    cert = issue_certificate(
        ca.cert,
        signing_key or ca.key,
        key.public_key(),
        xmpp_addrs=tuple(jids),
        common_name=common_name,
        days=30,
        dns_names=tuple(dns_names),
        not_before=not_before,
        not_after=not_after,
        extended_key_usages=ekus,
        serial=serial,
        crl_url=crl_url,
    )
    return Issued(cert, key, ca)


def make_expired(ca: Issued, *, jids: Sequence[str] = ("alice@localhost",), days_ago: int = 1) -> Issued:
    """A client certificate whose notAfter was ``days_ago`` days ago."""
    end = days_from_now(-days_ago)
    return make_client(ca, jids=jids, not_before=end - dt.timedelta(days=30), not_after=end)


def make_not_yet_valid(
    ca: Issued, *, jids: Sequence[str] = ("alice@localhost",), days_ahead: int = 1
) -> Issued:
    """A client certificate whose notBefore is ``days_ahead`` days from now."""
    start = days_from_now(days_ahead)
    return make_client(ca, jids=jids, not_before=start, not_after=start + dt.timedelta(days=30))


def make_self_signed(
    *, jids: Sequence[str] = ("alice@localhost",), common_name: str | None = None, days: int = 30
) -> Issued:
    """A self-signed (not CA) client certificate, as a client makes for itself."""
    key = generate_private_key(KEY_TYPE)
    cert = build_self_signed_client(key, xmpp_addrs=tuple(jids), common_name=common_name, days=days)
    return Issued(cert, key)


def _ca_certificate(
    subject: str,
    key: PrivateKey,
    parent: Issued | None,
    *,
    path_length: int,
    crl_url: str | None,
    serial: int | None,
    days: int,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer_cert = parent.cert if parent is not None else None
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            signer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
        if signer_cert is not None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    )
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # keyCertSign, cRLSign
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert is not None else name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(utcnow() - dt.timedelta(minutes=5))
        .not_valid_after(utcnow() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )
    if crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    signer = parent.key if parent is not None else key
    return builder.sign(signer, signature_hash(signer))


def make_root(common_name: str = "xmppauth test root", *, path_length: int = 1, days: int = 365) -> Issued:
    """A self-signed root that may sign intermediates (pathLen ``path_length``), unlike :func:`make_ca`."""
    key = generate_private_key(KEY_TYPE)
    return Issued(
        _ca_certificate(
            common_name, key, None, path_length=path_length, crl_url=None, serial=None, days=days
        ),
        key,
    )


def make_intermediate(
    parent: Issued,
    common_name: str = "xmppauth test intermediate",
    *,
    crl_url: str | None = None,
    serial: int | None = None,
    days: int = 180,
) -> Issued:
    """An intermediate CA signed by ``parent`` (pathLen 0); ``crl_url`` is its distribution point, which
    names ``parent``'s CRL (RFC 5280 §4.2.1.13). Its clients' ``chain`` is leaf, intermediate, root."""
    key = generate_private_key(KEY_TYPE)
    cert = _ca_certificate(common_name, key, parent, path_length=0, crl_url=crl_url, serial=serial, days=days)
    return Issued(cert, key, parent)
