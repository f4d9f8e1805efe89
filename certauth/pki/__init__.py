"""Pure PKI layer: keys, certificates, xmppAddr, certificate facts, CRLs and PKCS#12.

Imports cryptography only: no Django, no I/O. Specs: RFC 5280 (PKIX), RFC 6120 §13.7.1.4 (xmppAddr),
RFC 7292 (PKCS#12). Everything above this layer uses these names.
"""

from __future__ import annotations

from .build import build_ca, build_self_signed_client, issue_certificate, sign_csr
from .crl import (
    RevokedEntry,
    build_crl,
    crl_distribution_urls,
    crl_number_of,
    crl_signed_by,
    load_crl,
    revoked_entries,
)
from .facts import CertFacts, cert_facts, fingerprint_sha256
from .keys import (
    KEY_TYPES,
    KeyDecryptionError,
    PrivateKey,
    decrypt_private_key,
    encrypt_private_key,
    generate_private_key,
    private_key_to_pem,
)
from .oids import CLIENT_AUTH_OID, SERVER_AUTH_OID, XMPPADDR_OID
from .pem import certificate_to_pem, load_certificate, load_certificates, load_private_key
from .pkcs12 import MIN_PASSWORD_LENGTH, export_pkcs12, load_pkcs12
from .xmppaddr import DerError, decode_utf8string, encode_utf8string, xmppaddr_other_name, xmppaddrs_of

__all__ = [
    "CLIENT_AUTH_OID",
    "KEY_TYPES",
    "MIN_PASSWORD_LENGTH",
    "SERVER_AUTH_OID",
    "XMPPADDR_OID",
    "CertFacts",
    "DerError",
    "KeyDecryptionError",
    "PrivateKey",
    "RevokedEntry",
    "build_ca",
    "build_crl",
    "build_self_signed_client",
    "cert_facts",
    "certificate_to_pem",
    "crl_distribution_urls",
    "crl_number_of",
    "crl_signed_by",
    "decode_utf8string",
    "decrypt_private_key",
    "encode_utf8string",
    "encrypt_private_key",
    "export_pkcs12",
    "fingerprint_sha256",
    "generate_private_key",
    "issue_certificate",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "load_pkcs12",
    "load_private_key",
    "private_key_to_pem",
    "revoked_entries",
    "sign_csr",
    "xmppaddr_other_name",
    "xmppaddrs_of",
]
