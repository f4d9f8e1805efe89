"""Fetching one external CA's CRL from one source and replacing the serials held for it.

Spec: RFC 5280 §5 (CRL profile; §5.2.3 CRL number, §5.2.4 delta CRLs, §5.1.2.4-5 thisUpdate/nextUpdate),
§6.3.3 (f)-(g) (the CRL must be issued and signed by the certificate's CA), RFC 5280 §4.2.1.13 (http
distribution points: DER, or PEM as some CAs serve it).

``refresh_source(source)`` downloads (http/https, ``[xmppauth] crl_fetch_timeout_seconds``, default
``FETCH_TIMEOUT``, for the whole download, so a server that accepts and never answers cannot hold a job; at
most ``MAX_CRL_BYTES``, read in chunks and abandoned past the cap) or reads (``file`` sources), and accepts
the CRL only when

- it parses as PEM or DER and is a full CRL (a delta CRL would drop every serial it does not repeat);
- its issuer is the source's CA and its signature verifies with the CA's key;
- it is not older than the CRL held: a lower CRL number, or without numbers an earlier thisUpdate, is a
  replay and is refused with the held one kept.

Then, in one transaction, the source's ``RevokedSerial`` rows become the CRL's entries and its dates,
number, state and next refresh are set. On any failure nothing of the held CRL changes: the source becomes
``failing`` (or ``stale`` once ``certauth.crlpolicy`` says so) with ``last_error`` in plain words, and is
retried with backoff. Newly listed serials are announced with ``certauth.signals.external_revocations_found``.

A CRL may list 100,000 serials (``bench/crl_scale.py``): its entries are parsed, compared with the rows held
and prepared (on SQLite staged in a TEMP table) before the transaction, which then writes only the
difference in bulk (``fastsql``: COPY on PostgreSQL, INSERT ... SELECT on SQLite), with no model instance
per entry.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.db import connection, transaction

from accounts import changefeed
from certauth import crlpolicy, pki
from certauth.models import CertificateAuthority, CrlSource, RevocationReason, RevokedSerial
from certauth.signals import external_revocations_found
from xmppauth import fastsql
from xmppauth.config import XmppauthOptions

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 10.0  # seconds for the whole download
MAX_CRL_BYTES = 10 * 1024 * 1024
_CHUNK = 64 * 1024
USER_AGENT = "xmppauth-crl-fetch"


class FetchError(Exception):
    """The CRL could not be had or is not acceptable; the message is what the admin shows."""


@dataclass(frozen=True)
class RefreshOutcome:
    """What one refresh did: ``ok`` with the number of entries, or the reason it was refused."""

    source_id: int
    ok: bool
    message: str
    entries: int = 0
    new_serials: tuple[str, ...] = ()


def _size(limit: int) -> str:
    mib = limit / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 else f"{limit} bytes"


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def _opener() -> urllib.request.OpenerDirector:
    # http(s) only, redirects included, no proxy from the environment and no file:/ftp: (RFC 5280 §4.2.1.13
    # distribution points we fetch are http URIs).
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def download(url: str, *, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_CRL_BYTES) -> bytes:
    """The body at ``url``, read in chunks; raises :class:`FetchError` past ``timeout`` or ``max_bytes``."""
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"not an http(s) URL: {url}")
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _opener().open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            length = int(declared) if declared and declared.isdigit() else None
            if length is not None and length > max_bytes:
                raise FetchError(f"download larger than {_size(max_bytes)} ({length} bytes announced)")
            body = bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out after {_seconds(timeout)}")
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"download larger than {_size(max_bytes)}")
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} {exc.reason} from {url}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise FetchError(f"timed out after {_seconds(timeout)}") from exc
        raise FetchError(f"cannot fetch {url}: {exc.reason}") from exc
    except TimeoutError as exc:
        raise FetchError(f"timed out after {_seconds(timeout)}") from exc
    except (OSError, ValueError) as exc:  # connection reset, http.client protocol errors, bad URL
        raise FetchError(f"cannot fetch {url}: {exc}") from exc
    if length is not None and len(body) != length:
        raise FetchError(f"truncated download: {len(body)} of {length} bytes")
    return bytes(body)


def read_file(path: str, *, max_bytes: int = MAX_CRL_BYTES) -> bytes:
    """A ``tls.crl_files`` file, refused when larger than ``max_bytes``."""
    try:
        size = Path(path).stat().st_size
        if size > max_bytes:
            raise FetchError(f"file larger than {_size(max_bytes)} ({size} bytes)")
        return Path(path).read_bytes()
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _fetch(source: CrlSource, timeout: float, max_bytes: int) -> bytes:
    if source.kind == CrlSource.Kind.FILE:
        return read_file(source.location, max_bytes=max_bytes)
    return download(source.location, timeout=timeout, max_bytes=max_bytes)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def validate(data: bytes, ca: CertificateAuthority, source: CrlSource) -> x509.CertificateRevocationList:
    """The CRL in ``data`` when it is a full CRL of ``ca`` not older than ``source``'s; else FetchError."""
    try:
        crl = pki.load_crl(data)
    except ValueError as exc:
        raise FetchError(f"not a CRL (PEM or DER, {len(data)} bytes): {exc}") from exc
    ca_cert = pki.load_certificate(ca.certificate_pem.encode())
    if crl.issuer != ca_cert.subject:  # RFC 5280 §6.3.3 (b)
        raise FetchError(f"CRL issuer {crl.issuer.rfc4514_string()} is not CA {ca.name}")
    if not pki.crl_signed_by(crl, ca_cert):  # RFC 5280 §6.3.3 (f)
        raise FetchError(f"signature does not verify against CA {ca.name}")
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)  # RFC 5280 §5.2.4
    except x509.ExtensionNotFound:
        pass
    else:
        raise FetchError("a delta CRL: only full CRLs are supported")
    number = pki.crl_number_of(crl)
    if source.crl_number is not None and number is not None:
        if number < source.crl_number:  # RFC 5280 §5.2.3: numbers increase
            raise FetchError(f"older than the CRL held (#{number} < #{source.crl_number})")
    elif source.this_update is not None and crl.last_update_utc < source.this_update:
        raise FetchError(
            f"older than the CRL held (thisUpdate {crl.last_update_utc:%Y-%m-%d %H:%M}"
            f" < {source.this_update:%Y-%m-%d %H:%M})"
        )
    return crl


