"""Where the CRLs of external CAs come from: discovering ``CrlSource`` rows (DESIGN §5).

Spec: RFC 5280 §4.2.1.13 (CRL distribution points) and §5 (a CRL is matched to its CA by issuer name and
signature, §6.3.3 (f)-(g)).

Three kinds of source, for every imported CA (``CertificateAuthority`` without our key) that is trusted for
client authentication:

- ``distribution_point``: each http(s) URL named in the CA certificate or in a certificate we know it
  issued (``Certificate`` rows with ``issuer=ca``);
- ``operator_url``: added by hand in the admin; never created or removed here;
- ``file``: every ``tls.crl_files`` entry of the config's listeners, attached to the CA whose name and key
  match the CRL in it, whichever way that CA is trusted (ours, imported, ``tls.cacertfile``, learnt). An
  entry that matches none stops start-up (``certauth.configcas``). A file source whose path left the config
  is removed.

Our own CAs need no source: their revocations are ``Certificate.status`` (``certauth.services``).
``sync_crl_sources()`` is idempotent: run it as often as wanted (the jobs run it hourly and at start).
Sources of imported certificates and CAs are also added as they are saved (``connect_signals``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models.signals import post_save

from certauth import pki
from certauth.models import Certificate, CertificateAuthority, CrlSource
from xmppauth.config import Config

logger = logging.getLogger(__name__)


@dataclass
class SyncResult:
    """What one ``sync_crl_sources`` run changed."""

    created: list[CrlSource] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unmatched_files: list[str] = field(default_factory=list)


def external_cas() -> Iterable[CertificateAuthority]:
    """Imported CAs (no key of ours) trusted for client authentication."""
    return CertificateAuthority.objects.filter(encrypted_private_key=None, trusted_for_client_auth=True)


def config_crl_files(config: Config) -> list[str]:
    """Every ``tls.crl_files`` path of the config's c2s and http listeners, once each, in file order."""
    paths: list[str] = []
    for listener in (*config.listen_c2s, *config.listen_http):
        if listener.tls is not None:
            paths.extend(path for path in listener.tls.crl_files if path not in paths)
    return paths


def _certificate_urls(pem: str, what: str) -> list[str]:
    try:
        return pki.crl_distribution_urls(pki.load_certificate(pem.encode()))
    except ValueError as exc:
        logger.warning("cannot read the CRL distribution points of %s: %s", what, exc)
        return []


def _add(ca: CertificateAuthority, kind: str, location: str, result: SyncResult | None = None) -> None:
    source, created = CrlSource.objects.get_or_create(ca=ca, location=location, defaults={"kind": kind})
    if created:
        logger.info("CRL source added for CA %s: %s (%s)", ca.name, location, kind)
        if result is not None:
            result.created.append(source)


def _is_external(ca: CertificateAuthority | None) -> bool:
    return ca is not None and not ca.is_ours and ca.trusted_for_client_auth


def add_distribution_points(ca: CertificateAuthority, result: SyncResult | None = None) -> None:
    """Sources for the distribution points of ``ca``'s own certificate and of the certificates it issued."""
    urls = dict.fromkeys(_certificate_urls(ca.certificate_pem, f"CA {ca.name}"))
    for pem in Certificate.objects.filter(issuer=ca).values_list("pem", flat=True).iterator():
        urls.update(dict.fromkeys(_certificate_urls(pem, f"a certificate of CA {ca.name}")))
    for url in urls:
        _add(ca, CrlSource.Kind.DISTRIBUTION_POINT, url, result)


