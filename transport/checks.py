"""Django system checks of the HTTP listeners (run at the start of every ``manage.py`` command).

``crl_distribution_point_check``: when nothing says where our CRLs are published (no ``XMPPAUTH_PUBLIC_URL``,
no ``[xmppauth] crl_base_url``, no ``crl_only`` listener), new certificates name the first ``[[listen.http]]``
(``certauth.services.crl_base_url``); if that listener refuses clients without a certificate, relying parties
cannot fetch the CRL (RFC 5280 §4.2.1.13), so say so at start-up.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


def crl_distribution_point_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from transport.tls.context import requires_certificate  # OpenSSL and Twisted only when checked

    config = settings.XMPP
    if settings.XMPPAUTH_PUBLIC_URL or config.options.crl_base_url or not config.listen_http:
        return []
    if any(listener.crl_only for listener in config.listen_http):
        return []
    first = config.listen_http[0]
    if first.tls is None or not requires_certificate(first.tls):
        return []
    return [
        checks.Warning(
            f"certificates we issue name our CRLs at https://{config.hosts[0]}:{first.port}/crl/, a listener "
            "that refuses clients without a certificate: relying parties cannot fetch them",
            hint="add a plain-HTTP [[listen.http]] with crl_only = true (new certificates then name it), "
            "or set [xmppauth] crl_base_url",
            id="transport.W001",
        )
    ]
