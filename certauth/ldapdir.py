"""The LDAP directory behind auth method ``ldap``: find a user, check a password by bind, list certificates.

Semantics after MongooseIM's LDAP method (``doc/authentication-methods/ldap.md``): a user is the one entry
under ``auth.ldap.base`` that matches one of ``auth.ldap.uids`` (attribute + ``%u`` format), ANDed with
``auth.ldap.filter``; ``dn_filter`` and ``local_filter`` narrow it further. A password is checked by a simple
bind as the entry's DN on the ``bind`` pool (RFC 4513 §5.1.3); EXTERNAL asks only that the entry exist, and,
with our ``match_certificate`` option, that one of its ``userCertificate;binary`` values (RFC 4523 §2.1) be
the client's certificate byte for byte.

Client library: python-ldap (OpenLDAP's own libldap, maintained, LDAPS and StartTLS with per-connection TLS
options, network and operation timeouts). Its calls block; they run in the threads the adapters already use
for the database (never on an event loop). A directory that cannot be reached raises
:class:`DirectoryUnavailable`, which the login turns into ``temporary-auth-failure`` (fail closed, RFC 6120
§6.5.12); a server that failed is not tried again for ``connect_interval`` so a dead directory answers fast.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import ldap
from ldap.filter import escape_filter_chars
from ldap.ldapobject import LDAPObject

from xmppauth.config import LdapAuthOptions, LdapPoolOptions

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEREF = {
    "never": ldap.DEREF_NEVER,
    "always": ldap.DEREF_ALWAYS,
    "finding": ldap.DEREF_FINDING,
    "searching": ldap.DEREF_SEARCHING,
}
# Errors that say "the directory is not there or not answering", as opposed to a verdict on the user.
_UNREACHABLE = (
    ldap.SERVER_DOWN,
    ldap.TIMEOUT,
    ldap.CONNECT_ERROR,
    ldap.UNAVAILABLE,
    ldap.BUSY,
    ldap.TIMELIMIT_EXCEEDED,
)


class DirectoryUnavailable(Exception):
    """No server of the pool answered (down, timed out, TLS refused, our bind DN refused)."""


@dataclass(frozen=True)
class DirectoryEntry:
    dn: str
    attributes: dict[str, list[bytes]] = field(repr=False)

    def values(self, name: str) -> list[bytes]:
        wanted = name.lower()
        return [v for key, vs in self.attributes.items() if key.lower() == wanted for v in vs]


class LdapPool:
    """Up to ``workers`` connections to the first server that answers; thread-safe.

    ``bound_as_root``: the search pool binds as ``rootdn`` (or stays anonymous without one); the bind pool's
    connections are re-bound for each password check, so they are used for nothing else (MongooseIM's
    ``bind`` pool).
    """

    def __init__(self, options: LdapPoolOptions, *, name: str) -> None:
        self.options = options
        self.name = name
        self._idle: queue.LifoQueue[LDAPObject] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(options.workers)
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._url_of: dict[int, str] = {}

    @property
    def timeout(self) -> float:
        return self.options.call_timeout_ms / 1000

    def _urls(self) -> list[str]:
        scheme = "ldaps" if self.options.encrypt == "tls" else "ldap"
        return [f"{scheme}://{server}:{self.options.effective_port}" for server in self.options.servers]

    def _open(self) -> LDAPObject:
        """A new bound connection to the first server not in its back-off; DirectoryUnavailable if none."""
        reasons: list[str] = []
        now = time.monotonic()
        for url in self._urls():
            with self._lock:
                failed = self._failed_at.get(url)
            if failed is not None and now - failed < self.options.connect_interval_ms / 1000:
                reasons.append(f"{url}: failed {now - failed:.1f} s ago, retried after connect_interval")
                continue
            try:
                connection = self._connect(url)
            except ldap.INVALID_CREDENTIALS:
                with self._lock:
                    self._failed_at[url] = time.monotonic()
                reasons.append(f"{url}: the directory refused rootdn's password")
                continue
            except (*_UNREACHABLE, ldap.LDAPError, OSError) as exc:
                with self._lock:
                    self._failed_at[url] = time.monotonic()
                reasons.append(f"{url}: {_describe(exc)}")
                continue
            with self._lock:
                self._failed_at.pop(url, None)
            self._url_of[id(connection)] = url
            return connection
        raise DirectoryUnavailable(f"LDAP pool {self.name}: " + "; ".join(reasons))

    def _connect(self, url: str) -> LDAPObject:
        options = self.options
        connection = ldap.initialize(url)
        connection.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        connection.set_option(ldap.OPT_REFERRALS, 0)
        connection.set_option(ldap.OPT_NETWORK_TIMEOUT, self.timeout)
        connection.set_option(ldap.OPT_TIMEOUT, self.timeout)
        if options.encrypt in ("tls", "starttls"):
            require = ldap.OPT_X_TLS_DEMAND if options.tls_verify_peer else ldap.OPT_X_TLS_NEVER
            connection.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, require)
            if options.tls_cacertfile:
                connection.set_option(ldap.OPT_X_TLS_CACERTFILE, options.tls_cacertfile)
            if options.tls_certfile:
                connection.set_option(ldap.OPT_X_TLS_CERTFILE, options.tls_certfile)
            if options.tls_keyfile:
                connection.set_option(ldap.OPT_X_TLS_KEYFILE, options.tls_keyfile)
            connection.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # last: applies the options above
        if options.encrypt == "starttls":
            connection.start_tls_s()  # RFC 4511 §4.14
        connection.simple_bind_s(options.rootdn, options.password)
        return connection

    def run(self, operation: Callable[[LDAPObject], T]) -> T:
        """``operation`` on a pooled connection. An idle connection the server dropped (it restarted) is
        replaced once by a fresh one; a server that fails an operation is marked failed (connect_interval)."""
        if not self._slots.acquire(timeout=self.timeout):
            raise DirectoryUnavailable(f"LDAP pool {self.name}: all {self.options.workers} workers busy")
        try:
            for attempt in (1, 2):
                try:
                    connection, reused = self._idle.get_nowait(), True
                except queue.Empty:
                    connection, reused = self._open(), False
                try:
                    result = operation(connection)
                except _UNREACHABLE as exc:
                    _close(connection)
                    if reused and attempt == 1:
                        continue
                    self._mark_failed(connection)
                    raise DirectoryUnavailable(f"LDAP pool {self.name}: {_describe(exc)}") from exc
                except BaseException:
                    _close(connection)
                    raise
                self._idle.put(connection)
                return result
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def _mark_failed(self, connection: LDAPObject) -> None:
        url = self._url_of.pop(id(connection), None)
        if url is not None:
            with self._lock:
                self._failed_at[url] = time.monotonic()

    def close(self) -> None:
        while True:
            try:
                _close(self._idle.get_nowait())
            except queue.Empty:
                return


class Directory:
    """The users of ``auth.ldap``: :meth:`find_user`, :meth:`check_password`."""

    def __init__(self, auth: LdapAuthOptions, search_pool: LdapPool, bind_pool: LdapPool | None) -> None:
        self.auth = auth
        self.search_pool = search_pool
        self.bind_pool = bind_pool

    def user_filter(self, localpart: str) -> str:
        """``(&<filter>(|(<attr>=<format with %u>)...))``, every value escaped (RFC 4515 §3)."""
        alternatives = "".join(
            f"({attr}={escape_filter_chars(fmt.replace('%u', localpart))})" for attr, fmt in self.auth.uids
        )
        users = f"(|{alternatives})" if len(self.auth.uids) > 1 else alternatives
        return f"(&{self.auth.filter}{users})" if self.auth.filter else users

    def find_user(self, localpart: str, domain: str) -> DirectoryEntry | None:
        """The user's entry, or None when there is none (or more than one: ambiguous is refused)."""
        entries = self._search(self.auth.base, self.user_filter(localpart), None)
        entries = [entry for entry in entries if self._local_filter_passes(entry)]
        if self.auth.dn_filter is not None:
            entries = [entry for entry in entries if self._dn_filter_passes(entry, localpart, domain)]
        if len(entries) != 1:
            if len(entries) > 1:
                logger.warning(
                    "LDAP: %d entries match %s; refusing an ambiguous user", len(entries), localpart
                )
            return None
        return entries[0]

    def check_password(
        self, localpart: str, domain: str, password: str
    ) -> tuple[DirectoryEntry | None, bool]:
        """(the user's entry or None, whether ``password`` binds as it).

        An empty password never binds: a simple bind with one is an unauthenticated bind, which servers
        accept (RFC 4513 §5.1.2).
        """
        entry = self.find_user(localpart, domain)
        if entry is None or not password:
            return entry, False
        pool = self.bind_pool or self.search_pool
        if pool is self.search_pool:
            # Without a bind pool a fresh connection is used and closed: a search connection must keep rootdn.
            connection = pool._open()
            try:
                return entry, _binds(connection, entry.dn, password)
            except _UNREACHABLE as exc:
                raise DirectoryUnavailable(f"LDAP pool {pool.name}: {_describe(exc)}") from exc
            finally:
                _close(connection)
        return entry, pool.run(lambda connection: _binds(connection, entry.dn, password))

    def _search(self, base: str, query: str, attributes: Sequence[str] | None) -> list[DirectoryEntry]:
        def search(connection: LDAPObject) -> list[tuple[str, dict[str, list[bytes]]]]:
            connection.set_option(ldap.OPT_DEREF, DEREF[self.auth.deref])
            try:
                return connection.search_st(
                    base, ldap.SCOPE_SUBTREE, query, attributes, timeout=self.search_pool.timeout
                )
            except ldap.NO_SUCH_OBJECT:
                return []

        results = self.search_pool.run(search)
        return [DirectoryEntry(dn, dict(attrs)) for dn, attrs in results if dn]

    def _local_filter_passes(self, entry: DirectoryEntry) -> bool:
        rule = self.auth.local_filter
        if rule is None:
            return True
        values = {value.decode("utf-8", "replace") for value in entry.values(rule.attribute)}
        matched = bool(values & set(rule.values))
        return matched if rule.operation == "equal" else not matched

    def _dn_filter_passes(self, entry: DirectoryEntry, localpart: str, domain: str) -> bool:
        rule = self.auth.dn_filter
        assert rule is not None
        query = rule.filter.replace("%u", escape_filter_chars(localpart)).replace(
            "%d", escape_filter_chars(domain)
        )
        query = query.replace("%D", escape_filter_chars(entry.dn))
        for attribute in rule.attributes:
            first = (entry.values(attribute) or [b""])[0].decode("utf-8", "replace")
            query = query.replace("%s", escape_filter_chars(first), 1)
        return bool(self._search(self.auth.base, query, ["1.1"]))


def _binds(connection: LDAPObject, dn: str, password: str) -> bool:
    try:
        connection.simple_bind_s(dn, password)
    except ldap.INVALID_CREDENTIALS:
        return False
    except ldap.UNWILLING_TO_PERFORM:  # e.g. a locked account
        return False
    return True


def _close(connection: LDAPObject) -> None:
    try:
        connection.unbind_s()
    except ldap.LDAPError:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ldap.LDAPError) and exc.args and isinstance(exc.args[0], dict):
        info = exc.args[0]
        return " ".join(str(part) for part in (info.get("desc"), info.get("info")) if part)
    return str(exc) or type(exc).__name__


@functools.cache
def directory_for(auth: LdapAuthOptions) -> Directory:
    """This process's directory for ``auth`` (its pools open connections lazily, so forking is safe)."""
    search = auth.pool(auth.pool_tag)
    if search is None:  # xmppauth.config refuses this already; kept for configs built in code
        raise ValueError(f"outgoing_pools.ldap.{auth.pool_tag} is not configured")
    bind = auth.pool(auth.bind_pool_tag)
    return Directory(
        auth,
        LdapPool(search, name=auth.pool_tag),
        LdapPool(bind, name=auth.bind_pool_tag) if bind is not None else None,
    )
