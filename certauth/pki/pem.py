"""Loading and writing certificates and keys in PEM (RFC 7468) and DER."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .keys import PrivateKey

_PEM_MARK = b"-----BEGIN"


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle (RFC 7468 §5), or the one certificate of DER data."""
    data = bytes(data)
    if _PEM_MARK in data:
        return x509.load_pem_x509_certificates(data)  # ValueError when there is none
    return [x509.load_der_x509_certificate(data)]


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
