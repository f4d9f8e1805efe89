"""Private keys: generation, PEM export and encryption at rest of our CAs' keys.

The at-rest format is ours (no spec): ``b"XAK1" || salt(16) || nonce(12) || AES-256-GCM(PKCS#8 DER)``, the AES
key derived from the secret with scrypt (RFC 7914) and the salt; the 4-byte header is also the GCM associated
data, so a blob cannot be relabelled as another version. It is binary and never looks like PEM.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PrivateKey = CertificateIssuerPrivateKeyTypes

KEY_TYPES: tuple[str, ...] = ("ec-p256", "rsa-2048", "rsa-3072")

_MAGIC = b"XAK1"
_SALT_LEN = 16
_NONCE_LEN = 12
# scrypt cost (RFC 7914 §2): n=2**15, r=8, p=1 uses 32 MiB and a few tens of ms; keys are decrypted rarely.
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1


class KeyDecryptionError(ValueError):
    """An encrypted key blob could not be decrypted: wrong secret, corrupted or not our format."""


def generate_private_key(key_type: str) -> PrivateKey:
    """Generate a new private key of one of ``KEY_TYPES``."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unknown key type {key_type!r}; accepted values: {', '.join(KEY_TYPES)}")


def _derive(secret: str, salt: bytes) -> bytes:
    if not secret:
        raise ValueError("the key encryption secret must not be empty")
    kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(secret.encode("utf-8"))


def encrypt_private_key(key: PrivateKey, secret: str) -> bytes:
    """Encrypt ``key`` (PKCS#8 DER) with a key derived from ``secret``; returns the versioned binary blob."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt = os.urandom(_SALT_LEN)
    nonce = os.urandom(_NONCE_LEN)
    ciphertext = AESGCM(_derive(secret, salt)).encrypt(nonce, der, _MAGIC)
    return _MAGIC + salt + nonce + ciphertext


def decrypt_private_key(blob: bytes, secret: str) -> PrivateKey:
    """Decrypt a blob made by :func:`encrypt_private_key`; :class:`KeyDecryptionError` if it cannot."""
    blob = bytes(blob)  # a Django BinaryField may hand us a memoryview
    header = len(_MAGIC) + _SALT_LEN + _NONCE_LEN
    if not blob.startswith(_MAGIC) or len(blob) <= header:
        raise KeyDecryptionError("not an encrypted key blob of format XAK1")
    salt = blob[len(_MAGIC) : len(_MAGIC) + _SALT_LEN]
    nonce = blob[len(_MAGIC) + _SALT_LEN : header]
    try:
        der = AESGCM(_derive(secret, salt)).decrypt(nonce, blob[header:], _MAGIC)
    except InvalidTag:
        raise KeyDecryptionError("wrong key encryption secret or corrupted key blob") from None
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyDecryptionError(f"unsupported key type in blob: {type(key).__name__}")
    return key


def signature_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The hash to sign with ``key``: SHA-256, or None for Ed25519/Ed448 which hash internally."""
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return hashes.SHA256()
    return None


def private_key_to_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM of ``key``, encrypted with ``password`` when given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
