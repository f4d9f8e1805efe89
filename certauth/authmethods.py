"""Auth methods (``auth.methods``): who may log in with a certificate once the identity rules chose a JID.

One interface, one class per method, tried in the configured order like django.contrib.auth backends; the
first acceptance wins (DESIGN §4). A method answers with a :class:`MethodVerdict`; ``stop`` ends the walk with
a refusal (an account an operator disabled stays disabled whatever the next method says).

- ``pki``: any verified certificate; the account is created on first login (``created_by = first_login``).
- ``db``: the certificate must be registered in our ``Certificate`` table, active, and linked to the active
  account whose JID the identity rules chose.
- ``http``: MongooseIM's HTTP auth service, method ``get_certs`` (MongooseIM ``doc/authentication-methods/
  http.md``): ``GET <prefix>get_certs?user=<localpart>&server=<domain>&pass=`` with the optional Basic
  credentials; only a 200 answer counts, and only when its PEM bundle holds a certificate whose DER is
  byte-identical to the client's.
- ``rdbms`` (MongooseIM's ``internal`` too): passwords (SCRAM, PLAIN) in our database, checked by
  ``accounts.passwords``; it serves no SASL EXTERNAL.
- ``ldap``: the user must be in the directory (``certauth.ldapauth``); it also checks PLAIN passwords by a
  bind, not SCRAM (a directory keeps no SCRAM keys we can read).

The registry :data:`AUTH_METHODS` (name -> class) is the one list of methods: adding one is a subclass of
:class:`AuthMethod` plus ``register(TheClass)``. The class says what it ``serves`` (the mechanism
families :data:`EXTERNAL`, :data:`PLAIN`, :data:`SCRAM`); ``xmppauth.config`` validates ``auth.methods``
against the registry, with one start-up line naming the entry and the accepted names, and derives from it
which mechanisms the configured methods serve (``AuthConfig.served_mechanisms``, which the stream core's one
offering decision uses). So that the config loader can import this module before Django's apps are loaded
(the settings read the config), nothing here imports Django or the models at module level: the methods
import them when they run.

Every method refuses an account that exists locally and is inactive. The methods use the database and may
block (``http``): call them from a thread (``transport.workers.in_worker``) in async code.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from accounts.models import Account
    from certauth.pki import CertFacts
    from xmppauth.config import AuthConfig, HttpAuthOptions, LdapAuthOptions

logger = logging.getLogger(__name__)

# The mechanism families a method may serve (auth.sasl_mechanisms names: external, plain, scram_*). PLAIN and
# SCRAM are apart: a directory checks a password by a bind (PLAIN) but keeps no SCRAM keys we could read.
EXTERNAL = "external"
PLAIN = "plain"
SCRAM = "scram"
PASSWORDS = frozenset({PLAIN, SCRAM})

HTTP_TIMEOUT_DEFAULT = 5.0  # seconds, when the config gives none
HTTP_MAX_BODY = 1 << 20  # a user's PEM bundle; more is refused rather than read
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class ExternalAttempt:
    """What a method is asked about: the JID the identity rules chose for a verified certificate."""

    jid: str  # bare, normalised (certauth.identity)
    facts: CertFacts
    certificate_der: bytes

    @property
    def localpart(self) -> str:
        return self.jid.partition("@")[0]

    @property
    def domain(self) -> str:
        return self.jid.partition("@")[2]


@dataclass(frozen=True)
class MethodVerdict:
    accepted: bool
    reason: str
    stop: bool = False  # a refusal no later method may overturn
    condition: str | None = None  # the SASL condition when not not-authorized (temporary-auth-failure)


def mechanism_family(mechanism: str) -> str:
    """The family of an ``auth.sasl_mechanisms`` name: :data:`EXTERNAL`, :data:`PLAIN`, or :data:`SCRAM` for
    every ``scram_*`` (with or without ``_plus``)."""
    if mechanism in (EXTERNAL, PLAIN):
        return mechanism
    return SCRAM


@functools.cache
def _feed_cache(name: str) -> Any:
    """This module's caches (``accounts.changefeed.FeedCache``, made at first use: no Django at import)."""
    from accounts.changefeed import FeedCache

    return FeedCache(f"authmethods.{name}", CACHE_SIZE)


CACHE_SIZE = 8192  # entries per cache (accounts, registered certificates): LRU beyond that


