"""Auth method ``ldap``: PLAIN by a bind as the user's entry; EXTERNAL only for users in the directory.

MongooseIM's LDAP method (``doc/authentication-methods/ldap.md``): "SASL EXTERNAL: user credentials are
verified by performing an LDAP search with the user name" (the JID the identity rules chose must name an
entry); "SASL PLAIN: an LDAP search followed by a bind with the user name and password". Beyond
MongooseIM, with ``auth.ldap.match_certificate = true`` EXTERNAL also needs the client's certificate among
the entry's ``userCertificate;binary`` values (RFC 4523 §2.1), compared byte for byte.

The directory is read-only for us; the local account (roster, offline messages, sessions, the admin's
"disabled" switch) is created at the first login, as with ``pki``, and an account disabled here stays
refused whatever the directory says. A directory that cannot be reached fails closed with
``temporary-auth-failure`` (RFC 6120 §6.5.12), never a crash.
"""

from __future__ import annotations

import logging

from accounts.scram import Credentials, CredentialsUnavailable, PlainCheck
from certauth.authmethods import ExternalAttempt, MethodVerdict, ensure_local_account
from certauth.ldapdir import DirectoryUnavailable, directory_for
from transport.xmpp.errors import SASL_TEMPORARY_AUTH_FAILURE
from transport.xmpp.jid import InvalidJid, normalise_localpart
from xmppauth.config import LdapAuthOptions

logger = logging.getLogger(__name__)


def directory_external(options: LdapAuthOptions, attempt: ExternalAttempt) -> MethodVerdict:
    """EXTERNAL (``certauth.authmethods.LdapMethod``): the localpart of the JID the identity rules chose
    names exactly one entry under the base; with ``match_certificate`` that entry lists the certificate."""
    try:
        entry = directory_for(options).find_user(attempt.localpart, attempt.domain)
    except DirectoryUnavailable as exc:
        logger.warning("ldap auth method: %s", exc)
        reason = f"directory unavailable: {exc}"
        return MethodVerdict(False, reason, stop=True, condition=SASL_TEMPORARY_AUTH_FAILURE)
    if entry is None:
        return MethodVerdict(False, f"{attempt.localpart} is not in the directory")
    if options.match_certificate:
        listed = entry.values(options.certificate_attribute)
        if attempt.certificate_der not in listed:
            return MethodVerdict(
                False, f"certificate not among the {len(listed)} listed in the directory entry {entry.dn}"
            )
    account, _ = ensure_local_account(attempt.jid)
    if not account.active:
        return MethodVerdict(False, f"account {attempt.jid} is disabled", stop=True)
    listed_note = "; certificate listed in the entry" if options.match_certificate else ""
    return MethodVerdict(True, f"directory entry {entry.dn}{listed_note}")


def plain_check(options: LdapAuthOptions, domain: str) -> PlainCheck:
    """A PLAIN checker for ``accounts.scram.PlainServer``: (credentials, password matched).

    Raises CredentialsUnavailable when the directory cannot be reached (the exchange answers
    ``temporary-auth-failure``).
    """

    def check(username: str, password: str) -> tuple[Credentials, bool]:
        try:
            localpart = normalise_localpart(username)  # RFC 7622 §3.3, as the rdbms lookup does
        except InvalidJid:
            return Credentials(f"{username}@{domain}", {}, active=False, exists=False), False
        jid = f"{localpart}@{domain}"
        try:
            entry, bound = directory_for(options).check_password(localpart, domain, password)
        except DirectoryUnavailable as exc:
            logger.warning("ldap auth method: %s", exc)
            raise CredentialsUnavailable(f"directory unavailable: {exc}") from exc
        if entry is None:
            return Credentials(jid, {}, active=False, exists=False), False
        if not bound:
            return Credentials(jid, {}, active=True, exists=True), False
        account, _ = ensure_local_account(jid)
        return Credentials(jid, {}, active=account.active, exists=True), True

    return check
