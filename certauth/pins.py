"""Self-signed certificates pinned to accounts: the rule of ``tls.verify_mode = "selfsigned_peer"``.

MongooseIM's ``selfsigned_peer`` accepts any self-signed certificate as whoever its xmppAddr names, so with
``auth.methods = ["pki"]`` anyone can be anyone. Here a self-signed certificate logs in only as the account
it is pinned to (``SelfSignedPin``):

- an admin pins certificates to an account (upload, or paste the SHA-256 fingerprint); an account may hold
  several pins, one per device;
- an account that holds no pin is pinned at its first self-signed login (trust on first use), and the login
  says so in its ``AuthEvent``; a unique constraint (one first-login pin per account) makes two first logins
  at once with different certificates end with exactly one pin, the other refused;
- any other self-signed certificate for a pinned account is refused, and so is a pinned certificate that
  names another account; clearing an account's pins lets the next self-signed login pin again.

Certificates that chain to a trusted CA never reach this module (``certauth.authenticator`` asks only for
the self-signed path), and a pin never overrides revocation: the ``Certificate`` status is checked first.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from cryptography import x509
from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.models import Account
from certauth import pki
from certauth.models import SelfSignedPin
from certauth.pki import CertFacts
from certauth.verify import is_self_signed
from transport.xmpp.jid import InvalidJid, parse_bare_jid

logger = logging.getLogger(__name__)

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
REASON_FIRST_USE = "self-signed certificate pinned to {jid} at first login (trust on first use)"


class PinError(ValueError):
    """A pin the admin asked for cannot be made; the message is for the operator."""


def normalise_fingerprint(text: str) -> str:
    """``AB:CD:…`` or ``abcd…`` (64 hexadecimal digits) → lower hex without separators; ValueError else."""
    digits = re.sub(r"[\s:]", "", text).lower()
    if not _FINGERPRINT.fullmatch(digits):
        raise PinError("a SHA-256 fingerprint is 64 hexadecimal digits (colons and spaces are ignored)")
    return digits


def _short(fingerprint: str) -> str:
    return f"SHA-256 {fingerprint[:16]}…"


@dataclass(frozen=True)
class PinCheck:
    """``pinned``: this certificate is pinned to this account; else ``refusal`` says why not, or both are
    empty: the account holds no pin (the certificate may be pinned at first use)."""

    pinned: bool = False
    refusal: str | None = None


def check_pin(jid: str, fingerprint: str) -> PinCheck:
    """Whether the self-signed certificate ``fingerprint`` may log in as the bare normalised ``jid``."""
    local, _, domain = jid.partition("@")
    rows = list(
        SelfSignedPin.objects.filter(
            Q(fingerprint_sha256=fingerprint) | Q(account__localpart=local, account__domain__name=domain)
        ).values_list("fingerprint_sha256", "account__localpart", "account__domain__name")
    )
    for pinned_fingerprint, pinned_local, pinned_domain in rows:
        if pinned_fingerprint == fingerprint:
            owner = f"{pinned_local}@{pinned_domain}"
            if owner == jid:
                return PinCheck(pinned=True)
            return PinCheck(
                refusal=f"self-signed certificate is pinned to another account ({owner}), not {jid}"
            )
    if rows:
        return PinCheck(
            refusal=(
                f"self-signed certificate {_short(fingerprint)} is not pinned to {jid}, which holds "
                f"{len(rows)} other pinned certificate(s); an admin can pin it or clear the account's pins"
            )
        )
    return PinCheck()


def pin_first_use(jid: str, facts: CertFacts, *, peer: str, transport: str) -> str | None:
    """Trust on first use: pin the certificate of ``facts`` to the account of ``jid`` if it holds no pin yet.

    Returns None when the certificate is pinned to that account now (by this call or a simultaneous login
    with the same certificate), else the refusal.
    """
    fingerprint = facts.fingerprint_sha256
    try:
        account = Account.objects.by_jid(jid)
    except Account.DoesNotExist:
        return f"self-signed certificate cannot be pinned: {jid} has no local account"
    if not _insert_first_use_pin(account, facts, peer=peer, transport=transport):
        check = check_pin(jid, fingerprint)  # another login or an admin pinned first: decide from what won
        if check.pinned:
            return None
        return check.refusal or f"self-signed certificate could not be pinned to {jid}"
    logger.info(
        "self-signed certificate %s pinned to %s at its first login from %s via %s (trust on first use)",
        _short(fingerprint),
        jid,
        peer,
        transport,
    )
    return None


def _insert_first_use_pin(account: Account, facts: CertFacts, *, peer: str, transport: str) -> bool:
    """False when the account holds a pin by now, or the insert broke a constraint (a simultaneous first
    login of another certificate for this account, or of this certificate for another account)."""
    try:
        with transaction.atomic():
            if SelfSignedPin.objects.filter(account=account).exists():
                return False
            SelfSignedPin.objects.create(
                account=account,
                fingerprint_sha256=facts.fingerprint_sha256,
                origin=SelfSignedPin.Origin.FIRST_LOGIN,
                subject=facts.subject[:1000],
                peer=peer[:100],
                transport=transport[:16],
            )
    except IntegrityError:
        return False
    return True


def _named_jids(xmpp_addrs: tuple[str, ...] | list[str]) -> set[str]:
    named = set()
    for text in xmpp_addrs:
        try:
            named.add(parse_bare_jid(text).bare)
        except InvalidJid:
            continue
    return named


def pin_for_account(
    account: Account,
    *,
    certificate: x509.Certificate | None = None,
    fingerprint: str | None = None,
    origin: str = SelfSignedPin.Origin.ADMIN,
) -> SelfSignedPin:
    """A pin by the admin (or by the user, XEP-0257): ``certificate`` (must be self-signed) or its SHA-256
    ``fingerprint``; PinError else."""
    subject = ""
    if certificate is not None:
        if not is_self_signed(certificate):
            raise PinError(
                "not a self-signed certificate: pins apply only to self-signed logins "
                "(a CA-issued certificate is checked against its CA)"
            )
        facts = pki.cert_facts(certificate)
        named = _named_jids(facts.xmpp_addrs)
        if facts.xmpp_addrs and account.jid not in named:
            # It could never log in as this account: the identity rules take the JID from its xmppAddr.
            raise PinError(
                f"the certificate's xmppAddr names {', '.join(facts.xmpp_addrs)}, not {account.jid}"
            )
        fingerprint = facts.fingerprint_sha256
        subject = facts.subject
    if fingerprint is None:
        raise PinError("give a certificate or its SHA-256 fingerprint")
    fingerprint = normalise_fingerprint(fingerprint)
    owner = (
        SelfSignedPin.objects.filter(fingerprint_sha256=fingerprint).select_related("account__domain").first()
    )
    if owner is not None:
        where = "this account" if owner.account_id == account.pk else f"another account ({owner.account.jid})"
        raise PinError(f"this certificate is already pinned to {where}")
    try:
        with transaction.atomic():
            pin = SelfSignedPin.objects.create(
                account=account,
                fingerprint_sha256=fingerprint,
                origin=origin,
                subject=subject,
            )
    except IntegrityError as exc:
        raise PinError("this certificate was pinned meanwhile") from exc
    by = "by the user" if origin == SelfSignedPin.Origin.USER else "in the admin"
    logger.info("self-signed certificate %s pinned to %s %s", _short(fingerprint), account.jid, by)
    return pin


def clear_pins(account: Account) -> int:
    """Remove every pin of ``account``; its next self-signed login pins again. Returns how many."""
    count, _ = SelfSignedPin.objects.filter(account=account).delete()
    logger.info("cleared %d self-signed certificate pin(s) of %s", count, account.jid)
    return count
