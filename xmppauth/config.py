"""The operator's TOML config, with MongooseIM's option names (PLACEHOLDER: the full parser is being written).

Public interface (others code against it): ``load_config(path) -> Config``, ``parse_config(data, source) -> Config``,
``ConfigError``; the dataclasses below.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A config file that cannot be used; the message names the key and what is accepted."""


@dataclass(frozen=True)
class TlsOptions:
    mode: str = "starttls"  # c2s: starttls | starttls_required | tls ; http: tls
    certfile: str | None = None
    keyfile: str | None = None
    cacertfile: str | None = None
    verify_mode: str = "peer"  # peer | selfsigned_peer | none
    disconnect_on_failure: bool = True
    crl_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class C2SListener:
    port: int = 5222
    ip_address: str = "0.0.0.0"
    tls: TlsOptions | None = None
    max_stanza_size: int = 65536


@dataclass(frozen=True)
class HttpHandler:
    kind: str  # mod_websockets | mod_bosh
    host: str = "_"
    path: str = "/"


@dataclass(frozen=True)
class HttpListener:
    port: int = 5443
    ip_address: str = "0.0.0.0"
    tls: TlsOptions | None = None
    handlers: tuple[HttpHandler, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    methods: tuple[str, ...] = ("pki",)
    sasl_mechanisms: tuple[str, ...] = ("external",)
    sasl_external: tuple[str, ...] = ("standard",)
    common_name_prefix: str = ""
    common_name_suffix: str = ""


@dataclass(frozen=True)
class Config:
    hosts: tuple[str, ...] = ("localhost",)
    listen_c2s: tuple[C2SListener, ...] = ()
    listen_http: tuple[HttpListener, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    source: str = "<defaults>"


def parse_config(data: dict, source: str = "<string>") -> Config:
    hosts = tuple(data.get("general", {}).get("hosts", ["localhost"]))
    return Config(hosts=hosts, source=source)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found (set XMPPAUTH_CONFIG)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path))
