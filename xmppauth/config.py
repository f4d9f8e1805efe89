"""The operator's TOML config file, read with MongooseIM's option names.

Follows MongooseIM's documented TOML schema (``doc/configuration/listen.md``, ``doc/listeners/listen-c2s.md``,
``doc/listeners/listen-http.md``, ``doc/configuration/auth.md``, ``doc/authentication-methods/http.md``,
``doc/configuration/outgoing-connections.md``) for the subset xmppauth implements, so a MongooseIM operator's
file reads the same here. Every value is checked when the file is loaded: an unknown key, a wrong type or an
unknown value raises :class:`ConfigError` whose message names the full dotted key (array entries as
``listen.c2s[0]``, counted from 0 in file order) and what is accepted.

Sections and keys (defaults in brackets)::

    [general]
      hosts = ["example.com"]          # hosted XMPP domains, lowercased, no duplicates ["localhost"]
    [[listen.c2s]]                     # or one table [listen.c2s]; several listeners as [[...]]
      port = 5222                      # 1..65535 [5222]
      ip_address = "0.0.0.0"           # ["0.0.0.0"]
      max_stanza_size = 65536          # bytes, positive; "infinity" is refused: we always limit [65536]
      tls.mode = "starttls"            # starttls | starttls_required | tls ["starttls"]
      tls.certfile / tls.keyfile       # server certificate and key; unset: the bootstrap server certificate
      tls.cacertfile                   # CAs advertised to and trusted for clients (besides the database)
      tls.verify_mode = "peer"         # peer | selfsigned_peer | none ["peer"]; none requests no client
                                       # certificate, so no SASL EXTERNAL on that listener
      tls.verify_peer = true           # older spelling: true = "peer", false = "none"
      tls.disconnect_on_failure = true # a bad client certificate ends the handshake [true]
      tls.crl_files = ["ca.crl"]       # CRLs (PEM or DER), each applied to the trusted CA that signed it;
                                       # one that cannot be applied stops start-up (certauth.configcas) [none]
      tls.cacert_domains = ["a.example"]  # the cacertfile's CAs may vouch only for these hosts; each one
                                       # of [general] hosts; only with tls.cacertfile [every hosted domain]
    [[listen.http]]                    # or [listen.http]: HTTPS for WebSocket (RFC 7395) and BOSH (XEP-0206)
      port = 5443, ip_address, tls.* as above; a tls table means HTTPS, tls.mode may only be "tls"
      behind_tls_proxy = false         # plain listener behind nginx: X-SSL-Client-Cert from trusted_proxies
      [[listen.http.handlers.mod_websockets]]   host = "_" (any) ["_"], path = "/ws-xmpp" (required)
        allowed_origins = ["https://chat.example.com"]  # web pages besides our own origin [none]
      [[listen.http.handlers.mod_bosh]]         host, path, allowed_origins as above
      crl_only = true                  # ours: plain HTTP serving only our CRLs (/crl/<id>.crl), no tls
                                       # table, no handlers; for relying parties without a certificate [false]
    [auth]
      methods = ["pki"]                # tried in order: pki | db | http | rdbms | ldap ["pki"]; or `method`
      sasl_mechanisms = ["external"]   # MongooseIM names: external, plain, scram_sha1, ... ["external"]
      sasl_external = ["standard"]     # standard | common_name | auth_id | a dotted Python path ["standard"]
      sasl_external_common_name.prefix / .suffix   # wrapped around the CN by the common_name verifier [""]
      http.basic_auth = "user:pass"    # MongooseIM auth.http: credentials we send to the auth service
      password.format = "scram"        # how rdbms keeps passwords: only "scram" (salted keys) ["scram"]
      password.hash = ["sha256"]       # SCRAM hashes stored: sha, sha224, sha256, sha384, sha512 [all]
      password.scram_iterations = 10000  # PBKDF2 iterations of new passwords, 4096.. [10000]
    [outgoing_pools.http.auth]         # MongooseIM's pool the http method talks to (required with "http")
      connection.host = "https://auth.example:8000"   # scheme, host and port, no credentials
      connection.path_prefix = "/"     # prefix of the request paths (``<prefix>get_certs`` ...) ["/"]
      connection.request_timeout = 2000  # milliseconds [2000]
    [xmppauth]                         # our own options, not MongooseIM's: see XmppauthOptions
      crl_base_url = "http://xmpp.example.com:8080"   # where new certificates say our CRLs are: an
                                       # http:// URL whose port is a plain [[listen.http]] (e.g. crl_only)

Relative file paths (certfile, keyfile, cacertfile, crl_files) are resolved against the directory of the
config file. A handful of common MongooseIM keys that have no meaning here (``IGNORED_KEYS``) are accepted and
logged at INFO; everything else that is unknown is an error. The default (``xmppauth.toml`` at the project
root) is the development config ``make run`` uses.

Decisions where MongooseIM differs or is silent: hosts default to ``["localhost"]`` (the seed examples have
no ``[general]``); ``port`` is optional (5222 for c2s, 5443 for http); ``max_stanza_size`` defaults to 64 KiB
and ``"infinity"`` is refused because the stream parser always enforces a limit (RFC 6120 §13.12 item 4);
``sasl_mechanisms`` defaults to ``["external"]`` because this server is certificate-first; the mechanisms
``anonymous``, ``oauth`` and ``digest`` are MongooseIM names we do not implement and are refused. For the
http method we keep MongooseIM's two-part spelling (``[auth.http]`` + ``[outgoing_pools.http.auth]``) rather
than inventing a single ``url`` key, so a MongooseIM file works unchanged.

Public interface: ``load_config(path) -> Config``, ``parse_config(data, source) -> Config``, ``ConfigError``,
``describe(config) -> str`` and the dataclasses below.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

# The registries of what xmppauth implements, each owned by the module that implements it. They are pure at
# module level (no Django, no models), so the loader can check names before the apps are loaded (the settings
# read this file first); dotted-path verifiers are import-checked later, when a server process starts
# (certauth.configcas.prepare), since importing an operator's module is not the loader's business.
from certauth.authmethods import AUTH_METHODS, EXTERNAL, PASSWORDS, SCRAM, canonical_name, mechanism_family
from certauth.identity import VERIFIERS
from certauth.verify import VERIFY_MODES
from xmppauth.origins import parse_allowed_origin

logger = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

C2S_TLS_MODES = ("starttls", "starttls_required", "tls")
HTTP_TLS_MODES = ("tls",)
# MongooseIM's [auth.password] hash names (doc/configuration/auth.md) -> hashlib names.
PASSWORD_HASHES = {
    "sha": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
}
SCRAM_ITERATIONS_DEFAULT = 10000  # MongooseIM's default
SCRAM_ITERATIONS_MIN = 4096  # RFC 7677 §4: at least 4096 for SCRAM-SHA-256
SASL_MECHANISMS = (
    "external",
    "plain",
    "scram_sha1",
    "scram_sha1_plus",
    "scram_sha224",
    "scram_sha224_plus",
    "scram_sha256",
    "scram_sha256_plus",
    "scram_sha384",
    "scram_sha384_plus",
    "scram_sha512",
    "scram_sha512_plus",
)
# MongooseIM mechanism names we recognise but do not implement: refused with a clear message.
UNSUPPORTED_SASL_MECHANISMS = ("anonymous", "oauth", "digest")
HTTP_HANDLER_KINDS = ("mod_websockets", "mod_bosh")
MAX_STANZA_SIZE_DEFAULT = 65536
# MongooseIM listener option backlog (default 1024): a burst of connects beyond the kernel's default of 50
# waiting for accept() is dropped and retried by the clients a second or more later.
BACKLOG_DEFAULT = 1024

# MongooseIM's default auth.sasl_mechanisms order (doc/configuration/auth.md) with what we implement; without
# the key, the ones the configured methods serve are used, EXTERNAL first when a method serves it.
DEFAULT_MECHANISM_ORDER = (
    "external",
    "scram_sha512_plus",
    "scram_sha512",
    "scram_sha384_plus",
    "scram_sha384",
    "scram_sha256_plus",
    "scram_sha256",
    "scram_sha224_plus",
    "scram_sha224",
    "scram_sha1_plus",
    "scram_sha1",
    "plain",
)

# MongooseIM keys accepted for compatibility but not acted upon; logged at INFO. Keep this list short.
IGNORED_KEYS = (
    "general.loglevel",
    "general.default_server_domain",
    "listen.c2s.access",
    "listen.c2s.shaper",
    "outgoing_pools.http.auth.scope",
    "outgoing_pools.http.auth.workers",
)

_DOTTED_PYTHON_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class ConfigError(Exception):
    """A config file that cannot be used; the message names the key and what is accepted."""


@dataclass(frozen=True)
class TlsOptions:
    mode: str = "starttls"  # c2s: starttls | starttls_required | tls ; http: tls
    certfile: str | None = None  # absolute path; None: use the bootstrap server certificate
    keyfile: str | None = None
    cacertfile: str | None = None
    verify_mode: str = "peer"  # peer | selfsigned_peer | none
    disconnect_on_failure: bool = True
    crl_files: tuple[str, ...] = ()
    cacert_domains: tuple[str, ...] = ()  # hosted domains the cacertfile CAs may vouch for; () = all


@dataclass(frozen=True)
class C2SListener:
    port: int = 5222
    ip_address: str = "0.0.0.0"
    tls: TlsOptions | None = None  # None: no TLS offered
    max_stanza_size: int = MAX_STANZA_SIZE_DEFAULT
    backlog: int = BACKLOG_DEFAULT  # MongooseIM's listen.*.backlog: connections waiting for accept()


@dataclass(frozen=True)
class HttpHandler:
    kind: str  # mod_websockets | mod_bosh
    host: str = "_"
    path: str = "/"
    # Our own key: origins (scheme://host[:port], canonical) whose pages may use this handler besides the
    # request's own origin; transport.http.origin applies it.
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpListener:
    port: int = 5443
    ip_address: str = "0.0.0.0"
    tls: TlsOptions | None = None  # None: plain HTTP
    handlers: tuple[HttpHandler, ...] = ()
    backlog: int = BACKLOG_DEFAULT
    # Plain listener behind a TLS-terminating proxy: X-SSL-Client-Cert from [xmppauth] trusted_proxies counts.
    behind_tls_proxy: bool = False
    crl_only: bool = False  # plain HTTP serving only /crl/ (transport.http.routing.CrlOnlyListeners)


@dataclass(frozen=True)
class HttpAuthOptions:
    """MongooseIM's http auth method: ``[outgoing_pools.http.auth]`` plus ``[auth.http]``."""

    host: str  # "https://auth.example:8000", no path, no credentials
    path_prefix: str = "/"
    request_timeout_ms: int = 2000
    basic_auth: str | None = field(default=None, repr=False)  # "user:password"; never logged

    @property
    def base_url(self) -> str:
        """The URL that method names are appended to, e.g. ``base_url + "get_certs"``."""
        return self.host.rstrip("/") + self.path_prefix


