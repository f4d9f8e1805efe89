"""XEP-0257: users list, add, disable and revoke their own certificates from their client.

The wire format is ``transport.xmpp.saslcert``; the IM router hands each request here with who asks
(:class:`Requester`). Decisions (issue 15 point 3):

- The domain's ``certificate_self_service`` switch (admin, default on) allows it at all; a client logged
  in with a certificate added with ``<no-cert-management/>`` may list, nothing else (§2.1).
- *Add* (§2.1): the certificate must name this account (an xmppAddr of it, or without xmppAddr a CN equal
  to the JID or localpart: what the identity rules could map to it), be valid now, and be new here. A
  self-signed one is registered and pinned to the account (it logs in under ``selfsigned_peer``, §3); one
  issued by a CA we hold as a row is registered to the account (the ``db`` method then accepts it); one
  from a CA we do not know is refused: trust is not widened by a user. With the domain's
  ``self_service_csr_signing`` switch, a CSR is signed by our default CA for the account's JID.
- *Disable* (§2.3) puts the certificate on hold (RFC 5280 certificateHold): no new login, the sessions
  already logged in with it stay (the XEP's move to a new certificate is made from the old one), and the
  admin can release it. *Revoke* (§2.4) revokes it for good (keyCompromise: the XEP's stolen device) and
  ends its sessions, as any revocation does.
- Every change, and every refusal, is an ``AuthEvent`` the admin sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.db import transaction
from django.utils import timezone

from accounts.models import Account
from certauth import pins, pki, services
from certauth.models import AuthEvent, Certificate, RevocationReason, SelfSignedPin
from certauth.verify import is_self_signed
from transport.xmpp.saslcert import (
    AppendCertificate,
    CertificateItem,
    DisableCertificate,
    ListCertificates,
    RevokeCertificate,
    SaslCertRequest,
)

logger = logging.getLogger(__name__)


class SelfServiceRefused(Exception):
    """A request refused; ``condition`` is the stanza error (RFC 6120 §8.3.3), the message says why."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition


@dataclass(frozen=True)
class Requester:
    """Who asks: the session's bare JID and resource, the certificate it logged in with (empty for a
    password login), and where from (for the auth event)."""

    jid: str
    resource: str = ""
    fingerprint: str = ""
    transport: str = ""
    peer: str = ""


def handle(requester: Requester, request: SaslCertRequest) -> list[CertificateItem] | CertificateItem | None:
    """Carry out ``request``: the list, the issued certificate (a signed CSR), or None. SelfServiceRefused."""
    try:
        account = Account.objects.select_related("domain").by_jid(requester.jid)
    except Account.DoesNotExist as exc:
        raise SelfServiceRefused("item-not-found", f"no account {requester.jid}") from exc
    try:
        if not account.domain.certificate_self_service:
            raise SelfServiceRefused(
                "not-allowed", f"certificate self-service is off for {account.domain.name} (admin setting)"
            )
        if isinstance(request, ListCertificates):
            return _list(account)
        _may_manage(requester)
        match request:
            case AppendCertificate(csr_der=bytes() as csr):
                return _sign_request(requester, account, request.name, csr, request.no_cert_management)
            case AppendCertificate(certificate_der=bytes() as der):
                _append(requester, account, request.name, der, request.no_cert_management)
            case DisableCertificate(name=name):
                _disable(requester, account, name)
            case RevokeCertificate(name=name):
                _revoke(requester, account, name)
        return None
    except SelfServiceRefused as refused:
        _event(requester, None, AuthEvent.Outcome.FAILURE, f"XEP-0257 refused: {refused}", refused.condition)
        raise


def _list(account: Account) -> list[CertificateItem]:
    rows = Certificate.objects.filter(account=account, status=Certificate.Status.ACTIVE).order_by(
        "created_at"
    )
    return [
        CertificateItem(
            row.label or f"certificate {row.serial}",
            pki.load_certificate(row.pem.encode()).public_bytes(Encoding.DER),
        )
        for row in rows
    ]


def _may_manage(requester: Requester) -> None:
    if not requester.fingerprint:
        return
    if Certificate.objects.filter(fingerprint_sha256=requester.fingerprint, no_cert_management=True).exists():
        raise SelfServiceRefused(
            "forbidden", "this session's certificate was added with no-cert-management (XEP-0257 §2.1)"
        )


def _names_account(facts: pki.CertFacts, account: Account) -> bool:
    if facts.xmpp_addrs:
        return any(addr.partition("/")[0].lower() == account.jid for addr in facts.xmpp_addrs)
    return (facts.common_name or "").lower() in (account.jid, account.localpart)


def _check_new(account: Account, name: str, fingerprint: str | None = None) -> None:
    if Certificate.objects.filter(account=account, label=name).exists():
        raise SelfServiceRefused("conflict", f"a certificate named {name!r} exists already (XEP-0257 §2.1)")
    if fingerprint and Certificate.objects.filter(fingerprint_sha256=fingerprint).exists():
        raise SelfServiceRefused("conflict", "this certificate is registered already")


