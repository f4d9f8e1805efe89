"""Web origins as text: RFC 6454 parsing and serialisation, for the config loader (``allowed_origins``) and
the ``Origin`` check of the WebSocket and BOSH endpoints (``transport.http.origin``, which holds the rule).

Specs: RFC 6454 §4 (an origin is scheme, host and port; a missing port is the scheme's default), §6.2 (the
serialisation), §7.1 (the opaque origin ``null``). Pure: the standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 80, "https": 443}  # RFC 6454 §4 step 6: the scheme's default port
_HOST_PORT = r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?"
# RFC 6454 §6.2 serialisation: scheme "://" host [ ":" port ]; a host is a DNS name (IDNs in their xn-- form,
# as browsers send them), an IPv4 address or a bracketed IPv6 address. Nothing else (no path, user, "*").
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://" + _HOST_PORT, re.IGNORECASE)
_HOST = re.compile(_HOST_PORT, re.IGNORECASE)  # a Host header: host [ ":" port ]


@dataclass(frozen=True)
class Origin:
    """An RFC 6454 tuple origin; ``port`` is explicit (the scheme's default filled in; None without one)."""

    scheme: str
    host: str
    port: int | None

    def __str__(self) -> str:
        """RFC 6454 §6.2 serialisation: the default port is left out."""
        if self.port is None or DEFAULT_PORTS.get(self.scheme) == self.port:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def _port(text: str | None, scheme: str) -> int | None:
    if text is None:
        return DEFAULT_PORTS.get(scheme)
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return port


def parse_origin(value: str) -> Origin:
    """An ``Origin`` header value or an ``allowed_origins`` entry as an :class:`Origin`.

    Raises ValueError for ``null`` and for anything that is not ``scheme://host[:port]``.
    """
    if value == "null":
        raise ValueError("'null' is the opaque origin any sandboxed or file: page has (RFC 6454 §7.1)")
    match = _ORIGIN.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not scheme://host[:port] (RFC 6454 §6.2)")
    scheme = match["scheme"].lower()
    return Origin(scheme, match["host"].lower(), _port(match["port"], scheme))


def parse_host(scheme: str, value: str) -> Origin:
    """The origin of a request that arrived with ``scheme`` and the ``Host`` header ``value``; ValueError
    when the header is not ``host[:port]``."""
    match = _HOST.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not host[:port]")
    return Origin(scheme, match["host"].lower(), _port(match["port"], scheme))


def parse_allowed_origin(value: str) -> str:
    """One ``allowed_origins`` entry, checked and in its canonical form; ValueError says what is wrong."""
    origin = parse_origin(value)
    if origin.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{value!r}: the scheme must be http or https")
    return str(origin)
