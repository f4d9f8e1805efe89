"""Account passwords: set them (admin, ``manage.py account``) and check them at login (method ``rdbms``).

Specs: RFC 5802 §3 (only SCRAM salted keys are stored, one row per configured hash: MongooseIM's
``[auth.password] format = "scram"``, ``hash``, ``scram_iterations``), RFC 6120 §6.4 (the SASL exchange the
c2s core drives), DESIGN §4 (password methods beside certificates). The protocol itself is the pure
``accounts.scram``; this module gives it the database and writes the ``AuthEvent`` of every attempt.

One :class:`PasswordExchange` per connection (``certauth.authenticator.CertificateAuthenticator`` holds it);
its calls use the database, so adapters run them in a thread like the EXTERNAL check.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from functools import partial

from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils.crypto import salted_hmac

from accounts.models import Account, Domain, PasswordCredential
from accounts.scram import (
    Credentials,
    CredentialsUnavailable,
    PlainCheck,
    PlainServer,
    ScramKeys,
    ScramServer,
    Step,
    check_password,
    derive_keys,
    made_up_credentials,
    preferred_keys,
    set_fake_secret,
)
from transport.xmpp.jid import InvalidJid, normalise_localpart
from xmppauth import fastsql
from xmppauth.config import AuthConfig, PasswordOptions

logger = logging.getLogger(__name__)


def set_password(account: Account, password: str, options: PasswordOptions, *, validate: bool = True) -> None:
    """Replace the account's keys with those of ``password``, one row per configured hash.

    ``validate``: run Django's password validators first (``ValidationError``). The password itself is
    neither stored nor logged.
    """
    if validate:
        validate_password(password)
    rows = [derive_keys(name, password, options.scram_iterations) for name in options.hashes]
    with transaction.atomic():
        PasswordCredential.objects.filter(account=account).delete()
        PasswordCredential.objects.bulk_create(
            PasswordCredential(
                account=account,
                hash=keys.hash,
                salt=keys.salt,
                iterations=keys.iterations,
                stored_key=keys.stored_key,
                server_key=keys.server_key,
            )
            for keys in rows
        )
    logger.info("password set for %s (SCRAM %s)", account.jid, ", ".join(options.hashes))


def has_password(account: Account) -> bool:
    return PasswordCredential.objects.filter(account=account).exists()


def lookup(username: str, domain: str, options: PasswordOptions) -> Credentials:
    """The keys of ``username@domain``; made-up keys (never matching) for a name with none (RFC 5802 §9)."""
    _use_deployment_secret()
    try:
        localpart = normalise_localpart(username)
    except InvalidJid:
        return made_up_credentials(f"{username}@{domain}", username, options.hashes, options.scram_iterations)
    jid = f"{localpart}@{domain}"
    rows = fastsql.fetch_all(fastsql.statement("passwords.lookup", _lookup_sql), [localpart, domain])
    keys = {
        name: ScramKeys(name, bytes(salt), iterations, bytes(stored), bytes(server))
        for _, _, name, salt, iterations, stored, server in rows
        if name is not None
    }
    if not keys:  # no such account, or one without a password
        return made_up_credentials(jid, localpart, options.hashes, options.scram_iterations)
    active = bool(rows[0][0]) and bool(rows[0][1])
    return Credentials(jid, keys, active=active, exists=True)


@functools.cache
def _use_deployment_secret() -> None:
    """Made-up salts from Django's secret key: the same in every process of the deployment."""
    set_fake_secret(salted_hmac("xmppauth.accounts.scram.made-up", "salts", algorithm="sha256").digest())


