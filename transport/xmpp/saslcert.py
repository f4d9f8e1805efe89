"""XEP-0257 (Client Certificate Management for SASL EXTERNAL), the wire side: requests parsed into typed
values, answers built as elements. Pure: the decisions are ``certauth.selfservice``'s.

Requests (§2): ``<items/>`` (get: list), ``<append>`` with ``<name/>``, ``<x509cert/>`` (base64 DER) and an
optional ``<no-cert-management/>`` (set: add), ``<disable>``/``<revoke>`` with ``<name/>`` (set). Ours, beside
``<x509cert/>``: ``<csr xmlns='urn:xmppauth:saslcert-csr:0'>`` (base64 DER PKCS#10), which our CA signs when
the domain allows it; the answer then carries the issued certificate as an ``<item/>``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement

from . import namespaces as ns

ITEMS = ns.qname(ns.SASLCERT, "items")
APPEND = ns.qname(ns.SASLCERT, "append")
DISABLE = ns.qname(ns.SASLCERT, "disable")
REVOKE = ns.qname(ns.SASLCERT, "revoke")
NAME = ns.qname(ns.SASLCERT, "name")
X509CERT = ns.qname(ns.SASLCERT, "x509cert")
NO_CERT_MANAGEMENT = ns.qname(ns.SASLCERT, "no-cert-management")
ITEM = ns.qname(ns.SASLCERT, "item")
USERS = ns.qname(ns.SASLCERT, "users")
RESOURCE = ns.qname(ns.SASLCERT, "resource")
CSR = ns.qname(ns.SASLCERT_CSR, "csr")
MAX_NAME = 200  # our storage limit for the user's name of a certificate


class SaslCertRequestError(ValueError):
    """A request we cannot read; ``condition`` is the stanza error (RFC 6120 §8.3.3)."""

    condition = "bad-request"


@dataclass(frozen=True)
class ListCertificates:
    pass


@dataclass(frozen=True)
class AppendCertificate:
    name: str
    certificate_der: bytes | None  # exactly one of certificate_der and csr_der
    csr_der: bytes | None
    no_cert_management: bool


@dataclass(frozen=True)
class DisableCertificate:
    name: str


@dataclass(frozen=True)
class RevokeCertificate:
    name: str


SaslCertRequest = ListCertificates | AppendCertificate | DisableCertificate | RevokeCertificate


@dataclass(frozen=True)
class CertificateItem:
    name: str
    certificate_der: bytes
    resources: Sequence[str] = ()


def is_request(payload: Element) -> bool:
    return payload.tag.startswith("{" + ns.SASLCERT + "}")


def parse_request(iq_type: str | None, payload: Element) -> SaslCertRequest:
    """The request in ``payload`` (the IQ's only child); SaslCertRequestError when malformed."""
    if payload.tag == ITEMS and iq_type == "get":
        return ListCertificates()
    if iq_type != "set" or payload.tag not in (APPEND, DISABLE, REVOKE):
        raise SaslCertRequestError(f"not a XEP-0257 request: {payload.tag} in an IQ of type {iq_type}")
    name = _name(payload)
    if payload.tag == DISABLE:
        return DisableCertificate(name)
    if payload.tag == REVOKE:
        return RevokeCertificate(name)
    certificate, csr = payload.find(X509CERT), payload.find(CSR)
    if (certificate is None) == (csr is None):
        raise SaslCertRequestError("append needs one <x509cert/> (or one <csr/>)")
    return AppendCertificate(
        name,
        _base64(certificate, "x509cert") if certificate is not None else None,
        _base64(csr, "csr") if csr is not None else None,
        payload.find(NO_CERT_MANAGEMENT) is not None,
    )


def items_element(items: Sequence[CertificateItem]) -> Element:
    """§2.2: every certificate with its name, and the resources logged in with it now."""
    root = Element(ITEMS)
    for item in items:
        root.append(item_element(item))
    return root


def item_element(item: CertificateItem) -> Element:
    element = Element(ITEM)
    SubElement(element, NAME).text = item.name
    SubElement(element, X509CERT).text = base64.b64encode(item.certificate_der).decode("ascii")
    if item.resources:
        users = SubElement(element, USERS)
        for resource in item.resources:
            SubElement(users, RESOURCE).text = resource
    return element


def _name(payload: Element) -> str:
    element = payload.find(NAME)
    name = (element.text or "").strip() if element is not None else ""
    if not name:
        raise SaslCertRequestError("a <name/> is required (XEP-0257 §2.1)")
    if len(name) > MAX_NAME:
        raise SaslCertRequestError(f"a name has at most {MAX_NAME} characters")
    return name


def _base64(element: Element, what: str) -> bytes:
    text = "".join((element.text or "").split())
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise SaslCertRequestError(f"<{what}/> is not base64: {exc}") from exc
    if not data:
        raise SaslCertRequestError(f"<{what}/> is empty")
    return data
