"""A private OpenLDAP ``slapd`` per test: its own config, database and port, plain LDAP and LDAPS.

Recipe checked on this machine: ``../shared/notes/ldap-slapd.md`` (Debian's slapd 2.5, a ``slapd.conf``-style
file, entries loaded with ``slapadd`` before start). The server certificate is made by ``tests.certs`` for
``localhost``; tests that use TLS give its CA to the client.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certs import Issued, make_ca
from tests.processes import free_port
from xmppauth.config import LdapPoolOptions

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=com"
ROOTDN = f"cn=admin,{SUFFIX}"
ROOTPW = "admin-secret"
USERS_BASE = f"ou=users,{SUFFIX}"


def _server_certificate(ca: Issued) -> Issued:
    """A serverAuth certificate for 127.0.0.1 and localhost (libldap may check the host's own name for
    ``localhost``, so that name is in it too)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
        x509.IPAddress(ip_address("127.0.0.1")),
    ]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key, ca)


@dataclass
class LdapUser:
    uid: str
    password: str | None = None
    certificates_der: Sequence[bytes] = ()
    mail: str | None = None
    employee_type: str | None = None  # for local_filter / filter tests


@dataclass
class Slapd:
    """``start()`` it with users; ``stop()``/``start()`` again to take the directory down and up."""

    users: list[LdapUser]
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slapd-")))
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    ca: Issued = field(default_factory=lambda: make_ca("slapd test CA"))
    process_pid: int | None = None

    def __post_init__(self) -> None:
        if not Path(SLAPD).exists():
            pytest.fail("slapd is not installed: install Debian's slapd and ldap-utils (.ci/run does)")
        server = _server_certificate(self.ca)
        (self.directory / "db").mkdir()
        (self.directory / "ca.pem").write_bytes(self.ca.pem)
        (self.directory / "server.pem").write_bytes(server.pem)
        (self.directory / "server.key").write_bytes(server.key_pem)
        (self.directory / "slapd.conf").write_text(self._config())
        (self.directory / "base.ldif").write_text(self._ldif())
        subprocess.run(
            [SLAPADD, "-f", str(self.directory / "slapd.conf"), "-l", str(self.directory / "base.ldif")],
            check=True,
            capture_output=True,
        )

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.pem")

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    def _config(self) -> str:
        d = self.directory
        return "\n".join(
            [
                "include /etc/ldap/schema/core.schema",
                "include /etc/ldap/schema/cosine.schema",
                "include /etc/ldap/schema/inetorgperson.schema",
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"pidfile {d}/slapd.pid",
                f"TLSCACertificateFile {d}/ca.pem",
                f"TLSCertificateFile {d}/server.pem",
                f"TLSCertificateKeyFile {d}/server.key",
                "access to attrs=userPassword by anonymous auth by self read by * none",
                "access to * by * read",
                "database mdb",
                "maxsize 104857600",
                f"suffix {SUFFIX}",
                f"rootdn {ROOTDN}",
                f"rootpw {ROOTPW}",
                f"directory {d}/db",
                "",
            ]
        )

    def _ldif(self) -> str:
        blocks = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
            f"dn: {USERS_BASE}\nobjectClass: organizationalUnit\nou: users\n",
        ]
        for user in self.users:
            lines = [
                f"dn: uid={user.uid},{USERS_BASE}",
                "objectClass: inetOrgPerson",
                f"uid: {user.uid}",
                f"cn: {user.uid}",
                f"sn: {user.uid}",
            ]
            if user.password is not None:
                lines.append(f"userPassword: {user.password}")
            if user.mail:
                lines.append(f"mail: {user.mail}")
            if user.employee_type:
                lines.append(f"employeeType: {user.employee_type}")
            lines += [
                f"userCertificate;binary:: {base64.b64encode(der).decode()}" for der in user.certificates_der
            ]
            blocks.append("\n".join(lines) + "\n")
        return "\n".join(blocks)

    def start(self) -> None:
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"
        subprocess.run([SLAPD, "-f", str(self.directory / "slapd.conf"), "-h", urls], check=True)
        deadline = time.monotonic() + 10
        pid_file = self.directory / "slapd.pid"
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                self.process_pid = int(pid_file.read_text())
                if self._answers():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"slapd did not come up on {urls}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process_pid is None:
            return
        try:
            os.kill(self.process_pid, signal.SIGTERM)
        except ProcessLookupError:
            self.process_pid = None
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.process_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(self.process_pid, signal.SIGKILL)
        self.process_pid = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def pool_options(server: Slapd, **changes: object) -> LdapPoolOptions:
    """A search pool on ``server`` bound as its rootdn, with short timeouts, ``changes`` applied."""
    options = LdapPoolOptions(
        servers=("127.0.0.1",),
        port=server.port,
        rootdn=ROOTDN,
        password=ROOTPW,
        workers=2,
        call_timeout_ms=2000,
        connect_interval_ms=100,
    )
    return replace(options, **changes)  # type: ignore[arg-type]
