"""What a listener's TLS options demand of a client certificate: the rules both the handshake
(``transport.tls.context``) and the session driver (``transport.driver``) apply, without OpenSSL or Twisted.

Specs: MongooseIM's ``verify_mode`` and ``disconnect_on_failure`` (DESIGN §0, §3).
"""

from __future__ import annotations

from certauth.verify import VERIFY_MODES
from xmppauth.config import TlsOptions

__all__ = ["must_disconnect", "requests_certificate", "requires_certificate"]


def requests_certificate(options: TlsOptions) -> bool:
    """Whether the handshake asks the client for a certificate: never with ``verify_mode = "none"``."""
    return VERIFY_MODES[options.verify_mode].requests_certificate


def requires_certificate(options: TlsOptions) -> bool:
    """Whether the handshake itself refuses a client without a valid certificate (MongooseIM semantics)."""
    return requests_certificate(options) and options.disconnect_on_failure


def must_disconnect(options: TlsOptions, verified: bool) -> bool:
    """Whether a connection whose certificate our verification refused must be cut after the handshake."""
    return requires_certificate(options) and not verified
