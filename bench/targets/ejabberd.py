"""ejabberd (Debian's ``ejabberd`` package) as a comparison target: direct TLS, SASL EXTERNAL (XEP-0178).

The script's own instance, never the system's: ``erl`` started directly (no ``ejabberdctl``, which wants the
ejabberd user and the system's paths) with ``EJABBERD_CONFIG_PATH`` pointing at an ``ejabberd.yml`` in the
scratch directory, Mnesia's spool and the logs there too, no Erlang distribution (no node name, so no epmd
and no distribution port), and one c2s listener on 127.0.0.1 with ``tls: true`` (XEP-0368 direct TLS),
``tls_verify: true`` and ``cafile`` (the client certificate must chain to the bench CA, which is what lets
ejabberd offer EXTERNAL), ``backlog: 1024`` (without it 50 concurrent connects stall) and ``shaper: none``.
``erl`` execs ``beam.smp`` in the same process, so the child's pid is the VM whose CPU and memory we read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.targets.common import HOST, Child, Target, TargetUnavailable, free_port

ERL = "/usr/bin/erl"
LIB_ROOT = Path("/usr/lib/x86_64-linux-gnu")  # Debian's ERL_LIBS for ejabberd and its dependencies
PACKAGE = "ejabberd"


def installed() -> bool:
    return Path(ERL).exists() and any(LIB_ROOT.glob("ejabberd-*/ebin/ejabberd.app"))


def version() -> str:
    found = sorted(LIB_ROOT.glob("ejabberd-*/ebin/ejabberd.app"))
    return found[-1].parent.parent.name.removeprefix("ejabberd-") if found else "?"


def config_yaml(domain: str, port: int, certfile: Path, cafile: Path, loglevel: str, log_dir: Path) -> str:
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
acl:
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
) -> Ejabberd:
    """A fresh ejabberd in ``directory`` (created), listening on a free port of 127.0.0.1."""
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
    config.write_text(config_yaml(domain, port, certfile, directory / "ca.pem", loglevel, logs))
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
    child = Child(command, env, directory / "console.log", cwd=directory)
    child.wait_port(port)
    return Ejabberd(child, port)
