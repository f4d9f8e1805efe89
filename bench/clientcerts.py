"""Client certificates for the load benchmarks: one per simulated user (xmppAddr, RFC 6120 §13.7.1.4).

Made up front, before anything is timed, with ``certauth.pki`` and a CA the server trusts: the server's own CA
(read through Django: :func:`load_server_ca`) or any CA certificate and key in PEM files. Each identity is one
PEM file holding the unencrypted key and the certificate (bench data in a temporary directory, never kept).

EC P-256 keys take microseconds, so every user gets its own. RSA-2048 keys take tens of milliseconds each, so
users share a small pool of RSA keys (:data:`RSA_POOL`): each still has its own certificate, which is all the
server looks at.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certauth.pki import (
    PrivateKey,
    generate_private_key,
    issue_certificate,
    load_certificate,
    load_private_key,
)

KEY_TYPES = ("ec-p256", "rsa-2048")
RSA_POOL = 16  # distinct RSA keys shared round-robin by the RSA identities


@dataclass(frozen=True)
class Identity:
    """A simulated user: its bare JID and the PEM file with its key and certificate."""

    jid: str
    pem_file: Path


def load_ca_files(cert_file: Path, key_file: Path) -> tuple[x509.Certificate, PrivateKey]:
    """A CA certificate and its private key from PEM files (the key unencrypted)."""
    return load_certificate(cert_file.read_bytes()), load_private_key(key_file.read_bytes())


def load_server_ca() -> tuple[x509.Certificate, PrivateKey]:
    """The server's own default CA and key, through Django's settings (XMPPAUTH_* and DATABASE_URL)."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")
    django.setup()
    from certauth import services  # needs the app registry

    ca = services.default_ca()
    return services.ca_certificate(ca), services.ca_private_key(ca)


def provision_accounts(identities: Sequence[Identity]) -> int:
    """The users' accounts, created up front as an operator does (admin or ``pki issue``), through Django.

    Logins of existing accounts are what a server mostly serves, and what ejabberd and Prosody serve here
    (neither creates anything at login); a run without this measures first logins (``auth.methods = ["pki"]``
    creates the account). Existing accounts are left as they are; returns how many users were provisioned.
    """
    from accounts.models import Account, Domain  # needs load_server_ca's django.setup()

    by_domain: dict[str, list[str]] = {}
    for identity in identities:
        localpart, _, domain = identity.jid.partition("@")
        by_domain.setdefault(domain, []).append(localpart)
    for domain_name, localparts in by_domain.items():
        domain, _ = Domain.objects.get_or_create(name=domain_name)
        rows = [Account(localpart=lp, domain=domain, created_by=Account.Origin.COMMAND) for lp in localparts]
        Account.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return len(identities)


def make_identities(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    host: str,
    count: int,
    directory: Path,
    *,
    key_type: str = "ec-p256",
    prefix: str = "user",
) -> list[Identity]:
    """``count`` users ``{prefix}N@host``, each with a certificate from ``ca_key``, files in ``directory``."""
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}; accepted values: {', '.join(KEY_TYPES)}")
    directory.mkdir(parents=True, exist_ok=True)
    pool: Sequence[PrivateKey] = (
        [generate_private_key(key_type) for _ in range(min(RSA_POOL, count))] if key_type != "ec-p256" else ()
    )
    identities = []
    for n in range(count):
        key = pool[n % len(pool)] if pool else generate_private_key(key_type)
        jid = f"{prefix}{n}@{host}"
        cert = issue_certificate(ca_cert, ca_key, key.public_key(), xmpp_addrs=[jid], days=2)
        path = directory / f"{prefix}{n}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            + cert.public_bytes(serialization.Encoding.PEM)
        )
        identities.append(Identity(jid, path))
    return identities


class ResumingContext(ssl.SSLContext):
    """A client context that offers ``offered_session`` on every connection it makes (TLS resumption,
    RFC 8446 §2.2). asyncio's streams, ``http.client`` and ``websockets`` take no session argument, but they
    call ``wrap_bio`` or ``wrap_socket``, so this is where the session goes in (the tests use it too)."""

    offered_session: ssl.SSLSession | None = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        session = session or self.offered_session
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def wrap_socket(self, sock, *args, **kwargs):
        kwargs.setdefault("session", self.offered_session)
        return super().wrap_socket(sock, *args, **kwargs)


def client_context(
    identity: Identity, server_ca_file: Path | None = None, *, resuming: bool = False
) -> ssl.SSLContext:
    """A TLS client context presenting ``identity``; it checks the server only given ``server_ca_file``.
    ``resuming``: a :class:`ResumingContext`."""
    context = (ResumingContext if resuming else ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if server_ca_file is not None:
        context.load_verify_locations(cafile=str(server_ca_file))
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(identity.pem_file))
    return context