def _options(options: XmppauthOptions | None) -> XmppauthOptions:
    return options or settings.XMPP.options


def _bounds(options: XmppauthOptions) -> crlpolicy.Bounds:
    return crlpolicy.Bounds(options.crl_refresh_min_seconds, options.crl_refresh_max_seconds)


_REASONS = frozenset(RevocationReason.values)


def _reason(name: str | None) -> str:
    return name if name in _REASONS else ""


Held = dict[str, tuple[datetime, str]]  # serial -> (revoked_at, reason) of the rows a source holds
_COLUMNS = ("source", "ca", "serial", "revoked_at", "reason")


def _marker(source_id: int) -> tuple:
    """What changes whenever a CRL of the source is stored (the held rows read with it are then stale)."""
    return (
        CrlSource.objects.filter(pk=source_id)
        .values_list("crl_number", "this_update", "last_success_at")
        .get()
    )


def _held(source_id: int) -> Held:
    rows = RevokedSerial.objects.filter(source_id=source_id).values_list("serial", "revoked_at", "reason")
    return {serial: (revoked_at, reason) for serial, revoked_at, reason in rows}


@dataclass(frozen=True)
class _Plan:
    """How to turn the rows held into the rows listed: the serials to delete, the rows to insert."""

    held: Held
    gone: list[str]
    rows: list[tuple]