@dataclass(frozen=True)
class PasswordOptions:
    """MongooseIM's ``[auth.password]``: passwords are kept only as SCRAM salted keys (RFC 5802 §3)."""

    format: str = "scram"
    hashes: tuple[str, ...] = tuple(PASSWORD_HASHES)  # MongooseIM names: sha, sha224, sha256, ...
    scram_iterations: int = SCRAM_ITERATIONS_DEFAULT


LDAP_ENCRYPT = (
    "none",
    "tls",
    "starttls",
)  # MongooseIM: none | tls (LDAPS); starttls is ours (RFC 4511 §4.14)
LDAP_DEREF = ("never", "always", "finding", "searching")
LDAP_LOCAL_FILTER_OPERATIONS = ("equal", "notequal")


@dataclass(frozen=True)
class LdapPoolOptions:
    """MongooseIM's ``[outgoing_pools.ldap.<tag>]``: ``workers``, ``call_timeout`` and ``connection.*``.

    TLS: ``connection.encrypt = "tls"`` (LDAPS) or ``"starttls"``, or a ``connection.tls`` table (MongooseIM 6
    spelling; it means LDAPS unless ``encrypt`` says otherwise). The directory's certificate is verified
    against ``tls.cacertfile`` (or the system's CAs) unless ``tls.verify_mode = "none"``.
    """

    servers: tuple[str, ...] = ("localhost",)
    port: int | None = None  # None: 389, or 636 with encrypt = "tls"
    rootdn: str = ""  # empty: anonymous searches
    password: str = field(default="", repr=False)  # never logged
    encrypt: str = "none"
    tls_verify_peer: bool = True
    tls_cacertfile: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    workers: int = 10
    call_timeout_ms: int = 5000
    connect_interval_ms: int = 10000  # a server that failed is not tried again before this

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 636 if self.encrypt == "tls" else 389


@dataclass(frozen=True)
class LdapDnFilter:
    filter: str
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LdapLocalFilter:
    operation: str  # equal | notequal
    attribute: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class LdapAuthOptions:
    """MongooseIM's ``[auth.ldap]`` plus our ``match_certificate``; ``pools`` by tag."""

    base: str
    pools: tuple[tuple[str, LdapPoolOptions], ...]
    uids: tuple[tuple[str, str], ...] = (("uid", "%u"),)  # (attribute, format with one %u)
    filter: str | None = None
    dn_filter: LdapDnFilter | None = None
    local_filter: LdapLocalFilter | None = None
    deref: str = "never"
    pool_tag: str = "default"
    bind_pool_tag: str = "bind"
    # Ours, off by default: EXTERNAL also needs the client's certificate among the entry's values of
    # certificate_attribute (RFC 4523 §2.1 userCertificate, transferred ;binary).
    match_certificate: bool = False
    certificate_attribute: str = "userCertificate;binary"

    def pool(self, tag: str) -> LdapPoolOptions | None:
        return dict(self.pools).get(tag)


@dataclass(frozen=True)
class AuthConfig:
    methods: tuple[str, ...] = ("pki",)
    sasl_mechanisms: tuple[str, ...] = ("external",)
    sasl_external: tuple[str, ...] = ("standard",)
    common_name_prefix: str = ""
    common_name_suffix: str = ""
    http: HttpAuthOptions | None = None
    password: PasswordOptions = field(default_factory=PasswordOptions)
    ldap: LdapAuthOptions | None = None

    @property
    def password_methods(self) -> tuple[str, ...]:
        """The configured methods that check passwords (SCRAM, PLAIN), from the methods' registry."""
        return tuple(m for m in self.methods if m in AUTH_METHODS and PASSWORDS & AUTH_METHODS[m].serves)

    @property
    def served_mechanisms(self) -> tuple[str, ...]:
        """The mechanisms (SASL_MECHANISMS names) some configured method serves: what the stream core's one
        offering decision (``transport.xmpp.mechanisms``) may offer, with ``sasl_mechanisms`` and TLS."""
        return tuple(mechanism for mechanism in SASL_MECHANISMS if _served(mechanism, self.methods))


