"""Object identifiers the PKI layer uses, defined once.

Specs: RFC 6120 §13.7.1.4 (id-on-xmppAddr), RFC 5280 §4.2.1.12 (extended key usages).
"""

from __future__ import annotations

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

# RFC 6120 §13.7.1.4: id-on-xmppAddr, a SAN otherName holding a UTF8String JID.
XMPPADDR_OID = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
# RFC 5280 §4.2.1.12: TLS client and server authentication.
CLIENT_AUTH_OID = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH_OID = ExtendedKeyUsageOID.SERVER_AUTH

__all__ = ["CLIENT_AUTH_OID", "SERVER_AUTH_OID", "XMPPADDR_OID"]
