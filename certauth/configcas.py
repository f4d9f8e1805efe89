"""The config's trust inputs as database rows, checked and loaded before any listener accepts a login.

Spec: RFC 5280 §6.1.1 (d) (trust anchors), §6.3.3 (f)-(g) (a CRL belongs to the CA that issued and signed
it); DESIGN §0 "Fail closed, everywhere" and §5.

Every CA that can vouch for a client is one ``CertificateAuthority`` row (one kind of trust anchor, one
revocation policy). :func:`prepare_process` is what every process that reads the config runs once at
start-up (``runxmpp``, ``runc2s``, daphne through ``xmppauth.asgi`` or the ``xmpptls`` endpoint, ``runworker``
through ``xmppauth.asgi``, the Celery worker through ``xmppauth.celery``):

0. :func:`check_verifiers`: each dotted Python path in ``auth.sasl_external`` must import to a callable
   (``certauth.identity``), else start-up stops with one line naming ``auth.sasl_external[i]``. The config
   loader only checks the names against the registry and the shape of a path; importing an operator's
   module is left to the processes that will call it.
1. :func:`sync_config_cas`: each certificate of a listener's ``tls.cacertfile`` becomes a row with origin
   ``config`` (``config_files`` = the cacertfile paths that list it, ``allowed_domains`` = that listener's
   ``tls.cacert_domains``). A CA that is already a row of another origin (ours, imported, learnt) keeps its
   row and origin and gets ``config_files`` recorded. A row whose CA left every file loses those paths; a
   ``config`` row listed nowhere any more stops being trusted (kept, not deleted: certificates and CRLs may
   refer to it). Two listeners that list one CA with different ``tls.cacert_domains`` stop start-up, and so
   does a ``tls.cacert_domains`` that differs from the admin's domains of an ours/imported/learnt row.
2. ``tls.crl_files`` (``certauth.crlsources``, strict): an entry that cannot be read, is not a CRL, has a bad
   signature or matches no trusted CA stops start-up with one line naming the key, the file and the reason.
   Each file's serials are then loaded now (``certauth.crlfetch.refresh_source``), so the first login is
   already checked against them.
3. One WARNING per CA that vouches for clients and has no revocation source at all.

``certauth.trust`` then builds each listener's anchors from rows only: the non-config trusted rows plus the
rows whose ``config_files`` include that listener's ``tls.cacertfile`` (no file is parsed on the login path).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from django.db import DatabaseError, IntegrityError, transaction

from certauth import crlfetch, crlsources, identity, pki, services
from certauth.models import CertificateAuthority, CrlSource
from xmppauth.config import Config, ConfigError, TlsOptions

logger = logging.getLogger(__name__)

Origin = CertificateAuthority.Origin


class ConfigCaError(ConfigError):
    """A ``tls.cacertfile``, ``tls.cacert_domains`` or ``tls.crl_files`` value that cannot be applied."""


@dataclass
class _FileCa:
    """One CA as the config lists it: its certificate, the files that list it, and their domains."""

    cert: x509.Certificate
    files: list[str] = field(default_factory=list)
    domains: tuple[str, ...] = ()
    domains_key: str = ""


@dataclass
class SyncReport:
    """What :func:`sync_config_cas` did (names of CA rows)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)


def listener_tls(config: Config) -> list[tuple[str, TlsOptions]]:
    """``(dotted key of the tls table, options)`` of every c2s and http listener that has TLS."""
    tables = [(f"listen.c2s[{i}].tls", li.tls) for i, li in enumerate(config.listen_c2s)]
    tables += [(f"listen.http[{i}].tls", li.tls) for i, li in enumerate(config.listen_http)]
    return [(key, tls) for key, tls in tables if tls is not None]


