"""What a user needs to set up a client for an account: the JID, where to connect, which CA to trust.

Read from the running config (``settings.XMPP``): the c2s listeners (RFC 6120 §14.2 port 5222 with STARTTLS,
XEP-0368 direct TLS), the WebSocket (RFC 7395) and BOSH (XEP-0206) handlers of the HTTPS listeners, and
whether each asks for a client certificate (XEP-0178 SASL EXTERNAL). The admin's "connect a client" page and
the README show the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from accounts.models import Account
from certauth import pki
from certauth.bootstrap import pki_dir
from certauth.models import Certificate, CertificateAuthority

C2S_MODES = {
    "starttls": "STARTTLS (RFC 6120 §5), plain connection first",
    "starttls_required": "STARTTLS required (RFC 6120 §5)",
    "tls": "direct TLS (XEP-0368)",
}
VERIFY_MODES = {
    "peer": "client certificate of a trusted CA (SASL EXTERNAL)",
    "selfsigned_peer": "client certificate, self-signed ones pinned to their account (SASL EXTERNAL)",
    "none": "no client certificate asked for (no SASL EXTERNAL here)",
}


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "TCP", "WebSocket", "BOSH"
    address: str  # host:port or URL
    port: int
    mode: str
    client_certificate: str


def endpoints(account: Account) -> list[Endpoint]:
    """Every place a client of ``account`` can connect to, in the config's order."""
    config = settings.XMPP
    host = account.domain.name
    found: list[Endpoint] = []
    for listener in config.listen_c2s:
        if listener.tls is None:
            continue  # no TLS: no client certificate can be presented there
        found.append(
            Endpoint(
                "TCP",
                f"{host}:{listener.port}",
                listener.port,
                C2S_MODES.get(listener.tls.mode, listener.tls.mode),
                VERIFY_MODES.get(listener.tls.verify_mode, listener.tls.verify_mode),
            )
        )
    for listener in config.listen_http:
        if listener.tls is None or listener.crl_only:
            continue
        for handler in listener.handlers:
            scheme, kind = ("wss", "WebSocket") if handler.kind == "mod_websockets" else ("https", "BOSH")
            found.append(
                Endpoint(
                    kind,
                    f"{scheme}://{host}:{listener.port}{handler.path}",
                    listener.port,
                    "TLS",
                    VERIFY_MODES.get(listener.tls.verify_mode, listener.tls.verify_mode),
                )
            )
    return found


def first(account: Account, kind: str, default: str) -> str:
    return next((e.address for e in endpoints(account) if e.kind == kind), default)


def active_certificates(account: Account) -> list[Certificate]:
    """The account's certificates a client may log in with today, newest first."""
    return list(account.certificates.filter(status=Certificate.Status.ACTIVE).order_by("-created_at"))


def trust_anchor_pem() -> str:
    """The CA certificate(s) a client trusts for our server certificate.

    The bootstrap's ``var/pki/ca.pem`` (the CA that issued ``var/pki/server.pem``) when there is one, else the
    certificates of our own CAs.
    """
    written = pki_dir() / "ca.pem"
    if written.exists():
        return written.read_text()
    ours = CertificateAuthority.objects.filter(origin=CertificateAuthority.Origin.OURS).order_by("created_at")
    return "".join(ca.certificate_pem for ca in ours)


def server_certificate_issuers() -> list[str]:
    """Issuers of the server certificates the listeners name in ``tls.certfile``, when not our CA's."""
    config = settings.XMPP
    ours = (
        {c.subject for c in pki.load_certificates(trust_anchor_pem().encode())}
        if trust_anchor_pem()
        else set()
    )
    files = {
        li.tls.certfile for li in (*config.listen_c2s, *config.listen_http) if li.tls and li.tls.certfile
    }
    issuers: list[str] = []
    for name in sorted(files):
        try:
            cert = pki.load_certificates(Path(name).read_bytes())[0]
        except (OSError, ValueError, IndexError):
            continue
        issuer = cert.issuer.rfc4514_string()
        if cert.issuer not in ours and issuer not in issuers:
            issuers.append(issuer)
    return issuers
