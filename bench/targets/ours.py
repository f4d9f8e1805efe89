"""Our server as a comparison target: ``manage.py runc2s`` or ``manage.py runxmpp`` on the bench setup.

Both read the scratch config of ``bench.run_login_bench.prepare`` (a STARTTLS and a direct TLS c2s listener,
``verify_mode = "peer"``, ``auth.methods = ["pki"]``, log level WARNING); runxmpp also needs a
``[[listen.http]]`` listener (it serves the admin, WebSocket and BOSH), so it gets a copy of that config with
a plain HTTP one on another free port of 127.0.0.1. The comparison uses the direct TLS listener.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.run_login_bench import ROOT, Scratch
from bench.targets.common import HOST, Child, Target, TargetUnavailable, free_port

COMMANDS = ("runc2s", "runxmpp")
SHARED = "runc2s-x2"  # two `runc2s --reuse-port` on the same ports, through Redis (README: one per core)
TARGETS = (*COMMANDS, SHARED)


class Ours(Target):
    """One runc2s or runxmpp process; ``port`` is its direct TLS c2s listener."""


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


@dataclass
class OursShared:
    """Several ``runc2s --reuse-port`` processes on the same ports; ``pid`` is all of them (CPU, memory)."""

    children: list[Child]
    port: int

    @property
    def pid(self) -> tuple[int, ...]:
        return tuple(child.pid for child in self.children)

    def stop(self) -> None:
        for child in self.children:
            child.stop()


def start_shared(scratch: Scratch, log_dir: Path, redis_url: str, processes: int = 2) -> OursShared:
    """``processes`` × ``manage.py runc2s --reuse-port`` on the scratch database, routing through Redis."""
    env = dict(scratch.env, REDIS_URL=redis_url, XMPPAUTH_ROUTER_CHANNEL=f"xmpp.router.bench{free_port()}")
    log_dir.mkdir(parents=True, exist_ok=True)
    children = []
    for n in range(processes):
        command = [sys.executable, "manage.py", "runc2s", "--reuse-port"]
        children.append(Child(command, env, log_dir / f"runc2s-{n}.log", cwd=ROOT))
        for port in (scratch.starttls_port, scratch.direct_port):
            children[-1].wait_port(port)
    shared = OursShared(children, scratch.direct_port)
    deadline = time.monotonic() + 60  # the port answers once the first listens: wait for every process
    while not all("runc2s ready:" in child.output() for child in children):
        if time.monotonic() > deadline or any(child.process.poll() is not None for child in children):
            shared.stop()
            raise TargetUnavailable("runc2s --reuse-port did not start:\n" + children[-1].output()[-2000:])
        time.sleep(0.2)
    return shared
