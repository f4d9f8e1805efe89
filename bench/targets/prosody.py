"""Prosody (Debian's ``prosody``) with ``mod_auth_ccert`` (``prosody-modules``) as a comparison target.

The script's own instance, never the system's: ``prosody --config FILE -F`` with a config in the scratch
directory (never the bare binary, which reads /etc/prosody and listens on public ports), run as the
``prosody`` user, data and log there too. One direct TLS c2s port (XEP-0368, ``c2s_direct_tls_ports``) on
127.0.0.1, no STARTTLS port, no s2s, no HTTP. Certificate login as mod_auth_ccert's documentation sets it up:
``authentication = "ccert"``, ``certificate_match = "xmppaddr"``, ``verify = {"peer", "client_once"}``,
``verifyext = {"lsec_continue", "crl_check", lsec_ignore_purpose = false}``, with the same TLS settings on the
VirtualHost. ``crl_check`` makes OpenSSL want a CRL of the client's issuer, so ``capath`` is a directory
holding the CA's (empty) CRL under its OpenSSL hash name; the default capath would be /etc/ssl/certs.

With ``users`` and ``password`` (issue 14: passwords beside certificates) the VirtualHost uses
``authentication = "internal_hashed"`` with ``password_hash = "SHA-256"`` (SCRAM-SHA-256) and the same TLS;
each user's account file in the data directory holds the password as text, which Prosody replaces with its
salted SCRAM keys at that user's first login (``mod_auth_internal_hashed``): the comparison's untimed pass
over every user does that before the timed run.
"""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from bench.targets.common import HOST, Child, Target, TargetUnavailable, free_port
from certauth.pki import PrivateKey

PROSODY = "/usr/bin/prosody"
CCERT = Path("/usr/lib/prosody/modules/mod_auth_ccert/mod_auth_ccert.lua")
USER = "prosody"
PACKAGES = ("prosody", "prosody-modules")


def installed() -> bool:
    return Path(PROSODY).exists() and CCERT.exists()


def version() -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "prosody"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "?"


def _lua_ssl(cert: Path, key: Path, cafile: Path, capath: Path) -> str:
    return (
        "{\n"
        f'    certificate = "{cert}";\n'
        f'    key = "{key}";\n'
        f'    cafile = "{cafile}";\n'
        f'    capath = "{capath}";\n'
        '    verify = { "peer", "client_once" };\n'
        '    verifyext = { "lsec_continue", "crl_check", lsec_ignore_purpose = false };\n'
        "  }"
    )


def config_lua(
    directory: Path,
    domain: str,
    port: int,
    cert: Path,
    key: Path,
    cafile: Path,
    capath: Path,
    *,
    passwords: bool = False,
) -> str:
    ssl = _lua_ssl(cert, key, cafile, capath)
    auth = (
        'authentication = "internal_hashed"\n  password_hash = "SHA-256"'
        if passwords
        else 'authentication = "ccert"\n  certificate_match = "xmppaddr"'
    )
    return f"""\
certificates = "{directory / "certs"}"
pidfile = "{directory / "prosody.pid"}"
data_path = "{directory / "data"}"
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = "{directory / "prosody.log"}" }} }}
network_backend = "epoll"
interfaces = {{ "{HOST}" }}
c2s_ports = {{ }}
c2s_direct_tls_ports = {{ {port} }}
c2s_direct_tls_interfaces = {{ "{HOST}" }}
s2s_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
component_ports = {{ }}
modules_enabled = {{ "tls", "saslauth", "ping", "disco", "roster" }}
modules_disabled = {{ "s2s", "offline" }}
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
ssl = {ssl}

VirtualHost "{domain}"
  {auth}
  ssl = {ssl}
"""


def write_crl(ca_cert_file: Path, ca_key: PrivateKey, capath: Path) -> None:
    """An empty CRL of the CA, as ``<issuer hash>.r0`` in ``capath`` (OpenSSL's lookup for crl_check)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_file.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=2))
        .sign(ca_key, hashes.SHA256())
    )
    capath.mkdir(parents=True, exist_ok=True)
    crl_file = capath / "ca.crl.pem"
    crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    shutil.copy(ca_cert_file, capath / "ca.pem")
    subject_hash = subprocess.run(
        ["openssl", "x509", "-noout", "-subject_hash", "-in", str(ca_cert_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (capath / f"{subject_hash}.0").symlink_to("ca.pem")
    (capath / f"{subject_hash}.r0").symlink_to("ca.crl.pem")


class Prosody(Target):
    """One Prosody process listening for direct TLS on ``port``."""


def _store_name(text: str) -> str:
    """Prosody's datamanager file name for a host or user: every non-alphanumeric byte as %xx."""
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02x}" for b in text.encode())


def write_accounts(data: Path, domain: str, users: Sequence[str], password: str) -> None:
    """Account files holding ``password`` as text (hashed by Prosody at each user's first login)."""
    if '"' in password or "\\" in password or "\n" in password:
        raise ValueError("the password is written into a Lua string: no quote, backslash or newline")
    accounts = data / _store_name(domain) / "accounts"
    accounts.mkdir(parents=True, exist_ok=True)
    record = f'return {{\n\t["password"] = "{password}";\n}};\n'
    for user in users:
        (accounts / f"{_store_name(user)}.dat").write_text(record)


def start(
    directory: Path,
    domain: str,
    server_cert: Path,
    server_key: Path,
    cafile: Path,
    ca_key: PrivateKey,
    *,
    users: Sequence[str] = (),
    password: str | None = None,
) -> Prosody:
    """A fresh Prosody in ``directory`` (created, owned by the prosody user) on a free port of 127.0.0.1; with
    ``password``, SCRAM-SHA-256 logins of ``users`` (localparts) instead of certificate logins."""
    if not installed():
        raise TargetUnavailable("prosody or prosody-modules is not installed (apt-get install both)")
    try:
        account = pwd.getpwnam(USER)
    except KeyError as exc:
        raise TargetUnavailable(f"no {USER} user (Debian's prosody package makes it)") from exc
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    (directory / "certs").mkdir(exist_ok=True)
    for name, source in (("server.pem", server_cert), ("server.key", server_key), ("ca.pem", cafile)):
        shutil.copy(source, directory / name)
    capath = directory / "capath"
    write_crl(cafile, ca_key, capath)
    if password is not None:
        write_accounts(directory / "data", domain, users, password)
    port = free_port()
    config = directory / "prosody.cfg.lua"
    config.write_text(
        config_lua(
            directory,
            domain,
            port,
            directory / "server.pem",
            directory / "server.key",
            directory / "ca.pem",
            capath,
            passwords=password is not None,
        )
    )
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
    (directory / "server.key").chmod(0o600)
    for (
        parent
    ) in directory.parents:  # the scratch directory (mkdtemp: 0700) must let the prosody user through
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o111)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory), "LANG": "C.UTF-8"}
    command = [PROSODY, "--config", str(config), "-F"]
    child = Child(command, env, directory / "console.log", cwd=directory, user=USER)
    child.wait_port(port)
    return Prosody(child, port)
