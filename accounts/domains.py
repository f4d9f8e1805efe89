"""Which XMPP domains this server hosts: one rule, asked by the stream core, the authenticator and the router.

A domain is hosted when it is one of the config's ``[general] hosts`` and no ``Domain`` row an admin disabled
names it. Nothing else is hosted: a ``Domain`` row for a name the config does not list serves nobody (the
config says what this server answers for; RFC 6120 §4.9.3.6 ``host-unknown`` for anything else), and a row
for a config host only matters when it is disabled. Each config host gets a row (:func:`ensure_rows`), so the
admin can disable it and accounts can hang off it.

- The stream core asks at stream open (``transport.xmpp.connection``: ``host-unknown`` otherwise, on TCP,
  WebSocket and BOSH alike), through :func:`checker`, which the adapters hand it.
- ``certauth.authenticator`` asks at SASL time (EXTERNAL and passwords: ``not-authorized`` otherwise).
- ``transport.im.router`` asks for every stanza's destination (``remote-server-not-found`` otherwise).

The disabled names are read once and kept under ``accounts.changefeed``'s generation: a change to a
``Domain`` row (save, delete, ``QuerySet.update()``), in this process or another, bumps the feed in its own
transaction, so it applies here at once and in every other process to every decision taken more than
``changefeed.POLL_INTERVAL`` after it was committed; while the feed is unchanged no statement is run for the
names. Django refuses queries on an event-loop thread (daphne's asyncio loop, Twisted running on it): when the
feed is stale there, the feed and (if it moved) the names are read in a short-lived thread the caller waits
for.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable

from django.db import connection
from django.db.models.signals import post_delete
from django.dispatch import receiver

from accounts import changefeed
from accounts.models import Domain
from transport.xmpp.jid import InvalidJid, normalise_domain
from xmppauth import fastsql
from xmppauth.outage import DATABASE_UNAVAILABLE

logger = logging.getLogger(__name__)

READ_TIMEOUT = 10.0  # seconds an event-loop caller waits for the read before it fails closed

_lock = threading.Lock()
_disabled: tuple[int, frozenset[str]] | None = None  # (changefeed generation, the names)
_rows_made: set[str] = set()


def hosted_domains(config_hosts: Iterable[str]) -> frozenset[str]:
    """The hosted domains (see the module docstring): ``config_hosts`` normalised, minus disabled rows."""
    disabled = _disabled_names()
    if disabled is None:
        return frozenset()
    return frozenset(_normalised(config_hosts)) - disabled


def is_hosted(domain: str, config_hosts: Iterable[str]) -> bool:
    """Whether ``domain`` (normalised, RFC 7622 §3.2) is hosted here."""
    return domain in hosted_domains(config_hosts)


def checker(config_hosts: Iterable[str]) -> Callable[[str], bool]:
    """:func:`is_hosted` for these hosts as a one-argument callable: what the adapters give the core."""
    return functools.partial(is_hosted, config_hosts=tuple(config_hosts))


def ensure_rows(config_hosts: Iterable[str]) -> list[str]:
    """A ``Domain`` row for each config host (asked once per process and host): the admin lists it and may
    disable it; accounts hang off it. Returns the hosts whose row was created now."""
    created: list[str] = []
    for host in [host for host in _normalised(config_hosts) if host not in _rows_made]:
        if Domain.objects.get_or_create(name=host)[1]:
            created.append(host)
        with _lock:
            _rows_made.add(host)
    return created


def invalidate() -> None:
    """Forget the disabled names and which rows exist: the next question reads them again (tests; a Domain
    save or delete forgets what it changed)."""
    global _disabled
    with _lock:
        _disabled = None
        _rows_made.clear()


# A save or delete needs no receiver for the names: it bumps the change feed, which moves the generation
# they are held under (accounts.changefeed.watch). Only which rows exist is this module's own.
@receiver(post_delete, sender=Domain, dispatch_uid="accounts.domains.deleted")
def _domain_deleted(sender: type, instance: Domain, **kwargs: object) -> None:
    with _lock:
        _rows_made.discard(instance.name)  # a config host's row is made again when next asked


def _normalised(hosts: Iterable[str]) -> list[str]:
    names: list[str] = []
    for host in hosts:
        try:
            names.append(normalise_domain(host))
        except InvalidJid:
            logger.warning("hosted domain %r is not a valid domain name; ignored", host)
    return names


def _disabled_names() -> frozenset[str] | None:
    """The disabled names, read again when the change feed moved. When they cannot be read (the database
    is down): the names last read, if any, else None (nothing is hosted)."""
    held = _disabled
    if held is not None and held[0] == changefeed.generation():  # None on a loop whose feed is stale
        return held[1]
    names = _read_off_loop() if changefeed.on_event_loop() else _read()
    if names is None and held is not None:
        # only on an event loop (a stream's opening, which lets nobody in; off a loop the read raises): the
        # login's own checks need the database and answer temporary-auth-failure (RFC 6120 §6.5.12)
        return held[1]
    return names


def _read() -> frozenset[str]:
    global _disabled
    gen = changefeed.generation()  # read first: names read after it are at least as new
    held = _disabled
    if held is not None and held[0] == gen:
        return held[1]
    sql = fastsql.statement(
        "domains.disabled",
        lambda: (
            f"SELECT {fastsql.column(Domain, 'name')} FROM {fastsql.table(Domain)}"
            f" WHERE {fastsql.column(Domain, 'enabled')} = %s"
        ),
    )
    names = frozenset(name for (name,) in fastsql.fetch_all(sql, [fastsql.param(Domain, "enabled", False)]))
    with _lock:
        if gen == changefeed.generation():  # no change since the feed was read: keep them
            _disabled = (gen, names)
    return names


def _read_off_loop() -> frozenset[str] | None:
    """:func:`_read` in a thread of its own (its connection closed after), waited for; None (fail closed: no
    domain is hosted for this question) when it fails or does not finish in :data:`READ_TIMEOUT`."""
    result: list[frozenset[str]] = []

    def run() -> None:
        try:
            result.append(_read())
        except DATABASE_UNAVAILABLE as exc:  # an outage: one line, not a traceback (xmppauth.outage)
            logger.error("hosted domains: cannot read the Domain table: %s", exc)
        except Exception:
            logger.exception("hosted domains: cannot read the Domain table")
        finally:
            connection.close()

    reader = threading.Thread(target=run, name="hosted-domains", daemon=True)
    reader.start()
    reader.join(READ_TIMEOUT)
    return result[0] if result else None