def _plan(source: CrlSource, held: Held, listed: Held) -> _Plan:
    """Only the difference is written: a CRL that repeats 100,000 serials rewrites none of them. Rows are
    prepared here, outside the write transaction, and go in in serial order (the indexes grow at one end)."""
    gone = [serial for serial, row in held.items() if listed.get(serial) != row]
    adapt = connection.ops.adapt_datetimefield_value  # what the field's own preparation does, for less
    rows = [
        (source.pk, source.ca_id, serial, adapt(listed[serial][0]), listed[serial][1])
        for serial in sorted(serial for serial, row in listed.items() if held.get(serial) != row)
    ]
    return _Plan(held, gone, rows)


def _replace(source: CrlSource, plan: _Plan, staged: fastsql.Staged) -> None:
    """The source's entries become the CRL's (raw SQL: no signal), with the change feed bumped in the same
    transaction (every process's revocation cache, ``accounts.changefeed``)."""
    if plan.gone or plan.rows:
        changefeed.changed()
    if plan.gone and len(plan.gone) == len(plan.held):
        fastsql.delete_rows(RevokedSerial, "source", source.pk)
    elif plan.gone:
        fastsql.delete_in(RevokedSerial, "source", source.pk, "serial", plan.gone)
    fastsql.insert_staged(staged)


def _store(
    source: CrlSource, crl: x509.CertificateRevocationList, now: datetime, options: XmppauthOptions
) -> RefreshOutcome:
    # Everything that grows with the CRL and needs no lock is done first: SQLite has one writer, and the
    # logins of every listener wait for the transaction below (bench/crl_scale.py measures it).
    listed: Held = {  # a serial listed twice counts once
        format(entry.serial, "x"): (entry.revoked_at, _reason(entry.reason))
        for entry in pki.revoked_entries(crl)
    }
    marker = _marker(source.pk)
    plan = _plan(source, _held(source.pk), listed)
    staged = fastsql.stage_rows(RevokedSerial, _COLUMNS, plan.rows)  # SQLite: no lock taken yet
    others = set(
        RevokedSerial.objects.filter(ca_id=source.ca_id)
        .exclude(source_id=source.pk)
        .values_list("serial", flat=True)
    )
    with transaction.atomic():
        source = CrlSource.objects.select_for_update().select_related("ca").get(pk=source.pk)
        number = pki.crl_number_of(crl)
        if number is not None and source.crl_number is not None and number < source.crl_number:
            raise FetchError(f"older than the CRL held (#{number} < #{source.crl_number})")
        if (source.crl_number, source.this_update, source.last_success_at) != marker:
            plan = _plan(source, _held(source.pk), listed)  # another refresh stored a CRL meanwhile
            staged = fastsql.stage_rows(RevokedSerial, _COLUMNS, plan.rows)
        _replace(source, plan, staged)
        source.this_update = crl.last_update_utc
        source.next_update = _utc(crl.next_update_utc)
        source.crl_number = number
        source.last_attempt_at = now
        source.last_success_at = now
        source.last_error = ""
        source.failing_since = None
        source.consecutive_failures = 0
        grace = timedelta(seconds=options.crl_grace_seconds)
        stale = crlpolicy.staleness(now, next_update=source.next_update, failing_since=None, grace=grace)
        source.state = CrlSource.State.STALE if stale else CrlSource.State.OK
        source.next_refresh_at = crlpolicy.next_refresh_after_success(
            now, source.next_update, _bounds(options), source.refresh_interval_seconds
        )
        source.save()
        new_serials = tuple(sorted(listed.keys() - plan.held.keys() - others))
        if new_serials:
            ca = source.ca
            transaction.on_commit(
                lambda: external_revocations_found.send(
                    sender=CrlSource, ca=ca, serials=new_serials, source=source
                )
            )
    number = f" #{source.crl_number}" if source.crl_number is not None else ""
    logger.info(
        "CRL%s of CA %s from %s accepted: %d entries, %d new, nextUpdate %s",
        number,
        source.ca.name,
        source.location,
        len(listed),
        len(new_serials),
        source.next_update or "none",
    )
    message = f"CRL{number} accepted: {len(listed)} revoked serial(s), {len(new_serials)} new"
    return RefreshOutcome(source.pk, True, message, len(listed), new_serials)