def _account_active(attempt: ExternalAttempt) -> list[bool]:
    """``[active]`` of the attempt's account, ``[]`` if none: one lean statement (xmppauth.fastsql).

    An account found is held in memory under ``accounts.changefeed`` (a change to it, in any process, is
    seen within ``changefeed.POLL_INTERVAL``); an account not found is asked again (``pki`` makes it)."""
    held = _feed_cache("account_active").held_or_filled(
        (attempt.localpart, attempt.domain), lambda: tuple(_account_active_now(attempt)) or None
    )
    return list(held or ())


def _account_active_now(attempt: ExternalAttempt) -> list[bool]:
    from accounts.models import Account, Domain
    from xmppauth import fastsql

    def build() -> str:
        account, domain = partial(fastsql.column, Account), partial(fastsql.column, Domain)
        return (
            f"SELECT a.{account('active')} FROM {fastsql.table(Account)} a"
            f" JOIN {fastsql.table(Domain)} d ON a.{account('domain')} = d.{domain('id')}"
            f" WHERE a.{account('localpart')} = %s AND d.{domain('name')} = %s"
        )

    sql = fastsql.statement("authmethods.account_active", build)
    rows = fastsql.fetch_all(sql, [attempt.localpart, attempt.domain])
    return [bool(rows[0][0])] if rows else []


def account_is_active(jid: str) -> bool:
    """Whether the account of the bare ``jid`` exists here and is active (a password session's re-check)."""
    return _account_active(ExternalAttempt(jid, None, b"")) == [True]  # type: ignore[arg-type]


def refuse_inactive(attempt: ExternalAttempt) -> MethodVerdict | None:
    """A refusal no later method may overturn when the account exists here and is disabled (also asked again
    at resource binding, ``certauth.authenticator``)."""
    if _account_active(attempt) == [False]:
        return MethodVerdict(False, f"account {attempt.jid} is disabled", stop=True)
    return None