def _lookup_sql() -> str:
    """One statement per login (xmppauth.fastsql): the account's and domain's flags and its keys."""
    account, domain = partial(fastsql.column, Account), partial(fastsql.column, Domain)
    key = partial(fastsql.column, PasswordCredential)
    return (
        f"SELECT a.{account('active')}, d.{domain('enabled')}, p.{key('hash')}, p.{key('salt')},"
        f" p.{key('iterations')}, p.{key('stored_key')}, p.{key('server_key')}"
        f" FROM {fastsql.table(Account)} a"
        f" JOIN {fastsql.table(Domain)} d ON a.{account('domain')} = d.{domain('id')}"
        f" LEFT JOIN {fastsql.table(PasswordCredential)} p ON p.{key('account')} = a.{account('id')}"
        f" WHERE a.{account('localpart')} = %s AND d.{domain('name')} = %s"
    )


def _rdbms_plain(find: Callable[[str], Credentials]) -> PlainCheck:
    def check(username: str, password: str) -> tuple[Credentials, bool]:
        credentials = find(username)
        keys = preferred_keys(credentials.keys)
        # A made-up key for an unknown name still costs one PBKDF2: the answer takes as long either way.
        return credentials, keys is not None and check_password(keys, password) and credentials.exists

    return check


class PasswordExchange:
    """The password mechanisms of one connection, one exchange at a time (a new ``first`` step resets it)."""

    def __init__(
        self,
        auth: AuthConfig,
        record: Callable[[str, Step], None],
        plain_checks: Mapping[str, Callable[[str], PlainCheck]] | None = None,
    ) -> None:
        """``plain_checks``: method name -> (domain -> PLAIN checker) for methods that keep no keys here
        (``ldap``, given by certauth so that this app needs no directory code)."""
        self.auth = auth
        self.record = record
        self.plain_checks = dict(plain_checks or {})
        self._server: ScramServer | PlainServer | None = None

    def step(
        self,
        mechanism: str,
        data: bytes,
        domain: str,
        *,
        first: bool,
        channel_bindings: Mapping[str, bytes] | None = None,
        plus_offered: bool = False,
    ) -> Step:
        if first or self._server is None:
            self._server = self._new_server(mechanism, domain, channel_bindings, plus_offered)
            if self._server is None:
                step = Step(condition="invalid-mechanism", reason=f"{mechanism} is not served here")
                self.record("", step)
                return step
        server = self._server
        step = server.step(data)
        if step.challenge is None:
            self._server = None
            self.record(server.tried or "", step)
        return step

    def _plain_in_order(self, domain: str, find: Callable[[str], Credentials]) -> PlainCheck:
        """PLAIN through each configured password method in order (MongooseIM): the first that accepts wins;
        an unreachable directory is a temporary failure only when no method accepted."""
        checks = [
            _rdbms_plain(find) if method == "rdbms" else self.plain_checks[method](domain)
            for method in self.auth.password_methods
        ]

        def check(username: str, password: str) -> tuple[Credentials, bool]:
            best: Credentials | None = None
            unavailable: CredentialsUnavailable | None = None
            for one in checks:
                try:
                    credentials, matched = one(username, password)
                except CredentialsUnavailable as exc:
                    unavailable = exc
                    continue
                if matched:
                    return credentials, True
                if best is None or (credentials.exists and not best.exists):
                    best = credentials
            if unavailable is not None:
                raise unavailable
            assert best is not None
            return best, False

        return check

    def _new_server(
        self,
        mechanism: str,
        domain: str,
        channel_bindings: Mapping[str, bytes] | None,
        plus_offered: bool,
    ) -> ScramServer | PlainServer | None:
        if not self.auth.password_methods:
            return None
        options = self.auth.password

        def find(username: str) -> Credentials:
            return lookup(username, domain, options)

        if mechanism == "PLAIN":
            if self.auth.password_methods == ("rdbms",):
                return PlainServer(find)
            return PlainServer(check=self._plain_in_order(domain, find))
        if "rdbms" not in self.auth.password_methods:
            return None  # SCRAM needs stored keys: only rdbms has them
        try:
            return ScramServer(mechanism, find, channel_bindings=channel_bindings, plus_offered=plus_offered)
        except ValueError:
            return None