def _record_failure(
    source: CrlSource, reason: str, now: datetime, options: XmppauthOptions
) -> RefreshOutcome:
    with transaction.atomic():
        source = CrlSource.objects.select_for_update().select_related("ca").get(pk=source.pk)
        source.last_attempt_at = now
        source.last_error = reason
        source.failing_since = source.failing_since or now
        source.consecutive_failures += 1
        has_crl = source.last_success_at is not None or source.next_update is not None
        stale = crlpolicy.staleness(
            now,
            next_update=source.next_update,
            failing_since=None if has_crl else source.failing_since,
            grace=timedelta(seconds=options.crl_grace_seconds),
        )
        source.state = CrlSource.State.STALE if stale else CrlSource.State.FAILING
        source.next_refresh_at = crlpolicy.next_refresh_after_failure(
            now, source.consecutive_failures, _bounds(options), source.refresh_interval_seconds
        )
        source.save()
    logger.warning(
        "CRL of CA %s from %s refused (%s); %s; retry at %s",
        source.ca.name,
        source.location,
        reason,
        "last good CRL kept" if has_crl else "no CRL held yet",
        f"{source.next_refresh_at:%Y-%m-%d %H:%M:%S}",
    )
    return RefreshOutcome(source.pk, False, reason)


def refresh_source(
    source: CrlSource,
    *,
    now: datetime | None = None,
    options: XmppauthOptions | None = None,
    timeout: float | None = None,
    max_bytes: int = MAX_CRL_BYTES,
) -> RefreshOutcome:
    """Fetch, check and store one source's CRL (see the module docstring); never raises for a bad CRL.
    ``timeout``: the whole download's (default ``[xmppauth] crl_fetch_timeout_seconds``)."""
    options = _options(options)
    if timeout is None:
        timeout = float(options.crl_fetch_timeout_seconds)
    source = CrlSource.objects.select_related("ca").get(pk=source.pk)
    try:
        data = _fetch(source, timeout, max_bytes)
        crl = validate(data, source.ca, source)
        return _store(source, crl, now or datetime.now(UTC), options)
    except FetchError as exc:
        return _record_failure(source, str(exc), now or datetime.now(UTC), options)
    except Exception as exc:  # a job must go on with the other sources; the admin shows the error
        logger.exception("CRL refresh of %s failed unexpectedly", source.location)
        return _record_failure(source, f"internal error: {exc}", now or datetime.now(UTC), options)


def mark_stale_sources(*, now: datetime | None = None, options: XmppauthOptions | None = None) -> int:
    """Set state ``stale`` on sources that went stale without a fetch in between (for the admin)."""
    options = _options(options)
    now = now or datetime.now(UTC)
    grace = timedelta(seconds=options.crl_grace_seconds)
    marked = 0
    candidates = CrlSource.objects.exclude(state=CrlSource.State.STALE).exclude(state=CrlSource.State.NEVER)
    for source in candidates:
        has_crl = source.last_success_at is not None or source.next_update is not None
        stale = crlpolicy.staleness(
            now,
            next_update=source.next_update,
            failing_since=None if has_crl else source.failing_since,
            grace=grace,
        )
        if stale is not None:
            CrlSource.objects.filter(pk=source.pk).update(state=CrlSource.State.STALE)
            marked += 1
    return marked


def due_sources(now: datetime | None = None) -> list[CrlSource]:
    """Sources whose ``next_refresh_at`` has come (or that were never scheduled), oldest first."""
    now = now or datetime.now(UTC)
    unscheduled = CrlSource.objects.filter(next_refresh_at__isnull=True).order_by("pk")
    due = CrlSource.objects.filter(next_refresh_at__lte=now).order_by("next_refresh_at", "pk")
    return [*unscheduled, *due]
