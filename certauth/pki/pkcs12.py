"""PKCS#12 bundles handed to users: their key, certificate and our CA.

Spec: RFC 7292 (PKCS#12), RFC 8018 §6.2 (PBES2). By default PBES2 with AES-256-CBC and a SHA-256 MAC, what
OpenSSL 3 writes and current Android, Windows and Linux clients import. ``legacy=True`` writes 3DES with a
SHA-1 MAC (``openssl pkcs12 -legacy``) for clients that refuse PBES2, notably older macOS keychains; it is
weak against an offline attack on the password and logged as such.

The key derivation runs ``KDF_ROUNDS`` PBKDF2 iterations (OWASP's 2023 figure for PBKDF2-HMAC-SHA256 is
600,000): the bundle leaves our hands, so its password is the only thing between a stolen file and the key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from .keys import PrivateKey

logger = logging.getLogger(__name__)

KDF_ROUNDS = 600_000
MIN_PASSWORD_LENGTH = 10  # for bundles we hand out (admin form and ``pki issue``)


def export_pkcs12(
    cert: x509.Certificate,
    key: PrivateKey,
    *,
    ca_chain: Sequence[x509.Certificate] = (),
    password: bytes,
    friendly_name: bytes | None = None,
    legacy: bool = False,
) -> bytes:
    """A password-protected PKCS#12 of ``key``, ``cert`` and ``ca_chain``; ValueError on an empty password."""
    if not password:
        raise ValueError("a PKCS#12 export needs a non-empty password")
    if legacy:
        logger.warning("writing a legacy PKCS#12 (3DES, SHA-1 MAC): only for clients that refuse AES")
    algorithm, mac = (
        (pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC, hashes.SHA1())
        if legacy
        else (pkcs12.PBES.PBESv2SHA256AndAES256CBC, hashes.SHA256())
    )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(algorithm)
        .hmac_hash(mac)
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(friendly_name, key, cert, list(ca_chain) or None, encryption)


def load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[PrivateKey | None, x509.Certificate | None, list[x509.Certificate]]:
    """Key, certificate and additional certificates of a PKCS#12 (thin wrapper, mostly for tests)."""
    key, cert, additional = pkcs12.load_key_and_certificates(data, password)
    return key, cert, list(additional)  # type: ignore[return-value]