class CrlFileError(Exception):
    """A ``tls.crl_files`` entry that cannot be applied; the message names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def crl_file_candidates() -> list[CertificateAuthority]:
    """The CAs a ``tls.crl_files`` entry may belong to: every CA that vouches for clients or sits on their
    paths, whichever way it is trusted (ours, imported, ``tls.cacertfile``, learnt intermediates)."""
    return [
        ca
        for ca in CertificateAuthority.objects.all()
        if ca.trusted_for_client_auth or ca.config_files or ca.origin == CertificateAuthority.Origin.LEARNED
    ]


def match_crl_file(path: str, cas: Iterable[CertificateAuthority]) -> CertificateAuthority:
    """The CA whose subject and key match the CRL in ``path`` (RFC 5280 §6.3.3 (f)-(g)).

    Raises :class:`CrlFileError` when the file cannot be read, is not a CRL, has a signature that no CA with
    its issuer name verifies, or matches no CA at all: there is no fail-open path.
    """
    try:
        crl = pki.load_crl(Path(path).read_bytes())
    except OSError as exc:
        raise CrlFileError(path, f"cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CrlFileError(path, f"not a CRL (PEM or DER): {exc}") from exc
    named = []
    for ca in cas:
        try:
            ca_cert = pki.load_certificate(ca.certificate_pem.encode())
        except ValueError:
            continue
        if ca_cert.subject != crl.issuer:
            continue
        named.append(ca.name)
        if pki.crl_signed_by(crl, ca_cert):
            return ca
    issuer = crl.issuer.rfc4514_string()
    if named:
        raise CrlFileError(
            path, f"bad signature: issuer {issuer} is CA {', '.join(named)}, whose key did not sign it"
        )
    raise CrlFileError(path, f"matches no trusted CA (issuer {issuer})")


def sync_file_sources(
    config: Config, cas: list[CertificateAuthority], result: SyncResult, *, strict: bool = False
) -> None:
    """A ``file`` source per ``tls.crl_files`` entry, on the CA that signed it. ``strict`` (start-up) raises
    :class:`CrlFileError` for an entry that cannot be applied; the periodic job logs it and keeps the
    entry's existing source, whose held CRL then goes stale and fails closed (``certauth.revocation``)."""
    paths = config_crl_files(config)
    for path in paths:
        try:
            ca = match_crl_file(path, cas)
        except CrlFileError as exc:
            if strict:
                raise
            logger.error("tls.crl_files %s; its source keeps the last CRL held", exc)
            result.unmatched_files.append(path)
            continue
        for moved in CrlSource.objects.filter(kind=CrlSource.Kind.FILE, location=path).exclude(ca=ca):
            logger.info("CRL source %s moved from CA %s to CA %s", path, moved.ca.name, ca.name)
            moved.delete()
        _add(ca, CrlSource.Kind.FILE, path, result)
    for source in CrlSource.objects.filter(kind=CrlSource.Kind.FILE).exclude(location__in=paths):
        logger.info("CRL source %s removed: no longer in tls.crl_files", source.location)
        result.removed.append(source.location)
        source.delete()


def sync_crl_sources(config: Config | None = None, *, strict: bool = False) -> SyncResult:
    """Create the missing sources of every external CA (see the module docstring); idempotent. ``strict``:
    see :func:`sync_file_sources`."""
    config = config or settings.XMPP
    result = SyncResult()
    for ca in external_cas():
        add_distribution_points(ca, result)
    sync_file_sources(config, crl_file_candidates(), result, strict=strict)
    return result


# --- as certificates and CAs are imported ------------------------------------------------------------


def _certificate_saved(sender: type, instance: Certificate, created: bool, **kwargs: object) -> None:
    if not created or not _is_external(instance.issuer):
        return
    for url in _certificate_urls(instance.pem, f"certificate {instance.serial}"):
        _add(instance.issuer, CrlSource.Kind.DISTRIBUTION_POINT, url)


def _ca_saved(sender: type, instance: CertificateAuthority, created: bool, **kwargs: object) -> None:
    if created and _is_external(instance):
        for url in _certificate_urls(instance.certificate_pem, f"CA {instance.name}"):
            _add(instance, CrlSource.Kind.DISTRIBUTION_POINT, url)


def connect_signals() -> None:
    """Called from ``CertauthConfig.ready``: add sources as imported CAs and their certificates arrive."""
    post_save.connect(_certificate_saved, sender=Certificate, dispatch_uid="certauth.crlsources.certificate")
    post_save.connect(_ca_saved, sender=CertificateAuthority, dispatch_uid="certauth.crlsources.ca")