class AuthMethod:
    """The interface, one subclass per method (registered with :func:`register`).

    ``name``: the ``auth.methods`` value; ``aliases``: other spellings of it; ``serves``: the mechanism
    families it serves (:data:`EXTERNAL`, :data:`PLAIN`, :data:`SCRAM`); ``implemented`` False: a MongooseIM
    name we know and do not serve yet (the config loader stops start-up on it). :meth:`from_config` builds
    one.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    serves: ClassVar[frozenset[str]] = frozenset()
    implemented: ClassVar[bool] = True

    @classmethod
    def from_config(cls, auth: AuthConfig) -> AuthMethod:
        return cls()

    @property
    def supports_external(self) -> bool:
        return EXTERNAL in self.serves

    def authenticate_external(self, attempt: ExternalAttempt) -> MethodVerdict:
        return MethodVerdict(False, f"method {self.name} does not support SASL EXTERNAL")


# auth.methods name -> its class, in registration order (the order start-up errors list them in).
AUTH_METHODS: dict[str, type[AuthMethod]] = {}
_ALIASES: dict[str, str] = {}  # alias -> registered name


def register(method: type[AuthMethod]) -> type[AuthMethod]:
    """Add ``method`` to :data:`AUTH_METHODS` under its name and aliases; returns it (usable as a decorator).
    ValueError when the name is empty or taken."""
    names = (method.name, *method.aliases)
    if not method.name or any(name in AUTH_METHODS or name in _ALIASES for name in names):
        raise ValueError(f"auth method {method.name!r}: no name, or a name already registered")
    AUTH_METHODS[method.name] = method
    _ALIASES.update(dict.fromkeys(method.aliases, method.name))
    return method


def canonical_name(name: str) -> str:
    """The registered name ``name`` spells (``internal`` -> ``rdbms``); ``name`` itself when not an alias."""
    return _ALIASES.get(name, name)


def ensure_local_account(jid: str) -> tuple[Account, bool]:
    """The local account of the bare, normalised ``jid``, created at first login (``created_by =
    first_login``) for methods whose users live elsewhere (``pki``, ``ldap``); (account, created)."""
    from django.db import IntegrityError, transaction

    from accounts.models import Account, Domain

    localpart, _, domain_name = jid.partition("@")
    domain, _ = Domain.objects.get_or_create(name=domain_name)
    try:
        with transaction.atomic():
            account, created = Account.objects.get_or_create(
                localpart=localpart, domain=domain, defaults={"created_by": Account.Origin.FIRST_LOGIN}
            )
    except IntegrityError:  # another connection created it a moment ago
        account, created = Account.objects.get(localpart=localpart, domain=domain), False
    if created:
        logger.info("account %s created at first login", jid)
    return account, created


class PkiMethod(AuthMethod):
    """Any verified certificate (MongooseIM ``pki``); the account is created at first login."""

    name = "pki"
    serves = frozenset({EXTERNAL})

    def authenticate_external(self, attempt: ExternalAttempt) -> MethodVerdict:
        # Most logins are not first logins: one indexed read of the account's active flag, no write lock.
        known = _account_active(attempt)
        if known:
            if not known[0]:
                return MethodVerdict(False, f"account {attempt.jid} is disabled", stop=True)
            return MethodVerdict(True, "verified certificate")
        account, created = ensure_local_account(attempt.jid)
        if not account.active:
            return MethodVerdict(False, f"account {attempt.jid} is disabled", stop=True)
        if created:
            return MethodVerdict(True, "verified certificate; account created at first login")
        return MethodVerdict(True, "verified certificate")


class DbMethod(AuthMethod):
    """The certificate must be registered to the active account of that JID, and be active itself."""

    name = "db"
    serves = frozenset({EXTERNAL})

    def authenticate_external(self, attempt: ExternalAttempt) -> MethodVerdict:
        from certauth.models import Certificate

        row = _registered(attempt.facts.fingerprint_sha256)
        if row is None:
            return MethodVerdict(False, "certificate is not registered in the database")
        if row.status != Certificate.Status.ACTIVE:
            return MethodVerdict(False, f"registered certificate is {row.status_display}", stop=True)
        if row.owner is None:
            return MethodVerdict(False, "registered certificate belongs to no account")
        if row.owner != attempt.jid:
            return MethodVerdict(False, f"registered certificate belongs to {row.owner}, not {attempt.jid}")
        if not row.owner_active:
            return MethodVerdict(False, f"account {attempt.jid} is disabled", stop=True)
        return MethodVerdict(True, "certificate registered to this account")


@dataclass(frozen=True)
class _Registration:
    """What the ``db`` method reads of a registered certificate row."""

    status: str
    status_display: str
    owner: str | None  # the account's bare JID
    owner_active: bool


def _registered(fingerprint: str) -> _Registration | None:
    """The registered certificate with this fingerprint (None: none). A row found is held in memory under
    ``accounts.changefeed`` (its status, its account: any change is seen within ``POLL_INTERVAL``)."""
    return _feed_cache("registered").held_or_filled(fingerprint, lambda: _registration_now(fingerprint))


def _registration_now(fingerprint: str) -> _Registration | None:
    from certauth.models import Certificate

    row = Certificate.objects.filter(fingerprint_sha256=fingerprint).select_related("account__domain").first()
    if row is None:
        return None
    return _Registration(
        row.status,
        row.get_status_display(),
        row.account.jid if row.account is not None else None,
        row.account is not None and row.account.active,
    )


class HttpMethod(AuthMethod):
    """MongooseIM's http method, ``get_certs`` (the service returns the user's certificates as PEM)."""

    name = "http"
    serves = frozenset({EXTERNAL})

    def __init__(
        self, base_url: str, *, timeout: float = HTTP_TIMEOUT_DEFAULT, basic_auth: str | None = None
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self._basic_auth = basic_auth  # "user:password"; never logged

    @classmethod
    def from_options(cls, options: HttpAuthOptions) -> HttpMethod:
        return cls(options.base_url, timeout=options.request_timeout_ms / 1000, basic_auth=options.basic_auth)

    @classmethod
    def from_config(cls, auth: AuthConfig) -> HttpMethod:
        if auth.http is None:  # xmppauth.config refuses this already; kept for configs built in code
            raise ValueError(
                'auth.methods includes "http" but no auth service is configured '
                "([outgoing_pools.http.auth] connection.host)"
            )
        return cls.from_options(auth.http)

    def _request(self, attempt: ExternalAttempt) -> urllib.request.Request:
        query = urllib.parse.urlencode({"user": attempt.localpart, "server": attempt.domain, "pass": ""})
        request = urllib.request.Request(f"{self.base_url}get_certs?{query}", method="GET")
        if self._basic_auth:
            token = base64.b64encode(self._basic_auth.encode("utf-8")).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        return request

    def authenticate_external(self, attempt: ExternalAttempt) -> MethodVerdict:
        refused = refuse_inactive(attempt)
        if refused:
            return refused
        url = f"{self.base_url}get_certs"
        try:
            with urllib.request.urlopen(self._request(attempt), timeout=self.timeout) as response:  # noqa: S310
                status = response.status
                body = response.read(HTTP_MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            return MethodVerdict(False, f"auth service {url} answered HTTP {exc.code}")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            logger.warning("http auth method: %s unreachable: %s", url, reason)
            return MethodVerdict(False, f"auth service {url} unreachable: {reason}")
        if status != 200:  # MongooseIM: "200, all the user's certificates"; anything else fails
            return MethodVerdict(False, f"auth service {url} answered HTTP {status}")
        if len(body) > HTTP_MAX_BODY:
            return MethodVerdict(False, f"auth service {url} answered more than {HTTP_MAX_BODY} bytes")
        listed = pem_certificate_ders(body)
        if not listed:
            return MethodVerdict(False, f"auth service {url} lists no certificate for {attempt.jid}")
        if attempt.certificate_der in listed:
            return MethodVerdict(True, f"certificate listed by auth service {url}")
        return MethodVerdict(False, f"certificate not among the {len(listed)} listed by auth service {url}")


def pem_certificate_ders(body: bytes) -> list[bytes]:
    """The DER of each ``CERTIFICATE`` block of a PEM bundle (RFC 7468 §5), as written; bad blocks skipped.

    Decoding the base64 ourselves (rather than parsing and re-encoding) keeps the comparison byte-exact, as
    MongooseIM's ``public_key:pem_decode`` does.
    """
    ders: list[bytes] = []
    for match in _PEM_CERTIFICATE.finditer(body):
        try:
            ders.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except binascii.Error:
            logger.warning("http auth method: skipping a PEM block that is not valid base64")
    return ders


class PasswordOnlyMethod(AuthMethod):
    """``rdbms`` (MongooseIM's ``internal``): passwords in our database, SCRAM and PLAIN, checked by
    ``accounts.passwords``; no EXTERNAL."""

    name = "rdbms"
    aliases = ("internal",)
    serves = PASSWORDS


class LdapMethod(AuthMethod):
    """MongooseIM's ``ldap``: the user must be in the directory for EXTERNAL; PLAIN by a bind. The work is
    ``certauth.ldapauth``'s (python-ldap), imported at the first use as the models are here."""

    name = "ldap"
    serves = frozenset({EXTERNAL, PLAIN})

    def __init__(self, options: LdapAuthOptions) -> None:
        self.options = options

    @classmethod
    def from_config(cls, auth: AuthConfig) -> LdapMethod:
        if auth.ldap is None:  # xmppauth.config refuses this already; kept for configs built in code
            raise ValueError('auth.methods includes "ldap" but [auth.ldap] is not configured')
        return cls(auth.ldap)

    def authenticate_external(self, attempt: ExternalAttempt) -> MethodVerdict:
        from certauth.ldapauth import directory_external

        return directory_external(self.options, attempt)


for _method in (PkiMethod, DbMethod, HttpMethod, PasswordOnlyMethod, LdapMethod):
    register(_method)


def build_methods(auth: AuthConfig) -> list[AuthMethod]:
    """The configured methods, in order. ValueError naming the method when one cannot be built."""
    methods: list[AuthMethod] = []
    for name in auth.methods:
        method = AUTH_METHODS.get(canonical_name(name))
        if method is None:
            accepted = ", ".join(AUTH_METHODS)
            raise ValueError(f"auth.methods: unknown method {name!r}; accepted: {accepted}")
        methods.append(method.from_config(auth))
    return methods


def supports_external(methods: Sequence[AuthMethod]) -> bool:
    """Whether EXTERNAL may be advertised at all (DESIGN §4: an enabled method must support it)."""
    return any(method.supports_external for method in methods)


def run_methods(methods: Sequence[AuthMethod], attempt: ExternalAttempt) -> MethodVerdict:
    """Try ``methods`` in order: the first acceptance wins, else a refusal naming each method's reason."""
    reasons: list[str] = []
    for method in methods:
        if not method.supports_external:
            continue
        verdict = method.authenticate_external(attempt)
        logger.debug("auth method %s on %s: %s", method.name, attempt.jid, verdict)
        if verdict.accepted:
            return MethodVerdict(True, f"{method.name}: {verdict.reason}")
        reasons.append(f"{method.name}: {verdict.reason}")
        if verdict.stop:
            return MethodVerdict(False, "; ".join(reasons), stop=True, condition=verdict.condition)
    if not reasons:
        return MethodVerdict(False, "no configured auth method supports SASL EXTERNAL")
    return MethodVerdict(False, "; ".join(reasons))