@dataclass(frozen=True)
class XmppauthOptions:
    """Our own options (the ``[xmppauth]`` table); MongooseIM has no equivalent.

    - ``trusted_proxies``: addresses/networks of TLS-terminating proxies whose client-certificate header is
      honoured on the plain ``[[listen.http]]`` listeners marked ``behind_tls_proxy = true`` (never on one
      that terminates TLS itself); from any other peer, or on any other listener, the header is ignored.
      Default: none.
    - ``crl_grace_seconds``: how long past a CRL's nextUpdate its CA's certificates are still accepted when no
      newer CRL could be fetched. Default 3600.
    - ``crl_fail_open``: past that grace, accept instead of refuse (fail open). Default false (fail closed).
    - ``crl_fetch_timeout_seconds``: how long one CRL download may take in all (connecting, waiting for the
      answer, reading it); a server that accepts and never answers costs the job this long. Default 10.
    - ``crl_refresh_min_seconds`` / ``crl_refresh_max_seconds``: bounds on the interval between CRL fetches
      (the fetch is scheduled before nextUpdate, never more often than min nor less often than max).
      Defaults 60 / 3600.
    - ``ping_interval_seconds``: server-to-client XMPP ping (XEP-0199) on idle sessions; 0 disables.
      Default 60.
    - ``session_lease_seconds``: how long a live-session record stays valid without a refresh from the process
      that holds it, so sessions of a dead process disappear from the admin. Default 30.
    - ``process_liveness_seconds``: with Redis, each listener process keeps a liveness key that expires this
      long after its last refresh (refreshed every third of it). Once a process's key is gone, another
      listener takes its sessions out of the registry and re-routes the stanzas still waiting on their
      channels (delivered elsewhere, stored offline, or bounced: ``transport.im.liveness``). So a stanza sent
      to
      a dead listener is re-routed within this bound plus one sweep (1 s), not lost. Default 5.
    - ``max_offline_messages``: offline messages (XEP-0160) kept per account, as MongooseIM's ``mod_offline``
      ``access_max_user_messages``: past it a message is bounced to its sender with ``service-unavailable``
      instead of stored. 0 stores none. Default 100.
    - ``session_queue_stanzas`` / ``session_queue_bytes``: stanzas (and their serialised bytes) a session's
      client may have waiting to be routed. Past either, the session is ended with the stream error
      ``policy-violation`` (RFC 6120 §4.9.3.14): the client is flooding, bouncing would only queue more. A
      stanza for a session whose channel is full is bounced to its sender with ``resource-constraint``
      (RFC 6120 §8.3.3.18). Defaults 1000 / 1048576.
    - ``max_connections_per_address``: open c2s TCP connections per client IP address per listener process;
      one more is closed at once (logged). 0: no limit. Default 100.
    - ``auth_failures_per_minute``: failed authentications per client IP address per minute and process; past
      it, that address's next stream is ended after ``auth_failure_delay_seconds`` with ``policy-violation``
      (XEP-0205 §3: delay, then refuse). 0: no limit. Defaults 10 / 2.
    - ``auth_events_per_minute``: refusals recorded as ``AuthEvent`` rows per source address per minute and
      process (the rest are counted in one log line), so a peer cannot fill the disk; successes are always
      recorded. ``auth_event_retention_days``: rows older than this are purged by the Celery beat job
      ``certauth.tasks.purge_auth_events`` (hourly; in-process without Redis). Defaults 30 / 30.
    - ``require_revocation``: refuse certificates whose CA (or any CA on the path) has no usable revocation
      source (no CRL held). Default false: the seed's configurations trust a ``tls.cacertfile`` with no CRL,
      and such CAs are named in a start-up warning and in the admin instead.
    - ``admin_requires_certificate``: every admin page needs, besides the password login, a client
      certificate that verifies in ``peer`` mode (chain and revocation) and whose one xmppAddr is the username
      of an active staff user. Default false (password login only, rate-limited).
    - ``crl_base_url``: the base of the CRL distribution point (RFC 5280 §4.2.1.13) named in certificates we
      issue from now on (``<base>/crl/<CA id>.crl``). An ``http://`` URL without path whose port (80 if
      omitted) is that of a ``[[listen.http]]`` without ``tls`` (best one with ``crl_only = true``), so
      relying parties fetch our CRLs without a client certificate; anything else stops start-up. Default:
      the first ``crl_only`` listener at the first host, else the first ``[[listen.http]]`` (as before).
      Certificates issued earlier keep naming the HTTPS listener, which still serves ``/crl/``.
    - ``certificate_expiry_warning_days``: active certificates whose notAfter falls within this many days are
      listed on the admin's dashboard and mailed to Django's ``ADMINS`` (``XMPPAUTH_ADMINS``) by the beat job
      ``certauth.tasks.warn_expiring_certificates`` (hourly; one mail per run, each certificate at most once
      a day). Default 30.
    - ``metrics_path``: the URL path of the Prometheus endpoint (``xmppauth.metrics``) on the
      ``[[listen.http]]`` listeners that serve the admin, for active staff users only (admin session, or HTTP
      Basic with a staff user's password). ``""`` serves none. It may not be ``/``, lie under ``/admin/``,
      ``/crl/`` or ``/static/``, nor be a WebSocket or BOSH handler's path. Default ``"/metrics"``.
    """

    trusted_proxies: tuple[IpNetwork, ...] = ()
    crl_grace_seconds: int = 3600
    crl_fail_open: bool = False
    crl_fetch_timeout_seconds: int = 10
    crl_refresh_min_seconds: int = 60
    crl_refresh_max_seconds: int = 3600
    ping_interval_seconds: int = 60
    session_lease_seconds: int = 30
    process_liveness_seconds: int = 5
    max_offline_messages: int = 100
    session_queue_stanzas: int = 1000
    session_queue_bytes: int = 1048576
    max_connections_per_address: int = 100
    auth_failures_per_minute: int = 10
    auth_failure_delay_seconds: int = 2
    auth_events_per_minute: int = 30
    auth_event_retention_days: int = 30
    require_revocation: bool = False
    admin_requires_certificate: bool = False
    crl_base_url: str | None = None  # "http://host:port", checked against listen.http
    certificate_expiry_warning_days: int = 30
    metrics_path: str = "/metrics"

    def is_trusted_proxy(self, address: str) -> bool:
        """Whether a peer address belongs to one of ``trusted_proxies``."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)


@dataclass(frozen=True)
class Config:
    hosts: tuple[str, ...] = ("localhost",)
    listen_c2s: tuple[C2SListener, ...] = ()
    listen_http: tuple[HttpListener, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    source: str = "<defaults>"
    options: XmppauthOptions = field(default_factory=XmppauthOptions)


# --- reading tables -------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _generic(path: str) -> str:
    """``listen.c2s[1].access`` -> ``listen.c2s.access``, the form IGNORED_KEYS uses."""
    return re.sub(r"\[\d+\]", "", path)


class _Table:
    """One TOML table at a dotted path: checks its keys on creation, then hands out typed values."""

    def __init__(self, data: object, path: str, source: str, base_dir: Path, accepted: Sequence[str]) -> None:
        self.path = path
        self.source = source
        self.base_dir = base_dir
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_type_name(data)}")
        self.data: dict[str, Any] = {}
        for key, value in data.items():
            dotted = _join(path, key)
            if key in accepted:
                self.data[key] = value
            elif _generic(dotted) in IGNORED_KEYS:
                logger.info("%s: %s is a MongooseIM option xmppauth does not use; ignored", source, dotted)
            else:
                close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
                hint = f" (did you mean {_join(path, close[0])!r}?)" if close else ""
                where = f"in {path!r} " if path else "at the top level "
                listed = ", ".join(accepted) if accepted else "none"
                raise ConfigError(
                    f"{source}: unknown key {dotted!r}{hint}; accepted keys {where}are: {listed}"
                )

    def fail(self, dotted: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {dotted}: {message}")

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def _typed(self, name: str, kind: type, kind_name: str) -> Any:
        value = self.data[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            self.fail(self.key(name), f"expected {kind_name}, got {_type_name(value)} {value!r}")
        return value

    def string(self, name: str, default: str | None) -> str | None:
        if name not in self.data:
            return default
        value = self._typed(name, str, "a string")
        if not value:
            self.fail(self.key(name), "must not be empty")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        if name not in self.data:
            return default
        return self._typed(name, bool, "a boolean (true or false, without quotes)")

    def integer(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        if name not in self.data:
            return default
        value = self._typed(name, int, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            self.fail(self.key(name), f"{value} is out of range; accepted: {bounds}")
        return value

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.string(name, default)
        assert value is not None
        if value not in choices:
            self.fail(self.key(name), f"unknown value {value!r}; accepted: {', '.join(choices)}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if name not in self.data:
            return default
        values = self._typed(name, list, "an array of strings")
        for index, value in enumerate(values):
            if not isinstance(value, str) or not value:
                self.fail(f"{self.key(name)}[{index}]", f"expected a non-empty string, got {value!r}")
        seen: set[str] = set()
        for value in values:
            if value in seen:
                self.fail(self.key(name), f"{value!r} is listed twice")
            seen.add(value)
        return tuple(values)

    def file(self, name: str) -> str | None:
        value = self.string(name, None)
        return None if value is None else self.resolve(value)

    def files(self, name: str) -> tuple[str, ...]:
        return tuple(self.resolve(value) for value in self.strings(name, ()))

    def resolve(self, value: str) -> str:
        return os.path.normpath(self.base_dir / Path(value).expanduser())

    def table(self, name: str, accepted: Sequence[str]) -> _Table | None:
        if name not in self.data:
            return None
        return _Table(self.data[name], self.key(name), self.source, self.base_dir, accepted)

    def entries(self, name: str, accepted: Sequence[str]) -> list[_Table]:
        """``[[x.name]]`` (array of tables, each at ``x.name[i]``) or a single ``[x.name]`` table."""
        if name not in self.data:
            return []
        value = self.data[name]
        if isinstance(value, dict):
            return [_Table(value, self.key(name), self.source, self.base_dir, accepted)]
        if not isinstance(value, list):
            self.fail(self.key(name), f"expected a table or an array of tables, got {_type_name(value)}")
        return [
            _Table(item, f"{self.key(name)}[{index}]", self.source, self.base_dir, accepted)
            for index, item in enumerate(value)
        ]


# --- sections -------------------------------------------------------------------------------------------

_TLS_KEYS = (
    "mode",
    "certfile",
    "keyfile",
    "cacertfile",
    "verify_mode",
    "verify_peer",
    "disconnect_on_failure",
    "crl_files",
    "cacert_domains",
)


def _parse_hosts(root: _Table) -> tuple[str, ...]:
    general = root.table("general", ("hosts",))
    if general is None or not general.has("hosts"):
        return ("localhost",)
    raw = general.strings("hosts", ())
    if not raw:
        general.fail(general.key("hosts"), "must name at least one XMPP domain")
    hosts: list[str] = []
    for index, host in enumerate(raw):
        name = host.strip().lower().rstrip(".")
        if not name or any(char.isspace() or char in "@/\"'<>&" for char in name):
            general.fail(f"{general.key('hosts')}[{index}]", f"{host!r} is not a domain name")
        if name in hosts:
            general.fail(general.key("hosts"), f"{name!r} is listed twice (hosts are compared lowercased)")
        hosts.append(name)
    return tuple(hosts)


def _parse_tls(listener: _Table, modes: Sequence[str], default_mode: str) -> TlsOptions | None:
    tls = listener.table("tls", _TLS_KEYS)
    if tls is None:
        return None
    verify_mode = tls.choice("verify_mode", "peer", tuple(VERIFY_MODES))
    if tls.has("verify_peer"):
        from_peer = "peer" if tls.boolean("verify_peer", True) else "none"
        if tls.has("verify_mode") and verify_mode != from_peer:
            tls.fail(
                tls.key("verify_peer"),
                f"contradicts {tls.key('verify_mode')} = {verify_mode!r} (verify_peer = true means "
                f'"peer", false means "none"); set only verify_mode',
            )
        verify_mode = from_peer
    if VERIFY_MODES[verify_mode].accepts_self_signed:  # issue 12 point 3: certauth.pins
        logger.warning(
            '%s: %s = "selfsigned_peer": a self-signed client certificate logs in only as the account it '
            "is pinned to; an account without a pin is pinned at its first self-signed login "
            "(trust on first use)",
            tls.source,
            tls.key("verify_mode"),
        )
    return TlsOptions(
        mode=tls.choice("mode", default_mode, modes),
        certfile=tls.file("certfile"),
        keyfile=tls.file("keyfile"),
        cacertfile=tls.file("cacertfile"),
        verify_mode=verify_mode,
        disconnect_on_failure=tls.boolean("disconnect_on_failure", True),
        crl_files=tls.files("crl_files"),
        cacert_domains=_parse_cacert_domains(tls),
    )


def _parse_cacert_domains(tls: _Table) -> tuple[str, ...]:
    """``tls.cacert_domains``: the hosted domains this listener's ``tls.cacertfile`` CAs may vouch for.

    Compared like ``[general] hosts`` (lowercased, without a trailing dot); that each is a host is checked by
    :func:`_check_cacert_domains` once the hosts are known. An empty array is refused: it would read as
    "no domain" but mean "every domain"; leaving the key out means every hosted domain.
    """
    if not tls.has("cacert_domains"):
        return ()
    raw = tls.strings("cacert_domains", ())
    if not raw:
        tls.fail(tls.key("cacert_domains"), "must name at least one host; leave it out for every host")
    if not tls.has("cacertfile"):
        tls.fail(
            tls.key("cacert_domains"),
            f"limits the CAs of {tls.key('cacertfile')}, which is not set; give both or neither",
        )
    domains: list[str] = []
    for name in raw:
        domain = name.strip().lower().rstrip(".")
        if domain in domains:
            tls.fail(tls.key("cacert_domains"), f"{domain!r} is listed twice (compared lowercased)")
        domains.append(domain)
    return tuple(domains)


def _check_cacert_domains(listener: _Table, tls: TlsOptions | None, hosts: Sequence[str]) -> None:
    """Every ``tls.cacert_domains`` entry must be one of ``[general] hosts`` (a CA limited to a domain we do
    not host would vouch for nobody, and a typo would silently lock everyone out)."""
    if tls is None:
        return
    for index, domain in enumerate(tls.cacert_domains):
        if domain not in hosts:
            listener.fail(
                f"{listener.key('tls')}.cacert_domains[{index}]",
                f"{domain!r} is not one of general.hosts ({', '.join(hosts)})",
            )


def _parse_ip(listener: _Table) -> str:
    value = listener.string("ip_address", "0.0.0.0")
    assert value is not None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        listener.fail(listener.key("ip_address"), f"{value!r} is not an IPv4 or IPv6 address")


def _parse_c2s(listener: _Table) -> C2SListener:
    if listener.data.get("max_stanza_size") == "infinity":
        listener.fail(
            listener.key("max_stanza_size"),
            '"infinity" is not supported: xmppauth always limits stanza size; '
            "give a positive integer (bytes)",
        )
    return C2SListener(
        port=listener.integer("port", 5222, 1, 65535),
        ip_address=_parse_ip(listener),
        tls=_parse_tls(listener, C2S_TLS_MODES, "starttls"),
        max_stanza_size=listener.integer("max_stanza_size", MAX_STANZA_SIZE_DEFAULT, 1),
        backlog=listener.integer("backlog", BACKLOG_DEFAULT, 1),
    )


def _parse_allowed_origins(handler: _Table) -> tuple[str, ...]:
    origins: list[str] = []
    for index, value in enumerate(handler.strings("allowed_origins", ())):
        try:
            origin = parse_allowed_origin(value)
        except ValueError as exc:
            handler.fail(f"{handler.key('allowed_origins')}[{index}]", str(exc))
        if origin in origins:
            handler.fail(handler.key("allowed_origins"), f"{value!r} is listed twice (as {origin!r})")
        origins.append(origin)
    return tuple(origins)


def _parse_http(listener: _Table) -> HttpListener:
    handlers: list[HttpHandler] = []
    table = listener.table("handlers", HTTP_HANDLER_KINDS)
    if table is not None:
        for kind in table.data:
            for entry in table.entries(kind, ("host", "path", "allowed_origins")):
                if not entry.has("path"):
                    entry.fail(entry.key("path"), 'is required, e.g. path = "/ws-xmpp"')
                path = entry.string("path", None)
                assert path is not None
                if not path.startswith("/"):
                    entry.fail(entry.key("path"), f"{path!r} must start with '/'")
                host = entry.string("host", "_")
                assert host is not None
                if any((h.host, h.path) == (host, path) for h in handlers):
                    entry.fail(
                        entry.key("path"), f"host {host!r} path {path!r} is already used on this listener"
                    )
                handlers.append(
                    HttpHandler(
                        kind=kind, host=host, path=path, allowed_origins=_parse_allowed_origins(entry)
                    )
                )
    crl_only = listener.boolean("crl_only", False)
    if crl_only and listener.has("tls"):
        # RFC 5280 §4.2.1.13: distribution points are usually http URIs; a CRL is signed, it needs no TLS,
        # and TLS here would ask relying parties for what they may not have.
        listener.fail(listener.key("tls"), "a crl_only listener serves plain HTTP: remove its tls table")
    if crl_only and handlers:
        listener.fail(
            listener.key("handlers"),
            "a crl_only listener serves only our CRLs (/crl/): put mod_websockets and mod_bosh on another "
            "[[listen.http]]",
        )
    tls = _parse_tls(listener, HTTP_TLS_MODES, "tls")
    behind_tls_proxy = listener.boolean("behind_tls_proxy", False)
    if behind_tls_proxy and tls is not None:
        listener.fail(
            listener.key("behind_tls_proxy"),
            "a listener with a tls table terminates TLS itself; only a plain listener can be behind a proxy",
        )
    if behind_tls_proxy and crl_only:
        listener.fail(listener.key("behind_tls_proxy"), "a crl_only listener serves no logins to proxy")
    return HttpListener(
        port=listener.integer("port", 5443, 1, 65535),
        ip_address=_parse_ip(listener),
        tls=tls,
        handlers=tuple(handlers),
        backlog=listener.integer("backlog", BACKLOG_DEFAULT, 1),
        behind_tls_proxy=behind_tls_proxy,
        crl_only=crl_only,
    )


def _check_ports(root: _Table, bound: list[tuple[str, str, int]]) -> None:
    """Two listeners may not bind the same port on overlapping addresses."""
    wildcard = {"0.0.0.0", "::"}
    for index, (name, ip, port) in enumerate(bound):
        for other_name, other_ip, other_port in bound[:index]:
            if port == other_port and (ip == other_ip or ip in wildcard or other_ip in wildcard):
                root.fail(f"{name}.port", f"port {port} on {ip} is already used by {other_name}")


def _parse_listen(
    root: _Table, hosts: Sequence[str]
) -> tuple[tuple[C2SListener, ...], tuple[HttpListener, ...]]:
    listen = root.table("listen", ("c2s", "http"))
    if listen is None:
        return (), ()
    c2s_tables = listen.entries("c2s", ("port", "ip_address", "tls", "max_stanza_size", "backlog"))
    http_tables = listen.entries(
        "http", ("port", "ip_address", "tls", "handlers", "backlog", "behind_tls_proxy", "crl_only")
    )
    c2s = tuple(_parse_c2s(table) for table in c2s_tables)
    http = tuple(_parse_http(table) for table in http_tables)
    bound = [(t.path, li.ip_address, li.port) for t, li in zip(c2s_tables, c2s, strict=True)]
    bound += [(t.path, li.ip_address, li.port) for t, li in zip(http_tables, http, strict=True)]
    _check_ports(root, bound)
    for table, listener in [*zip(c2s_tables, c2s, strict=True), *zip(http_tables, http, strict=True)]:
        _check_cacert_domains(table, listener.tls, hosts)
    return c2s, http


def _parse_http_auth(root: _Table, auth: _Table | None, methods: tuple[str, ...]) -> HttpAuthOptions | None:
    basic_auth: str | None = None
    http_table = auth.table("http", ("basic_auth",)) if auth is not None else None
    if http_table is not None:
        basic_auth = http_table.string("basic_auth", None)
        if basic_auth is not None and ":" not in basic_auth:
            # The value is a secret: name the key, never echo it.
            http_table.fail(http_table.key("basic_auth"), 'expected "username:password"')

    pools = root.table("outgoing_pools", ("http", "ldap"))
    http_pools = pools.table("http", ("auth",)) if pools is not None else None
    pool = http_pools.table("auth", ("connection",)) if http_pools is not None else None
    connection = pool.table("connection", ("host", "path_prefix", "request_timeout")) if pool else None
    if connection is None or not connection.has("host"):
        if "http" in methods:
            raise ConfigError(
                f"{root.source}: outgoing_pools.http.auth.connection.host: is required when auth.methods "
                f'includes "http", e.g. [outgoing_pools.http.auth] connection.host = "https://auth.example:8000"'
            )
        return None
    host = connection.string("host", None)
    assert host is not None
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        connection.fail(connection.key("host"), f'{host!r} must look like "https://host:port"')
    if parts.username or parts.password:
        connection.fail(connection.key("host"), "must not contain credentials; use auth.http.basic_auth")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        connection.fail(connection.key("host"), "must not contain a path; use connection.path_prefix")
    prefix = connection.string("path_prefix", "/")
    assert prefix is not None
    if not prefix.startswith("/"):
        connection.fail(connection.key("path_prefix"), f"{prefix!r} must start with '/'")
    if not prefix.endswith("/"):
        prefix += "/"
    if "http" not in methods:
        logger.info(
            '%s: outgoing_pools.http.auth is set but auth.methods does not include "http"', root.source
        )
    return HttpAuthOptions(
        host=host.rstrip("/"),
        path_prefix=prefix,
        request_timeout_ms=connection.integer("request_timeout", 2000, 1),
        basic_auth=basic_auth,
    )


_LDAP_CONNECTION_KEYS = ("servers", "port", "rootdn", "password", "encrypt", "tls", "connect_interval")
_LDAP_TLS_KEYS = ("verify_mode", "verify_peer", "cacertfile", "certfile", "keyfile")


def _parse_ldap_pool(pool: _Table) -> LdapPoolOptions:
    connection = pool.table("connection", _LDAP_CONNECTION_KEYS)
    if connection is None:
        connection = _Table({}, pool.key("connection"), pool.source, pool.base_dir, _LDAP_CONNECTION_KEYS)
    tls = connection.table("tls", _LDAP_TLS_KEYS)
    encrypt = connection.choice("encrypt", "tls" if tls is not None else "none", LDAP_ENCRYPT)
    verify_peer = True
    cacertfile = certfile = keyfile = None
    if tls is not None:
        if encrypt == "none":
            tls.fail(tls.path, 'is set but connection.encrypt = "none"; remove one of them')
        if tls.has("verify_mode") and tls.has("verify_peer"):
            tls.fail(tls.key("verify_peer"), "give either verify_mode or verify_peer (the older spelling)")
        verify_peer = tls.choice("verify_mode", "peer", ("peer", "none")) == "peer"
        verify_peer = tls.boolean("verify_peer", verify_peer)
        if not verify_peer:
            # A trust input turned off: anyone on the path to the directory can answer for it. Allowed, said.
            logger.warning(
                "%s: %s: the directory's certificate is not verified (verify_mode none): anyone on the path "
                "can answer as the directory, and decide who logs in",
                pool.source,
                tls.path,
            )
        cacertfile, certfile, keyfile = tls.file("cacertfile"), tls.file("certfile"), tls.file("keyfile")
        for name, path in (("cacertfile", cacertfile), ("certfile", certfile), ("keyfile", keyfile)):
            if path is not None and not os.path.isfile(path):
                tls.fail(tls.key(name), f"{path} is not a readable file")
        if (certfile is None) != (keyfile is None):
            tls.fail(tls.key("certfile"), "certfile and keyfile go together")
    for key in ("strategy", "scope"):
        if pool.has(key):
            logger.info(
                "%s: %s is a MongooseIM option xmppauth does not use; ignored", pool.source, pool.key(key)
            )
    port = connection.integer("port", 0, 1, 65535) if connection.has("port") else None
    return LdapPoolOptions(
        servers=connection.strings("servers", ("localhost",)),
        port=port,
        rootdn=connection.string("rootdn", "") or "",
        password=connection.string("password", "") or "",
        encrypt=encrypt,
        tls_verify_peer=verify_peer,
        tls_cacertfile=cacertfile,
        tls_certfile=certfile,
        tls_keyfile=keyfile,
        workers=pool.integer("workers", 10, 1, 1000),
        call_timeout_ms=pool.integer("call_timeout", 5000, 1),
        connect_interval_ms=connection.integer("connect_interval", 10000, 0),
    )


def _parse_ldap(root: _Table, auth: _Table | None, methods: tuple[str, ...]) -> LdapAuthOptions | None:
    """``[auth.ldap]`` and ``[outgoing_pools.ldap.<tag>]`` (MongooseIM doc/authentication-methods/ldap.md)."""
    ldap_auth = (
        auth.table(
            "ldap",
            (
                "base",
                "uids",
                "filter",
                "dn_filter",
                "local_filter",
                "deref",
                "pool_tag",
                "bind_pool_tag",
                "match_certificate",
                "certificate_attribute",
            ),
        )
        if auth is not None
        else None
    )
    outgoing = root.table("outgoing_pools", ("http", "ldap"))
    ldap_pools = outgoing.data.get("ldap") if outgoing is not None else None
    if "ldap" not in methods:
        if ldap_auth is not None or ldap_pools is not None:
            logger.info(
                '%s: auth.ldap or outgoing_pools.ldap is set but auth.methods does not include "ldap"',
                root.source,
            )
        return None
    if ldap_auth is None or not ldap_auth.has("base"):
        raise ConfigError(
            f'{root.source}: auth.ldap.base: is required when auth.methods includes "ldap", '
            'e.g. [auth.ldap] base = "ou=Users,dc=example,dc=com"'
        )
    base = ldap_auth.string("base", None) or ""
    uids: list[tuple[str, str]] = []
    for index, entry in enumerate(
        ldap_auth.entries("uids", ("attr", "format")) if ldap_auth.has("uids") else []
    ):
        attr = entry.string("attr", None)
        if attr is None:
            entry.fail(entry.key("attr"), "is required")
        fmt = entry.string("format", "%u") or "%u"
        if fmt.count("%u") != 1:
            entry.fail(entry.key("format"), f"{fmt!r} must contain %u exactly once")
        uids.append((attr, fmt))
        del index
    filter_ = ldap_auth.string("filter", None)
    if filter_ is not None and not (filter_.startswith("(") and filter_.endswith(")")):
        ldap_auth.fail(
            ldap_auth.key("filter"), f"{filter_!r} must be an LDAP filter in parentheses (RFC 4515)"
        )
    dn_filter = None
    dn_table = ldap_auth.table("dn_filter", ("filter", "attributes"))
    if dn_table is not None:
        dn_query = dn_table.string("filter", None)
        if dn_query is None:
            dn_table.fail(dn_table.key("filter"), "is required")
        dn_filter = LdapDnFilter(dn_query, dn_table.strings("attributes", ()))
    local_filter = None
    local_table = ldap_auth.table("local_filter", ("operation", "attribute", "values"))
    if local_table is not None:
        attribute = local_table.string("attribute", None)
        if attribute is None:
            local_table.fail(local_table.key("attribute"), "is required")
        local_filter = LdapLocalFilter(
            local_table.choice("operation", "equal", LDAP_LOCAL_FILTER_OPERATIONS),
            attribute,
            local_table.strings("values", ()),
        )
    pool_tag = ldap_auth.string("pool_tag", "default") or "default"
    bind_pool_tag = ldap_auth.string("bind_pool_tag", "bind") or "bind"
    pools: list[tuple[str, LdapPoolOptions]] = []
    if ldap_pools is not None:
        if not isinstance(ldap_pools, dict):
            raise ConfigError(
                f"{root.source}: outgoing_pools.ldap: expected tables [outgoing_pools.ldap.<tag>]"
            )
        for tag in ldap_pools:
            pool = _Table(
                ldap_pools[tag],
                f"outgoing_pools.ldap.{tag}",
                root.source,
                root.base_dir,
                ("workers", "call_timeout", "connection", "strategy", "scope"),
            )
            pools.append((tag, _parse_ldap_pool(pool)))
    if pool_tag not in dict(pools):
        raise ConfigError(
            f'{root.source}: outgoing_pools.ldap.{pool_tag}: is required when auth.methods includes "ldap" '
            f'(auth.ldap.pool_tag = "{pool_tag}"), e.g. [outgoing_pools.ldap.{pool_tag}] '
            'connection.servers = ["ldap.example.com"]'
        )
    return LdapAuthOptions(
        base=base,
        pools=tuple(pools),
        uids=tuple(uids) or (("uid", "%u"),),
        filter=filter_,
        dn_filter=dn_filter,
        local_filter=local_filter,
        deref=ldap_auth.choice("deref", "never", LDAP_DEREF),
        pool_tag=pool_tag,
        bind_pool_tag=bind_pool_tag,
        match_certificate=ldap_auth.boolean("match_certificate", False),
        certificate_attribute=ldap_auth.string("certificate_attribute", "userCertificate;binary") or "",
    )


def _served(mechanism: str, methods: Sequence[str]) -> bool:
    """Whether one of ``methods`` can serve the SASL ``mechanism`` (what each registered method serves)."""
    family = mechanism_family(mechanism)
    return any(method in AUTH_METHODS and family in AUTH_METHODS[method].serves for method in methods)


def _serving(mechanism: str) -> str:
    """For an error line: which registered methods would serve ``mechanism``."""
    family = mechanism_family(mechanism)
    names = ", ".join(name for name, method in AUTH_METHODS.items() if family in method.serves)
    return f"{'EXTERNAL needs' if family == EXTERNAL else 'passwords need'} one of {names}"


def _parse_auth(root: _Table) -> AuthConfig:
    auth = root.table(
        "auth",
        (
            "methods",
            "method",
            "sasl_mechanisms",
            "sasl_external",
            "sasl_external_common_name",
            "http",
            "password",
            "ldap",
        ),
    )
    defaults = AuthConfig()
    if auth is None:
        return AuthConfig(http=_parse_http_auth(root, None, defaults.methods))

    if auth.has("methods") and auth.has("method"):
        auth.fail(auth.key("method"), "give either methods or method (the older spelling), not both")
    name = "method" if auth.has("method") else "methods"
    methods = auth.strings(name, defaults.methods)
    if not methods:
        auth.fail(auth.key(name), f"must name at least one method; accepted: {', '.join(AUTH_METHODS)}")
    methods = tuple(canonical_name(method) for method in methods)  # MongooseIM's internal is rdbms
    if len(set(methods)) != len(methods):
        auth.fail(auth.key(name), "names the same method twice (internal is rdbms)")
    for index, method in enumerate(methods):  # against the registry of certauth.authmethods
        if method not in AUTH_METHODS:
            auth.fail(
                f"{auth.key(name)}[{index}]",
                f"unknown method {method!r}; accepted: {', '.join(AUTH_METHODS)}",
            )
        if not AUTH_METHODS[method].implemented:
            auth.fail(
                f"{auth.key(name)}[{index}]",
                f"{method!r} is a MongooseIM method xmppauth does not implement yet; "
                f"use {', '.join(m for m, cls in AUTH_METHODS.items() if cls.implemented)}",
            )

    served_default = tuple(m for m in DEFAULT_MECHANISM_ORDER if _served(m, methods))
    mechanisms = auth.strings("sasl_mechanisms", served_default)
    if not mechanisms:
        auth.fail(auth.key("sasl_mechanisms"), "must name at least one mechanism")
    for index, mechanism in enumerate(mechanisms):
        if mechanism in UNSUPPORTED_SASL_MECHANISMS:
            auth.fail(
                f"{auth.key('sasl_mechanisms')}[{index}]",
                f"{mechanism!r} is a MongooseIM mechanism xmppauth does not implement; "
                f"accepted: {', '.join(SASL_MECHANISMS)}",
            )
        if mechanism not in SASL_MECHANISMS:
            auth.fail(
                f"{auth.key('sasl_mechanisms')}[{index}]",
                f"unknown mechanism {mechanism!r}; accepted: {', '.join(SASL_MECHANISMS)}",
            )
    for index, mechanism in enumerate(mechanisms):
        if not _served(mechanism, methods):
            # Issue 14 §5: a mechanism that would never be offered stops start-up instead of vanishing.
            auth.fail(
                f"{auth.key('sasl_mechanisms')}[{index}]",
                f"{mechanism!r} is served by none of auth.methods ({', '.join(methods)}); "
                + _serving(mechanism),
            )
    # [auth.password] shapes the SCRAM keys we store: only a method that keeps them (rdbms) uses it.
    if auth.has("password") and not any(SCRAM in AUTH_METHODS[method].serves for method in methods):
        logger.warning(
            "%s: auth.password is set but auth.methods (%s) checks no password; it is not used",
            root.source,
            ", ".join(methods),
        )

    verifiers = auth.strings("sasl_external", defaults.sasl_external)
    if not verifiers:
        auth.fail(auth.key("sasl_external"), "must name at least one verifier")
    for index, verifier in enumerate(verifiers):  # against the registry of certauth.identity
        if verifier not in VERIFIERS and not _DOTTED_PYTHON_PATH.match(verifier):
            auth.fail(
                f"{auth.key('sasl_external')}[{index}]",
                f"unknown verifier {verifier!r}; accepted: {', '.join(VERIFIERS)} "
                'or a dotted Python path to a callable (e.g. "mypackage.verifiers.verify"; it is imported '
                "when a server process starts)",
            )
        if verifier in VERIFIERS and VERIFIERS[verifier].development_only:
            logger.warning(
                '%s: auth.sasl_external includes "%s": the client\'s authzid is trusted as is; '
                "use this for development only",
                root.source,
                verifier,
            )

    common_name = auth.table("sasl_external_common_name", ("prefix", "suffix"))
    prefix = suffix = ""
    if common_name is not None:
        prefix = _optional_string(common_name, "prefix")
        suffix = _optional_string(common_name, "suffix")

    return AuthConfig(
        methods=methods,
        sasl_mechanisms=mechanisms,
        sasl_external=verifiers,
        common_name_prefix=prefix,
        common_name_suffix=suffix,
        http=_parse_http_auth(root, auth, methods),
        password=_parse_password(auth, mechanisms),
        ldap=_parse_ldap(root, auth, methods),
    )


def _mechanism_hash(mechanism: str) -> str | None:
    """``scram_sha256_plus`` -> ``sha256``, ``scram_sha1`` -> ``sha`` (MongooseIM's hash names)."""
    if not mechanism.startswith("scram_"):
        return None
    name = mechanism.removeprefix("scram_").removesuffix("_plus")
    return "sha" if name == "sha1" else name


def _parse_password(auth: _Table, mechanisms: tuple[str, ...]) -> PasswordOptions:
    defaults = PasswordOptions()
    table = auth.table("password", ("format", "hash", "scram_iterations"))
    if table is None:
        return defaults
    password_format = table.string("format", defaults.format)
    if password_format != "scram":
        table.fail(
            table.key("format"),
            f"{password_format!r} is not supported: xmppauth keeps passwords only as SCRAM salted keys;"
            ' use "scram"',
        )
    hashes = table.strings("hash", defaults.hashes)
    if not hashes:
        table.fail(table.key("hash"), f"must name at least one hash; accepted: {', '.join(PASSWORD_HASHES)}")
    for index, name in enumerate(hashes):
        if name not in PASSWORD_HASHES:
            table.fail(
                f"{table.key('hash')}[{index}]",
                f"unknown hash {name!r}; accepted: {', '.join(PASSWORD_HASHES)}",
            )
    for mechanism in mechanisms:
        wanted = _mechanism_hash(mechanism)
        if wanted is not None and wanted not in hashes:
            table.fail(
                table.key("hash"),
                f"auth.sasl_mechanisms lists {mechanism!r} but no {wanted!r} keys are stored; add {wanted!r}",
            )
    iterations = table.integer(
        "scram_iterations", defaults.scram_iterations, SCRAM_ITERATIONS_MIN, 10_000_000
    )
    return PasswordOptions(format=password_format, hashes=hashes, scram_iterations=iterations)


def _optional_string(table: _Table, name: str) -> str:
    """A string that may be empty (``prefix = ""``)."""
    if not table.has(name):
        return ""
    return table._typed(name, str, "a string")


def _parse_options(root: _Table) -> XmppauthOptions:
    defaults = XmppauthOptions()
    table = root.table(
        "xmppauth",
        (
            "trusted_proxies",
            "crl_grace_seconds",
            "crl_fail_open",
            "crl_fetch_timeout_seconds",
            "crl_refresh_min_seconds",
            "crl_refresh_max_seconds",
            "ping_interval_seconds",
            "session_lease_seconds",
            "process_liveness_seconds",
            "max_offline_messages",
            "session_queue_stanzas",
            "session_queue_bytes",
            "max_connections_per_address",
            "auth_failures_per_minute",
            "auth_failure_delay_seconds",
            "auth_events_per_minute",
            "auth_event_retention_days",
            "require_revocation",
            "admin_requires_certificate",
            "crl_base_url",
            "certificate_expiry_warning_days",
            "metrics_path",
        ),
    )
    if table is None:
        return defaults
    networks: list[IpNetwork] = []
    for index, value in enumerate(table.strings("trusted_proxies", ())):
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            table.fail(
                f"{table.key('trusted_proxies')}[{index}]",
                f'{value!r} is not an IP address or network (e.g. "10.0.0.5", "10.0.0.0/8")',
            )
    refresh_min = table.integer("crl_refresh_min_seconds", defaults.crl_refresh_min_seconds, 1)
    refresh_max = table.integer("crl_refresh_max_seconds", defaults.crl_refresh_max_seconds, 1)
    if refresh_max < refresh_min:
        table.fail(
            table.key("crl_refresh_max_seconds"),
            f"{refresh_max} is below crl_refresh_min_seconds ({refresh_min})",
        )
    return XmppauthOptions(
        trusted_proxies=tuple(networks),
        crl_grace_seconds=table.integer("crl_grace_seconds", defaults.crl_grace_seconds, 0),
        crl_fail_open=table.boolean("crl_fail_open", defaults.crl_fail_open),
        crl_refresh_min_seconds=refresh_min,
        crl_refresh_max_seconds=refresh_max,
        ping_interval_seconds=table.integer("ping_interval_seconds", defaults.ping_interval_seconds, 0),
        session_lease_seconds=table.integer("session_lease_seconds", defaults.session_lease_seconds, 1),
        process_liveness_seconds=table.integer(
            "process_liveness_seconds", defaults.process_liveness_seconds, 2
        ),
        **{
            name: table.integer(name, getattr(defaults, name), minimum)
            for name, minimum in (
                ("crl_fetch_timeout_seconds", 1),
                ("max_offline_messages", 0),
                ("session_queue_stanzas", 1),
                ("session_queue_bytes", 1024),
                ("max_connections_per_address", 0),
                ("auth_failures_per_minute", 0),
                ("auth_failure_delay_seconds", 0),
                ("auth_events_per_minute", 1),
                ("auth_event_retention_days", 1),
                ("certificate_expiry_warning_days", 1),
            )
        },
        require_revocation=table.boolean("require_revocation", defaults.require_revocation),
        admin_requires_certificate=table.boolean(
            "admin_requires_certificate", defaults.admin_requires_certificate
        ),
        crl_base_url=table.string("crl_base_url", None),
        metrics_path=_optional_string(table, "metrics_path")
        if table.has("metrics_path")
        else defaults.metrics_path,
    )


RESERVED_URL_PREFIXES = ("/admin/", "/crl/", "/static/")  # xmppauth/urls.py, settings.STATIC_URL


def _check_metrics_path(root: _Table, metrics_path: str, listen_http: tuple[HttpListener, ...]) -> None:
    """``xmppauth.metrics_path`` is a path of its own: not the admin's, our CRLs', nor an XMPP handler's."""
    if not metrics_path:
        return
    key = "xmppauth.metrics_path"
    if not metrics_path.startswith("/") or metrics_path == "/" or any(c in metrics_path for c in " ?#\t\n"):
        root.fail(key, f'{metrics_path!r} must be a URL path such as "/metrics" (or "" for no endpoint)')
    as_prefix = metrics_path.rstrip("/") + "/"
    for prefix in RESERVED_URL_PREFIXES:
        if as_prefix.startswith(prefix) or prefix.startswith(as_prefix):
            root.fail(
                key, f"{metrics_path!r} overlaps {prefix}, which the admin, our CRLs or static files use"
            )
    handler_paths = {h.path.rstrip("/") for listener in listen_http for h in listener.handlers}
    if metrics_path.rstrip("/") in handler_paths:
        root.fail(key, f"{metrics_path!r} is a WebSocket or BOSH handler's path")


def _check_crl_base_url(root: _Table, base_url: str | None, listen_http: tuple[HttpListener, ...]) -> None:
    """``xmppauth.crl_base_url`` must name a place we serve to anyone: a plain-HTTP listener's port."""
    if base_url is None:
        return
    key = "xmppauth.crl_base_url"
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        root.fail(
            key,
            f'{base_url!r} must look like "http://host[:port]": our CRLs are served over plain HTTP, as RFC '
            "5280 §4.2.1.13 distribution points usually are, so no client certificate is asked for",
        )
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        root.fail(key, f"{base_url!r} must be scheme, host and port only (the CRLs are at /crl/<id>.crl)")
    try:
        port = parts.port or 80
    except ValueError:
        root.fail(key, f"{base_url!r} has an invalid port")
    if not any(li.tls is None and li.port == port for li in listen_http):
        root.fail(
            key,
            f"{base_url!r} names port {port}, but no [[listen.http]] without tls listens there; add "
            f"one, e.g. [[listen.http]] port = {port}, crl_only = true",
        )


# --- entry points ---------------------------------------------------------------------------------------


def parse_config(data: dict, source: str = "<string>", base_dir: str | Path | None = None) -> Config:
    """Check and convert a parsed TOML document; ``base_dir`` anchors relative paths.

    Without ``base_dir``, relative paths are resolved against the directory of ``source`` when it names a
    file, else against the current directory.
    """
    if base_dir is None:
        base_dir = Path(source).parent if not source.startswith("<") else Path.cwd()
    root = _Table(
        data,
        "",
        source,
        Path(base_dir).absolute(),
        ("general", "listen", "auth", "outgoing_pools", "xmppauth"),
    )
    hosts = _parse_hosts(root)
    listen_c2s, listen_http = _parse_listen(root, hosts)
    options = _parse_options(root)
    _check_proxy_trust(root, listen_http, options)
    _check_crl_base_url(root, options.crl_base_url, listen_http)
    _check_metrics_path(root, options.metrics_path, listen_http)
    config = Config(
        hosts=hosts,
        listen_c2s=listen_c2s,
        listen_http=listen_http,
        auth=_parse_auth(root),
        source=source,
        options=options,
    )
    _warn_listeners_without_login(root, config)
    return config


def _listener_key(root: _Table, kind: str, index: int) -> str:
    """``listen.c2s`` for a single ``[listen.c2s]`` table, ``listen.c2s[1]`` in an array of tables."""
    entries = (root.data.get("listen") or {}).get(kind)
    return f"listen.{kind}[{index}]" if isinstance(entries, list) else f"listen.{kind}"


def _warn_listeners_without_login(root: _Table, config: Config) -> None:
    """One warning line per listener where nobody can log in: ``tls.verify_mode = "none"`` requests no client
    certificate (so no SASL EXTERNAL there, as MongooseIM) and no other configured mechanism is served."""
    auth = config.auth
    if any(m != "external" and _served(m, auth.methods) for m in auth.sasl_mechanisms):
        return
    groups: list[tuple[str, Sequence[C2SListener | HttpListener]]] = [("c2s", config.listen_c2s)]
    if any(listener.handlers for listener in config.listen_http):  # their paths are served on every listener
        groups.append(("http", config.listen_http))
    for kind, listeners in groups:
        for index, listener in enumerate(listeners):
            if listener.tls is None or VERIFY_MODES[listener.tls.verify_mode].requests_certificate:
                continue
            logger.warning(
                '%s: %s (%s): tls.verify_mode = "none" requests no client certificate and SASL EXTERNAL is '
                "the only usable mechanism (auth.sasl_mechanisms): nobody can log in on this listener",
                root.source,
                _listener_key(root, kind, index),
                _address(listener.ip_address, listener.port),
            )


def _check_proxy_trust(root: _Table, listen_http: tuple[HttpListener, ...], options: XmppauthOptions) -> None:
    """The client-certificate header needs both halves: a plain listener declared behind a TLS-terminating
    proxy, and the proxy's addresses. Either one alone would be an option that does nothing."""
    behind = [index for index, listener in enumerate(listen_http) if listener.behind_tls_proxy]
    if behind and not options.trusted_proxies:
        root.fail(
            f"listen.http[{behind[0]}].behind_tls_proxy",
            "needs the proxy's addresses in [xmppauth] trusted_proxies",
        )
    if options.trusted_proxies and not behind:
        root.fail(
            "xmppauth.trusted_proxies",
            "no [[listen.http]] has behind_tls_proxy = true, so no listener would honour the proxy's header",
        )


def load_config(path: str | Path) -> Config:
    """Read and check the TOML file at ``path``; any problem is a :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found (set XMPPAUTH_CONFIG)") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path), base_dir=path.absolute().parent)


def _describe_tls(tls: TlsOptions | None, plain: str) -> str:
    if tls is None:
        return plain
    cert = "bootstrap cert" if tls.certfile is None else "own cert"
    failure = "" if tls.disconnect_on_failure else ", keep on bad cert"
    crls = f", {len(tls.crl_files)} CRL file(s)" if tls.crl_files else ""
    domains = f", cacertfile CAs for {','.join(tls.cacert_domains)} only" if tls.cacert_domains else ""
    return f"{tls.mode} verify={tls.verify_mode}{failure}, {cert}{crls}{domains}"


def _describe_handlers(listener: HttpListener) -> str:
    if listener.crl_only:
        return "CRLs only"
    return ", ".join(f"{h.kind} {h.path}" for h in listener.handlers) or "no handlers"


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def describe(config: Config) -> str:
    """One line for the start-up log: what is listening and how users authenticate (no secrets)."""
    c2s = "; ".join(
        f"{_address(li.ip_address, li.port)} {_describe_tls(li.tls, 'plain, no TLS')}"
        for li in config.listen_c2s
    )
    http = "; ".join(
        f"{_address(li.ip_address, li.port)} {_describe_tls(li.tls, 'plain http')} [{_describe_handlers(li)}]"
        for li in config.listen_http
    )
    auth = config.auth
    parts = [
        f"config {config.source}",
        f"hosts {', '.join(config.hosts)}",
        f"c2s {c2s or 'none'}",
        f"http {http or 'none'}",
        f"auth methods={','.join(auth.methods)} sasl={','.join(auth.sasl_mechanisms)} "
        f"external={','.join(auth.sasl_external)}",
    ]
    if auth.http is not None:
        parts.append(f"http auth {auth.http.base_url}")
    if config.options.trusted_proxies:
        parts.append(f"trusted proxies {', '.join(str(n) for n in config.options.trusted_proxies)}")
    return " | ".join(parts)
