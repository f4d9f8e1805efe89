"""xmppAddr: the SAN otherName that carries a JID in a certificate.

Spec: RFC 6120 §13.7.1.4 (id-on-xmppAddr ::= UTF8String), DER per X.690 §8.1 and §10.1. Anything else found
under that OID is ignored and logged with the reason, as XEP-0178 §3 expects of the server.
"""

from __future__ import annotations

import logging

from cryptography import x509

from .oids import XMPPADDR_OID

logger = logging.getLogger(__name__)

_UTF8STRING_TAG = 0x0C  # X.690 / X.680 §8.4: universal tag 12


class DerError(ValueError):
    """The bytes are not a DER-encoded UTF8String."""


def encode_utf8string(value: str) -> bytes:
    """DER TLV of a UTF8String (X.690 §8.1.3: short length form below 128, else minimal long form)."""
    content = value.encode("utf-8")
    length = len(content)
    if length < 0x80:
        header = bytes([_UTF8STRING_TAG, length])
    else:
        octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([_UTF8STRING_TAG, 0x80 | len(octets)]) + octets
    return header + content


def decode_utf8string(der: bytes) -> str:
    """The value of a DER UTF8String TLV; :class:`DerError` naming the problem otherwise."""
    if len(der) < 2:
        raise DerError("truncated: no tag and length")
    if der[0] != _UTF8STRING_TAG:
        raise DerError(f"ASN.1 tag 0x{der[0]:02x} is not UTF8String (0x0c)")
    first = der[1]
    if first < 0x80:
        length, offset = first, 2
    elif first == 0x80:
        raise DerError("indefinite length is not DER")  # X.690 §10.1
    else:
        count = first & 0x7F
        if count > 4 or len(der) < 2 + count:
            raise DerError("truncated or oversized length")
        octets = der[2 : 2 + count]
        length, offset = int.from_bytes(octets, "big"), 2 + count
        if octets[0] == 0 or length < 0x80:
            raise DerError("length is not in minimal form")  # X.690 §10.1
    if len(der) != offset + length:
        raise DerError(f"length {length} does not match the {len(der) - offset} content bytes")
    try:
        return der[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DerError(f"content is not valid UTF-8: {exc.reason}") from None


def xmppaddr_other_name(jid: str) -> x509.OtherName:
    """The SAN entry asserting ``jid`` (RFC 6120 §13.7.1.4)."""
    return x509.OtherName(XMPPADDR_OID, encode_utf8string(jid))


def xmppaddrs_of(cert: x509.Certificate) -> list[str]:
    """The JIDs a certificate asserts as xmppAddr, in SAN order; malformed entries are logged and skipped."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        logger.warning("ignoring unparsable extensions of certificate serial %x: %s", cert.serial_number, exc)
        return []
    return xmppaddrs_in(san, cert.serial_number)


def xmppaddrs_in(san: x509.SubjectAlternativeName, serial: int) -> list[str]:
    """The JIDs the subjectAltName ``san`` of the certificate numbered ``serial`` asserts as xmppAddr, in
    order; malformed entries are logged and skipped."""
    jids: list[str] = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != XMPPADDR_OID:
            continue
        try:
            jids.append(decode_utf8string(other.value))
        except DerError as exc:
            logger.warning(
                "ignoring xmppAddr in certificate serial %x: %s (RFC 6120 §13.7.1.4 requires a UTF8String)",
                serial,
                exc,
            )
    return jids


def xmppaddr_entries_in(san: x509.SubjectAlternativeName) -> int:
    """How many otherNames of the subjectAltName ``san`` carry the xmppAddr OID, well-formed or not (RFC 6120
    §13.7.1.4).

    A certificate with a malformed xmppAddr still claims one: ``certauth.identity`` must not read its CN
    instead (DESIGN §4, "CN only without xmppAddr").
    """
    return sum(1 for other in san.get_values_for_type(x509.OtherName) if other.type_id == XMPPADDR_OID)
