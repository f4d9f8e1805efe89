"""Loading and writing certificates and keys in PEM (RFC 7468) and DER."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .keys import PrivateKey

_PEM_MARK = b"-----BEGIN"


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle (RFC 7468 §5), or the one certificate of DER data; ValueError if not.

    cryptography raises ``InvalidVersion``, not a ValueError, for a version other than v1..v3 (RFC 5280
    §4.1.2.1): it is turned into one, so callers refuse such data as unparsable.
    """
    data = bytes(data)
    try:
        if _PEM_MARK in data:
            return x509.load_pem_x509_certificates(data)  # ValueError when there is none
        return [x509.load_der_x509_certificate(data)]
    except x509.InvalidVersion as exc:
        raise ValueError(f"not a certificate: {exc}") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """Exactly one certificate, PEM or DER; ValueError for none or several."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise ValueError(f"expected exactly one certificate, found {len(certs)}")
    return certs[0]


def certificate_to_pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """A private key from PEM or DER (PKCS#8, PKCS#1 or SEC1), decrypted with ``password`` if needed."""
    data = bytes(data)
    if _PEM_MARK in data:
        key = serialization.load_pem_private_key(data, password=password)
    else:
        key = serialization.load_der_private_key(data, password=password)
    return key  # type: ignore[return-value]
