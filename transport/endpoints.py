"""Twisted endpoint descriptions for the config's HTTP listeners (daphne's `-e` syntax)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from xmppauth.config import Config, TlsOptions


def _escape(value: str) -> str:
    # Twisted endpoint strings use ':' and '=' as separators (twisted.internet.endpoints).
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def server_credentials(tls: TlsOptions) -> tuple[str, str]:
    """The listener's certificate and key files: from the config, else the bootstrap's under var/pki."""
    default_dir = Path(settings.VAR_DIR) / "pki"
    certfile = tls.certfile or str(default_dir / "server.pem")
    keyfile = tls.keyfile or (tls.certfile if tls.certfile else str(default_dir / "server.key"))
    return certfile, keyfile


def http_endpoint_descriptions(config: Config) -> list[str]:
    descriptions = []
    for listener in config.listen_http:
        base = f"port={listener.port}:interface={_escape(listener.ip_address)}"
        if listener.tls is None:
            descriptions.append(f"tcp:{base}")
        else:
            certfile, keyfile = server_credentials(listener.tls)
            descriptions.append(f"ssl:{base}:privateKey={_escape(keyfile)}:certKey={_escape(certfile)}")
    return descriptions
