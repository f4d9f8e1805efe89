"""Our server as a comparison target: ``manage.py runc2s`` or ``manage.py runxmpp`` on the bench setup.

Both read the scratch config of ``bench.run_login_bench.prepare`` (a STARTTLS and a direct TLS c2s listener,
``verify_mode = "peer"``, ``auth.methods = ["pki"]``, log level WARNING); runxmpp also needs a
``[[listen.http]]`` listener (it serves the admin, WebSocket and BOSH), so it gets a copy of that config with
a plain HTTP one on another free port of 127.0.0.1. The comparison uses the direct TLS listener.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.run_login_bench import Scratch
from bench.targets.common import HOST, Child, free_port

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("runc2s", "runxmpp")


@dataclass
class Ours:
    """One runc2s or runxmpp process; ``port`` is its direct TLS c2s listener."""

    child: Child
    port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    def stop(self) -> None:
        self.child.stop()


def start(scratch: Scratch, command: str, log_dir: Path) -> Ours:
    """``manage.py <command>`` on the scratch database and CA, once both c2s ports accept."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; accepted values: {', '.join(COMMANDS)}")
    env = dict(scratch.env)
    if command == "runxmpp":
        config = scratch.directory / "xmppauth-runxmpp.toml"
        base = Path(scratch.env["XMPPAUTH_CONFIG"]).read_text()
        config.write_text(f'{base}\n[[listen.http]]\n  port = {free_port()}\n  ip_address = "{HOST}"\n')
        env["XMPPAUTH_CONFIG"] = str(config)
    log_dir.mkdir(parents=True, exist_ok=True)
    child = Child([sys.executable, "manage.py", command], env, log_dir / f"{command}.log", cwd=ROOT)
    for port in (scratch.starttls_port, scratch.direct_port):
        child.wait_port(port)
    return Ours(child, scratch.direct_port)
