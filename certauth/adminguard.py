"""The admin behind the product's own credential: a client certificate mapped to a staff user (optional).

With ``[xmppauth] admin_requires_certificate = true`` every request under the admin's URL prefix needs, on
top of the password login, a client certificate that

- verifies in ``peer`` mode against the trust anchors of the listener it came in on (chain, then revocation:
  ``certauth.authenticator``; whatever the listener's own ``verify_mode``: a self-signed certificate could
  name anyone, so ``selfsigned_peer`` and ``none`` never count here), and
- carries exactly one xmppAddr (XEP-0178 §3) whose bare JID is the username of an active staff user.

When the session's user is logged in, it must be that same user. Anything else gets HTTP 403 with one line,
and the refusal is logged and recorded as an auth event (transport ``admin``). The chain comes from the ASGI
TLS extension (``transport.http.server``, or ``transport.http.proxy_cert`` behind a trusted proxy).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import get_user_model, logout
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.urls import reverse

from certauth.authenticator import CertificateAuthenticator
from transport.xmpp.jid import InvalidJid, parse_bare_jid
from xmppauth.config import TlsOptions

logger = logging.getLogger(__name__)

TLS_EXTENSION = "tls"  # the ASGI TLS extension
LISTENER_EXTENSION = "xmppauth.listener"  # set by transport.http.server for our TLS listeners
TRANSPORT = "admin"


def _listener_tls(scope: dict) -> TlsOptions:
    """The TLS options of the listener the request came in on, in ``peer`` mode whatever they say."""
    index = (scope.get("extensions") or {}).get(LISTENER_EXTENSION)
    listeners = settings.XMPP.listen_http
    tls = listeners[index].tls if index is not None and 0 <= index < len(listeners) else None
    return dataclasses.replace(tls or TlsOptions(), verify_mode="peer")


def _chain(scope: dict) -> list[bytes]:
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION) or {}
    return [
        item.encode() if isinstance(item, str) else bytes(item) for item in tls.get("client_cert_chain") or ()
    ]


def certificate_staff_user(request: HttpRequest) -> tuple[object | None, str]:
    """The active staff user the request's client certificate maps to, or None and why not."""
    scope = getattr(request, "scope", None) or {}
    chain = _chain(scope)
    if not chain:
        return None, "no client certificate"
    peer = request.META.get("REMOTE_ADDR", "")
    check = CertificateAuthenticator(settings.XMPP, _listener_tls(scope), TRANSPORT, peer).check_certificate(
        chain
    )
    if not check.verified or check.facts is None:
        return None, f"client certificate refused: {check.reason}"
    addrs = check.facts.xmpp_addrs
    if len(addrs) != 1:
        return None, f"client certificate has {len(addrs)} xmppAddrs; the admin needs exactly one"
    try:
        jid = parse_bare_jid(addrs[0]).bare
    except InvalidJid as exc:
        return None, f"client certificate's xmppAddr is not a bare JID: {exc}"
    user = get_user_model().objects.filter(username=jid, is_staff=True, is_active=True).first()
    if user is None:
        return None, f"client certificate of {jid}: no active staff user of that name"
    return user, jid


class AdminCertificateMiddleware:
    """Refuse admin requests without a staff user's certificate when the option is on (module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.XMPP.options.admin_requires_certificate and request.path.startswith(
            reverse("admin:index")
        ):
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        user, detail = certificate_staff_user(request)
        if user is None:
            logger.warning(
                "admin request %s from %s refused: %s", request.path, request.META.get("REMOTE_ADDR"), detail
            )
            return HttpResponseForbidden("This admin needs the client certificate of a staff user.\n")
        logged_in = getattr(request, "user", None)
        if logged_in is not None and logged_in.is_authenticated and logged_in.pk != user.pk:
            logger.warning(
                "admin session of %s presented the certificate of %s: logged out",
                logged_in.get_username(),
                detail,
            )
            logout(request)
            return HttpResponseForbidden("This client certificate belongs to another staff user.\n")
        return None
