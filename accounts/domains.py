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

The disabled names are read once and kept. In this process ``post_save``/``post_delete`` on ``Domain`` (the
admin's save and delete) forget them at once. Every process reads them again when its copy is older than
:data:`CACHE_TTL`, so a change made in another process (or by a ``QuerySet.update()``, which sends no signal)
applies to every decision taken more than :data:`CACHE_TTL` after it was committed. Django refuses queries on
an event-loop thread (daphne's asyncio loop, Twisted running on it): there the read runs in a short-lived
thread the caller waits for, one small ``SELECT`` at most once per :data:`CACHE_TTL` per process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable

from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import Domain
from transport.xmpp.jid import InvalidJid, normalise_domain
from xmppauth import fastsql

logger = logging.getLogger(__name__)

CACHE_TTL = 1.0  # seconds: how stale another process's change may be when a domain is judged
READ_TIMEOUT = 10.0  # seconds an event-loop caller waits for the read before it fails closed

_lock = threading.Lock()
_disabled: frozenset[str] | None = None
_read_at = 0.0
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


@receiver(post_save, sender=Domain, dispatch_uid="accounts.domains.saved")
def _domain_saved(sender: type, **kwargs: object) -> None:
    global _disabled
    with _lock:
        _disabled = None


@receiver(post_delete, sender=Domain, dispatch_uid="accounts.domains.deleted")
def _domain_deleted(sender: type, instance: Domain, **kwargs: object) -> None:
    global _disabled
    with _lock:
        _disabled = None
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
    """The disabled names, read again when older than CACHE_TTL; None when they cannot be read."""
    disabled = _disabled
    if disabled is not None and time.monotonic() - _read_at < CACHE_TTL:
        return disabled
    return _read_off_loop() if _on_event_loop() else _read()


def _read() -> frozenset[str]:
    global _disabled, _read_at
    sql = fastsql.statement(
        "domains.disabled",
        lambda: (
            f"SELECT {fastsql.column(Domain, 'name')} FROM {fastsql.table(Domain)}"
            f" WHERE {fastsql.column(Domain, 'enabled')} = %s"
        ),
    )
    started = time.monotonic()
    names = frozenset(name for (name,) in fastsql.fetch_all(sql, [fastsql.param(Domain, "enabled", False)]))
    with _lock:
        _disabled, _read_at = names, started
    return names


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _read_off_loop() -> frozenset[str] | None:
    """:func:`_read` in a thread of its own (its connection closed after), waited for; None (fail closed: no
    domain is hosted for this question) when it fails or does not finish in :data:`READ_TIMEOUT`."""
    result: list[frozenset[str]] = []

    def run() -> None:
        try:
            result.append(_read())
        except Exception:
            logger.exception("hosted domains: cannot read the Domain table")
        finally:
            connection.close()

    reader = threading.Thread(target=run, name="hosted-domains", daemon=True)
    reader.start()
    reader.join(READ_TIMEOUT)
    return result[0] if result else None