def _read_cacertfile(source: str, key: str, path: str) -> list[x509.Certificate]:
    try:
        return pki.load_certificates(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigCaError(f"{source}: {key}.cacertfile: {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigCaError(f"{source}: {key}.cacertfile: {path}: no PEM certificate found ({exc})") from exc


def read_config_cas(config: Config) -> dict[str, _FileCa]:
    """The CAs of every listener's ``tls.cacertfile`` by SHA-256 fingerprint (files parsed here only)."""
    cas: dict[str, _FileCa] = {}
    for key, tls in listener_tls(config):
        if not tls.cacertfile:
            continue
        for cert in _read_cacertfile(config.source, key, tls.cacertfile):
            fingerprint = pki.fingerprint_sha256(cert)
            entry = cas.get(fingerprint)
            if entry is None:
                entry = cas[fingerprint] = _FileCa(cert, domains=tls.cacert_domains, domains_key=key)
            elif entry.domains != tls.cacert_domains:
                # One row holds one allowed_domains: two different lists for one CA cannot both hold.
                raise ConfigCaError(
                    f"{config.source}: {entry.domains_key}.cacert_domains and {key}.cacert_domains give CA "
                    f"{cert.subject.rfc4514_string()} different domains ({list(entry.domains)} and "
                    f"{list(tls.cacert_domains)}); list it with the same domains, or in one cacertfile only"
                )
            if tls.cacertfile not in entry.files:
                entry.files.append(tls.cacertfile)
    return cas


def _unique_name(cert: x509.Certificate, fingerprint: str) -> str:
    facts = pki.cert_facts(cert)
    base = facts.common_name or facts.subject
    if not CertificateAuthority.objects.filter(name=base).exists():
        return base
    return f"{base} ({fingerprint[:12]})"


def _apply_one(source: str, fingerprint: str, entry: _FileCa, report: SyncReport) -> None:
    row = CertificateAuthority.objects.select_for_update().filter(fingerprint_sha256=fingerprint).first()
    if row is None:
        row = CertificateAuthority.objects.create(
            name=_unique_name(entry.cert, fingerprint),
            origin=Origin.CONFIG,
            config_files=list(entry.files),
            allowed_domains=list(entry.domains),
            trusted_for_client_auth=True,
            **services._ca_fields(entry.cert),  # the same fields as an imported CA
        )
        logger.info("CA %r from %s added as a config CA", row.name, ", ".join(entry.files))
        report.created.append(row.name)
        return
    changed: list[str] = []
    if sorted(row.config_files or []) != sorted(entry.files):
        row.config_files = list(entry.files)
        changed.append("config_files")
    if row.origin == Origin.CONFIG:
        # The file is the source of truth for a config CA: trusted, with the listener's domains.
        if not row.trusted_for_client_auth:
            row.trusted_for_client_auth = True
            changed.append("trusted_for_client_auth")
        if list(row.allowed_domains or []) != list(entry.domains):
            row.allowed_domains = list(entry.domains)
            changed.append("allowed_domains")
    elif entry.domains and list(row.allowed_domains or []) != list(entry.domains):
        # The row's domains are the admin's; a narrower list here could not be honoured: fail closed.
        raise ConfigCaError(
            f"{source}: {entry.domains_key}.cacert_domains: CA {row.name!r} is {row.get_origin_display()} "
            f"with allowed domains {list(row.allowed_domains or []) or 'all'} set in the admin; "
            "set them there, or list this CA in no tls.cacertfile"
        )
    if changed:
        row.save(update_fields=changed)
        report.updated.append(row.name)


def sync_config_cas(config: Config) -> SyncReport:
    """Make the CA rows match the config's ``tls.cacertfile`` files (see the module docstring)."""
    listed = read_config_cas(config)
    report = SyncReport()
    for attempt in range(2):  # another process starting at the same time may create the same row first
        try:
            with transaction.atomic():
                report = SyncReport()
                for fingerprint, entry in listed.items():
                    _apply_one(config.source, fingerprint, entry, report)
                _forget_unlisted(set(listed), report)
            break
        except IntegrityError:
            if attempt:
                raise
    return report


def _forget_unlisted(listed: set[str], report: SyncReport) -> None:
    for row in CertificateAuthority.objects.select_for_update().exclude(fingerprint_sha256__in=listed):
        if not row.config_files and row.origin != Origin.CONFIG:
            continue
        fields = []
        if row.config_files:
            row.config_files = []
            fields.append("config_files")
        if row.origin == Origin.CONFIG and row.trusted_for_client_auth:
            row.trusted_for_client_auth = False
            fields.append("trusted_for_client_auth")
            report.untrusted.append(row.name)
            logger.warning("config CA %r is in no tls.cacertfile any more: no longer trusted", row.name)
        if fields:
            row.save(update_fields=fields)


# --- tls.crl_files ------------------------------------------------------------------------------------------


def _crl_file_keys(config: Config) -> dict[str, str]:
    """Each ``tls.crl_files`` path and the dotted key of the first listener that names it."""
    keys: dict[str, str] = {}
    for key, tls in listener_tls(config):
        for path in tls.crl_files:
            keys.setdefault(path, f"{key}.crl_files")
    return keys


def apply_crl_files(config: Config) -> None:
    """Attach every ``tls.crl_files`` entry to the CA that signed it and load its serials now.

    Raises :class:`ConfigCaError` naming the key, the file and the reason for the first entry that cannot be
    applied (unreadable, not a CRL, bad signature, no matching CA, or refused when loaded).
    """
    keys = _crl_file_keys(config)
    try:
        crlsources.sync_crl_sources(config, strict=True)
    except crlsources.CrlFileError as exc:
        raise ConfigCaError(f"{config.source}: {keys.get(exc.path, 'tls.crl_files')}: {exc}") from exc
    for path, key in keys.items():
        source = CrlSource.objects.select_related("ca").get(kind=CrlSource.Kind.FILE, location=path)
        outcome = crlfetch.refresh_source(source, options=config.options)
        if not outcome.ok:
            raise ConfigCaError(f"{config.source}: {key}: {path}: {outcome.message}")
        source.refresh_from_db()
        if source.state == CrlSource.State.STALE:
            logger.warning(
                "tls.crl_files %s (CA %s) is past its nextUpdate %s and the grace: the CA's certificates are "
                "refused until the file is renewed",
                path,
                source.ca.name,
                source.next_update,
            )


# --- CAs without revocation information --------------------------------------------------------------------


def vouching_cas() -> list[CertificateAuthority]:
    """Every CA a listener trusts for clients (the rows ``certauth.trust`` makes anchors of)."""
    return [
        ca
        for ca in CertificateAuthority.objects.order_by("name")
        if (ca.trusted_for_client_auth and ca.origin != Origin.CONFIG) or ca.config_files
    ]


def cas_without_revocation_source() -> list[CertificateAuthority]:
    """Trusted CAs that are not ours and have no CRL source: their revocations cannot be known."""
    with_sources = set(CrlSource.objects.values_list("ca_id", flat=True))
    return [ca for ca in vouching_cas() if not ca.is_ours and ca.pk not in with_sources]


def warn_cas_without_revocation_source(config: Config) -> list[str]:
    """One WARNING per CA of :func:`cas_without_revocation_source`; returns their names."""
    names = []
    for ca in cas_without_revocation_source():
        consequence = (
            "[xmppauth] require_revocation = true refuses its certificates"
            if config.options.require_revocation
            else "a revoked certificate it issued is accepted ([xmppauth] require_revocation = false)"
        )
        logger.warning(
            "CA %r (%s) has no revocation source (no CRL distribution point, operator URL or tls.crl_files "
            "entry): %s",
            ca.name,
            ca.get_origin_display(),
            consequence,
        )
        names.append(ca.name)
    return names


# --- once per process ---------------------------------------------------------------------------------------

_prepared_lock = threading.Lock()
_prepared: dict[int, Config] = {}


def check_verifiers(config: Config) -> None:
    """Step 0: a ``ConfigError`` naming the first ``auth.sasl_external`` entry that cannot be used."""
    for index, name in enumerate(config.auth.sasl_external):
        try:
            identity.check_verifiers([name])
        except ValueError as exc:
            raise ConfigError(f"{config.source}: auth.sasl_external[{index}]: {exc}") from None


def prepare(config: Config) -> None:
    """Steps 0-3 of the module docstring; raises a ``ConfigError`` (:class:`ConfigCaError` for 1-2)."""
    check_verifiers(config)
    report = sync_config_cas(config)
    if report.created or report.updated or report.untrusted:
        logger.info(
            "config CAs: %d added, %d updated, %d no longer trusted",
            len(report.created),
            len(report.updated),
            len(report.untrusted),
        )
    apply_crl_files(config)
    warn_cas_without_revocation_source(config)
    from certauth import trust  # trust imports the models; avoid a cycle at import

    trust.invalidate()


def prepare_process(config: Config) -> None:
    """:func:`prepare` once per process and config (every entry point calls this; later calls return)."""
    with _prepared_lock:
        if _prepared.get(id(config)) is config:
            return
        prepare(config)
        _prepared[id(config)] = config


def prepare_process_or_exit(config: Config) -> None:
    """:func:`prepare_process`, exiting with one line (as ``xmppauth.settings`` does for config errors)."""
    try:
        prepare_process(config)
    except ConfigError as exc:
        raise SystemExit(f"xmppauth: configuration error: {exc}") from None
    except DatabaseError as exc:
        raise SystemExit(f"xmppauth: cannot read the CA table ({exc}); run `manage.py migrate`") from None
