"""ejabberd (Debian's ``ejabberd`` package) as a comparison target: direct TLS, SASL EXTERNAL (XEP-0178).

The script's own instance, never the system's: ``erl`` started directly (no ``ejabberdctl``, which wants the
ejabberd user and the system's paths) with ``EJABBERD_CONFIG_PATH`` pointing at an ``ejabberd.yml`` in the
scratch directory, Mnesia's spool and the logs there too, no Erlang distribution (no node name, so no epmd
and no distribution port), and one c2s listener on 127.0.0.1 with ``tls: true`` (XEP-0368 direct TLS),
``tls_verify: true`` and ``cafile`` (the client certificate must chain to the bench CA, which is what lets
ejabberd offer EXTERNAL), ``backlog: 1024`` (without it 50 concurrent connects stall) and ``shaper: none``.
``erl`` execs ``beam.smp`` in the same process, so the child's pid is the VM whose CPU and memory we read.

With ``users`` and ``password`` (issue 14: passwords beside certificates), ejabberd keeps SCRAM-SHA-256 keys
(``auth_password_format: scram``, ``auth_scram_hash: sha256``) and the users are registered at start-up with
``ejabberd_auth:try_register`` (what ``ejabberdctl register`` calls) from an ``-eval`` after ``-s ejabberd``;
the port is used once a marker file says every registration returned ``ok``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from bench.targets.common import HOST, START_TIMEOUT, Child, Target, TargetUnavailable, free_port

ERL = "/usr/bin/erl"
LIB_ROOT = Path("/usr/lib/x86_64-linux-gnu")  # Debian's ERL_LIBS for ejabberd and its dependencies
PACKAGE = "ejabberd"


def installed() -> bool:
    return Path(ERL).exists() and any(LIB_ROOT.glob("ejabberd-*/ebin/ejabberd.app"))


def version() -> str:
    found = sorted(LIB_ROOT.glob("ejabberd-*/ebin/ejabberd.app"))
    return found[-1].parent.parent.name.removeprefix("ejabberd-") if found else "?"


def config_yaml(
    domain: str, port: int, certfile: Path, cafile: Path, loglevel: str, log_dir: Path, *, scram: bool = False
) -> str:
    passwords = "auth_password_format: scram\nauth_scram_hash: sha256\n" if scram else ""
    return f"""\
hosts:
  - "{domain}"
loglevel: {loglevel}
log_rotate_count: 0
hide_sensitive_log_data: true
certfiles:
  - "{certfile}"
ca_file: "{cafile}"
listen:
  -
    port: {port}
    ip: "{HOST}"
    module: ejabberd_c2s
    tls: true
    tls_verify: true
    cafile: "{cafile}"
    backlog: 1024
    shaper: none
    max_stanza_size: 262144
    access: c2s
auth_method: [internal]
{passwords}acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
shaper_rules: {{}}
modules:
  mod_ping: {{}}
  mod_disco: {{}}
"""


class Ejabberd(Target):
    """One ejabberd VM listening for direct TLS on ``port``."""


def start(
    directory: Path,
    domain: str,
    server_cert: Path,
    server_key: Path,
    cafile: Path,
    *,
    loglevel: str = "warning",
    users: Sequence[str] = (),
    password: str | None = None,
) -> Ejabberd:
    """A fresh ejabberd in ``directory`` (created), listening on a free port of 127.0.0.1; with ``password``,
    ``users`` (localparts) registered with it."""
    if not installed():
        raise TargetUnavailable("ejabberd is not installed (apt-get install ejabberd)")
    directory.mkdir(parents=True, exist_ok=True)
    spool, logs = directory / "spool", directory / "logs"
    spool.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    certfile = directory / "server-bundle.pem"  # ejabberd wants the key and the certificate in one file
    certfile.write_bytes(server_key.read_bytes() + server_cert.read_bytes())
    certfile.chmod(0o600)
    shutil.copy(cafile, directory / "ca.pem")
    port = free_port()
    config = directory / "ejabberd.yml"
    scram = password is not None
    config.write_text(config_yaml(domain, port, certfile, directory / "ca.pem", loglevel, logs, scram=scram))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),  # any cookie file the VM wants goes here, not into root's home
        "LANG": "C.UTF-8",
        "ERL_LIBS": str(LIB_ROOT),
        "EJABBERD_CONFIG_PATH": str(config),
        "ERL_CRASH_DUMP": str(logs / "erl_crash.dump"),
        "ERL_MAX_PORTS": "65536",
        "ERL_EPMD_ADDRESS": HOST,
    }
    command = [
        ERL,
        "+K",
        "true",
        "+P",
        "250000",
        "-noinput",
        "-mnesia",
        "dir",
        f'"{spool}"',
        "-ejabberd",
        "log_path",
        f'"{logs / "ejabberd.log"}"',
        "-s",
        "ejabberd",
    ]
    if password is not None:
        command += ["-eval", _register_users(directory, domain, users, password)]
    child = Child(command, env, directory / "console.log", cwd=directory)
    child.wait_port(port)
    if password is not None:
        _wait_registered(child, directory / "registered")
    return Ejabberd(child, port)


def _erlang_binary(text: str) -> str:
    if '"' in text or "\\" in text or not text.isascii():
        raise ValueError(f"not written as an Erlang binary here: {text!r}")
    return f'<<"{text}">>'


def _register_users(directory: Path, domain: str, users: Sequence[str], password: str) -> str:
    """The ``-eval`` expression that registers ``users`` and then writes the set of results to a file."""
    (directory / "register.eterm").write_text("[" + ", ".join(_erlang_binary(u) for u in users) + "].\n")
    return (
        '{ok, [Users]} = file:consult("register.eterm"), '
        f"Results = [ejabberd_auth:try_register(U, {_erlang_binary(domain)}, {_erlang_binary(password)})"
        " || U <- Users], "
        'file:write_file("registered", io_lib:format("~p", [lists:usort(Results)])).'
    )


def _wait_registered(child: Child, marker: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not marker.exists():
        if child.process.poll() is not None or time.monotonic() > deadline:
            child.stop()
            raise TargetUnavailable(f"ejabberd did not register the users:\n{child.output()[-3000:]}")
        time.sleep(0.2)
    time.sleep(0.2)  # the marker is written in one call; let it finish
    if marker.read_text().strip() not in ("[ok]", "[]"):
        child.stop()
        raise TargetUnavailable(f"ejabberd registrations failed: {marker.read_text()[:500]}")