@transaction.atomic
def _append(requester: Requester, account: Account, name: str, der: bytes, no_management: bool) -> None:
    try:
        cert = x509.load_der_x509_certificate(der)
        facts = pki.cert_facts(cert)
    except ValueError as exc:
        raise SelfServiceRefused("bad-request", f"not a DER X.509 certificate: {exc}") from exc
    _check_new(account, name, facts.fingerprint_sha256)
    now = timezone.now()
    if not facts.not_before <= now <= facts.not_after:
        raise SelfServiceRefused("not-acceptable", "the certificate is not valid now (XEP-0257 §3: expired)")
    if not _names_account(facts, account):
        named = ", ".join(facts.xmpp_addrs) or facts.common_name or "nobody"
        raise SelfServiceRefused("not-acceptable", f"the certificate names {named}, not {account.jid}")
    if is_self_signed(cert):
        row = services.record_certificate(cert, source=Certificate.Source.USER, account=account, issuer=None)
        try:
            pins.pin_for_account(account, certificate=cert, origin=SelfSignedPin.Origin.USER)
        except pins.PinError as exc:
            raise SelfServiceRefused("conflict", str(exc)) from exc
        what = "self-signed, pinned to the account"
    else:
        issuer = services.find_issuer(cert)
        if issuer is None or not issuer.trusted_for_client_auth:
            raise SelfServiceRefused(
                "not-acceptable",
                "issued by a CA this server does not trust: add a self-signed certificate, or ask for one "
                "from this server's CA",
            )
        row = services.record_certificate(
            cert, source=Certificate.Source.USER, account=account, issuer=issuer
        )
        what = f"issued by {issuer.name}"
    Certificate.objects.filter(pk=row.pk).update(label=name, no_cert_management=no_management)
    _event(requester, row, AuthEvent.Outcome.SUCCESS, f"XEP-0257: certificate {name!r} added ({what})")


def _sign_request(
    requester: Requester, account: Account, name: str, csr_der: bytes, no_management: bool
) -> CertificateItem:
    if not account.domain.self_service_csr_signing:
        raise SelfServiceRefused(
            "not-allowed", f"this server does not sign requests for {account.domain.name} (admin setting)"
        )
    _check_new(account, name)
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError as exc:
        raise SelfServiceRefused("bad-request", f"not a DER certificate signing request: {exc}") from exc
    try:
        with transaction.atomic():
            row = services.sign_csr_for_account(account, csr.public_bytes(Encoding.PEM))
            Certificate.objects.filter(pk=row.pk).update(label=name, no_cert_management=no_management)
    except services.PkiError as exc:
        raise SelfServiceRefused("not-acceptable", str(exc)) from exc
    _event(
        requester, row, AuthEvent.Outcome.SUCCESS, f"XEP-0257: request signed, certificate {name!r} issued"
    )
    der = pki.load_certificate(row.pem.encode()).public_bytes(Encoding.DER)
    return CertificateItem(name, der)


def _named(account: Account, name: str) -> Certificate:
    row = Certificate.objects.filter(account=account, label=name).first()
    if row is None:
        raise SelfServiceRefused("item-not-found", f"no certificate named {name!r}")
    return row


def _disable(requester: Requester, account: Account, name: str) -> None:
    row = _named(account, name)
    if row.status != Certificate.Status.ACTIVE:
        raise SelfServiceRefused(
            "not-acceptable", f"certificate {name!r} is {row.get_status_display()} already"
        )
    services.hold(row, end_sessions=False)
    _event(requester, row, AuthEvent.Outcome.SUCCESS, f"XEP-0257: certificate {name!r} disabled (on hold)")


def _revoke(requester: Requester, account: Account, name: str) -> None:
    row = _named(account, name)
    if row.status == Certificate.Status.REVOKED:
        raise SelfServiceRefused("not-acceptable", f"certificate {name!r} is revoked already")
    services.revoke(row, RevocationReason.KEY_COMPROMISE)
    SelfSignedPin.objects.filter(fingerprint_sha256=row.fingerprint_sha256).delete()
    _event(requester, row, AuthEvent.Outcome.SUCCESS, f"XEP-0257: certificate {name!r} revoked")


def _event(
    requester: Requester, row: Certificate | None, outcome: str, reason: str, condition: str = ""
) -> None:
    AuthEvent.objects.create(
        transport=requester.transport,
        peer=requester.peer,
        cert_fingerprint=row.fingerprint_sha256 if row is not None else "",
        cert_subject=row.subject[:1000] if row is not None else "",
        jid_requested=requester.jid,
        jid_granted=requester.jid if outcome == AuthEvent.Outcome.SUCCESS else "",
        outcome=outcome,
        condition=condition,
        reason=reason[:1000],
    )
    logger.info("XEP-0257 %s by %s/%s: %s", outcome, requester.jid, requester.resource, reason)
