"""Listener processes (``runc2s``, ``runworker``) on a fault test's own PostgreSQL and Redis servers.

As production (README's layout): every process reads one config and one database, and with Redis the
listeners reach each other's sessions through it (DESIGN §1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.certs import make_client
from tests.im.agents import SlixAgent, is_message
from tests.im.processes import Managed, c2s_config, free_port, server_env, start_runc2s
from tests.transport.runc2s_process import manage
from tests.transport.tlsclient import make_pki

USERS = ("alice", "bob", "carol", "dave", "erin")


class FaultCluster:
    """A migrated database of ``db_url``, a client CA, and the server processes started on them."""

    def __init__(self, directory: Path, db_url: str, redis_url: str | None = None) -> None:
        self.directory = directory
        self.db_url = db_url
        self.redis_url = redis_url
        self.pki = make_pki(directory)
        self.cafile = directory / "ca.pem"
        self.cafile.write_bytes(self.pki.ca.pem)
        self.certs = {name: make_client(self.pki.ca, jids=[f"{name}@localhost"]) for name in USERS}
        self.processes: list[Managed] = []
        self.router_channel = f"xmpp.router.{uuid.uuid4().hex}"
        result = manage(self.env("migrate", free_port()), "migrate", "--noinput")
        assert result.returncode == 0, result.stdout + result.stderr

    def env(self, name: str, port: int, **options: object) -> dict[str, str]:
        config = c2s_config(
            self.directory / f"{name}.toml",
            port,
            self.pki.server_certfile,
            self.pki.server_keyfile,
            self.cafile,
            **options,
        )
        env = server_env(self.directory, config, self.redis_url, self.router_channel)
        env["DATABASE_URL"] = self.db_url
        return env

    def runc2s(self, name: str, **options: object) -> tuple[int, Managed]:
        port = free_port()
        process = start_runc2s(self.env(name, port, **options), port)
        self.processes.append(process)
        return port, process

    def router(self) -> Managed:
        process = Managed(self.env("router", free_port()), "runworker", self.router_channel)
        process.wait_for("Running worker")
        self.processes.append(process)
        return process

    def query(self, sql: str, *args: object) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db_url, connect_timeout=10) as connection:
            cursor = connection.execute(sql, args)
            return cursor.fetchall() if cursor.description is not None else []  # [] for UPDATE

    def stop(self) -> str:
        return "".join(f"== {p.args}\n{p.stop()}" for p in self.processes)

    def shutdown(self, agents: list[SlixAgent]) -> str:
        """Stop the clients, then every process; their output (printed: pytest shows it on failure)."""
        for agent in agents:
            if agent is not None:
                agent.stop()
        output = self.stop()
        print(output)
        return output


def chat(sender: SlixAgent, receiver: SlixAgent, body: str) -> None:
    """A chat message to ``receiver``'s full JID, and until it arrived."""
    sender.send(f"<message to='{receiver.full_jid}' type='chat'><body>{body}</body></message>")
    receiver.wait_for(is_message(sender.jid, body), f"{sender.jid}'s message {body!r}")


def logged(process: Managed, text: str, timeout: float = 60) -> None:
    """Until ``process`` printed ``text``, now or earlier (``Managed.wait_for`` only looks at lines it has
    not read yet, so two lines that may come in either order are each waited for with this)."""
    if not any(text in line for line in process.output):
        process.wait_for(text, timeout)


def eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """``check()`` until it returns something true; the timeout only bounds a hung server."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
    return result
