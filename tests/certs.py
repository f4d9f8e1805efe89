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
) -> Issued:
    """A client certificate issued by ``ca``, valid from 5 minutes ago for 30 days unless told otherwise.

    ``ekus=None`` gives the default (clientAuth); ``ekus=[]`` omits the EKU extension. ``signing_key`` signs
    with another key than the CA's (a forged certificate whose signature does not verify).
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
