"""Helpers for the CRL tests: CA rows of external CAs, CRLs signed as the test wants, sources."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.serialization import Encoding

from certauth import pki
from certauth.authenticator import CertificateAuthenticator
from certauth.models import CertificateAuthority, CrlSource
from tests.certs import Issued
from xmppauth.config import AuthConfig, Config, TlsOptions, XmppauthOptions

GRACE = timedelta(hours=1)


def add_ca_row(ca: Issued, name: str, *, trusted: bool = True) -> CertificateAuthority:
    """An imported (external) CA row, trusted for client authentication unless ``trusted`` is False."""
    facts = ca.facts
    return CertificateAuthority.objects.create(
        name=name,
        certificate_pem=ca.pem.decode(),
        subject=facts.subject,
        fingerprint_sha256=facts.fingerprint_sha256,
        not_before=facts.not_before,
        not_after=facts.not_after,
        trusted_for_client_auth=trusted,
    )


def make_crl(
    ca: Issued,
    serials: Iterable[int] = (),
    *,
    number: int = 1,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
    signing_key: pki.PrivateKey | None = None,
    reason: str | None = "key_compromise",
    pem: bool = False,
) -> bytes:
    """A CRL of ``ca`` (DER, or PEM), signed by ``signing_key`` (default: the CA's key)."""
    this_update = this_update or datetime.now(UTC) - timedelta(minutes=5)
    next_update = next_update or this_update + timedelta(days=7)
    entries = [pki.RevokedEntry(serial, datetime(2026, 9, 3, tzinfo=UTC), reason) for serial in serials]
    crl = pki.build_crl(
        ca.cert,
        signing_key or ca.key,
        entries,
        crl_number=number,
        this_update=this_update,
        next_update=next_update,
    )
    return crl.public_bytes(Encoding.PEM if pem else Encoding.DER)


def add_source(
    ca_row: CertificateAuthority,
    location: str,
    *,
    kind: str = CrlSource.Kind.OPERATOR_URL,
    **fields: object,
) -> CrlSource:
    return CrlSource.objects.create(ca=ca_row, kind=kind, location=location, **fields)


def options(**overrides: object) -> XmppauthOptions:
    values = {"crl_grace_seconds": int(GRACE.total_seconds()), **overrides}
    return XmppauthOptions(**values)


def authenticator(opts: XmppauthOptions | None = None) -> CertificateAuthenticator:
    config = Config(hosts=("localhost",), auth=AuthConfig(methods=("pki",)), options=opts or options())
    return CertificateAuthenticator(config, TlsOptions(verify_mode="peer"), "tcp", "127.0.0.1:40000")
