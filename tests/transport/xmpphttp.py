"""Test helpers for XMPP over WebSocket and BOSH: our daphne server in a subprocess, and client files.

The server is run as operators run it: ``python -m transport.http.server -e xmpptls:listener=0 -e
xmpptls:listener=1 xmppauth.asgi:application`` (or ``manage.py runxmpp``) with a temporary TOML config and a
migrated SQLite file.
Listener 0 verifies client certificates in ``peer`` mode, listener 1 in ``selfsigned_peer`` mode; both keep a
connection whose certificate is refused (``disconnect_on_failure = false``), so refusals are visible as
"EXTERNAL not offered" rather than as a failed handshake. Listener 2 ("strict") is ``peer`` with
``disconnect_on_failure = true``. Listener 3 ("none") is ``verify_mode = "none"``: it requests no certificate.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.certs import Issued
from tests.processes import free_port, stop_process
from tests.transport.tlsclient import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "tests" / "js"
MODES = {"peer": 0, "selfsigned_peer": 1}  # verify_mode -> listener index
# listener name -> (verify_mode, disconnect_on_failure); "strict" is listener 2
LISTENERS = {
    "peer": ("peer", False),
    "selfsigned_peer": ("selfsigned_peer", False),
    "strict": ("peer", True),
    "none": ("none", True),
}


@dataclass(frozen=True)
class XmppHttpServer:
    pki: Pki
    directory: Path
    ports: dict[str, int]  # listener name (LISTENERS) -> port
    process: subprocess.Popen
    env: dict[str, str]  # the server's environment: run manage.py against its database with it

    def manage(self, *args: str, timeout: float = 120) -> str:
        """``manage.py *args`` against the server's database and config; returns its standard output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def last_auth_event(self) -> tuple[str, str, str, str]:
        """(outcome, condition, jid_requested, reason) of the server's latest AuthEvent (its SQLite file)."""
        with closing(sqlite3.connect(self.directory / "db.sqlite3")) as db:
            row = db.execute(
                "SELECT outcome, condition, jid_requested, reason FROM certauth_authevent"
                " ORDER BY id DESC LIMIT 1"
            ).fetchone()
        assert row is not None
        return row

    def url(self, mode: str, scheme: str) -> str:
        path = "/ws-xmpp" if scheme == "wss" else "/http-bind"
        return f"{scheme}://127.0.0.1:{self.ports[mode]}{path}"

    def client_files(self, client: Issued | None) -> tuple[Path, Path] | None:
        """PEM files (chain, key) presenting ``client``; None for no certificate."""
        if client is None:
            return None
        name = client.cert.serial_number
        certfile = self.directory / f"client-{name}.pem"
        keyfile = self.directory / f"client-{name}.key"
        chain = client.chain[:-1] or client.chain
        certfile.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        keyfile.write_bytes(client.key_pem)
        return certfile, keyfile


def server_environment(directory: Path) -> dict[str, str]:
    """The variables that point a process at the scratch server's config and database."""
    return {
        "DJANGO_SETTINGS_MODULE": "xmppauth.settings",
        "XMPPAUTH_CONFIG": str(directory / "xmppauth.toml"),
        "XMPPAUTH_VAR_DIR": str(directory / "var"),
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
    }


def start_server(
    directory: Path,
    *,
    runxmpp: bool = False,
    hosts: Sequence[str] = ("localhost",),
    tls_extra: str = "",
    allowed_origins: Sequence[str] = (),
    pki: Pki | None = None,
    recent_seconds: float | None = None,
    extra_toml: str = "",
) -> Iterator[XmppHttpServer]:
    """Migrate a scratch database, start the server, yield it once both ports answer, then stop it.

    The server is our daphne command line (production), or with ``runxmpp`` the embedded server (with
    ``recent_seconds``: its termination commands' "recent" window shrunk, tests/transport/short_recent.py).
    ``hosts`` become ``[general] hosts``; ``tls_extra`` is one more TOML line in every listener (``tls.*``).
    ``allowed_origins`` goes on every handler (``transport.http.origin``). ``pki`` replaces the default one
    (its
    ``ca`` is the listeners' ``tls.cacertfile``). ``extra_toml`` is appended to the config (e.g. an
    ``[auth]`` table).
    """
    pki = pki or make_pki(directory)
    cafile = directory / "client-ca.pem"
    cafile.write_bytes(pki.ca.pem)
    config = directory / "xmppauth.toml"
    # Every test client comes from 127.0.0.1 and a module shares one server: the per-address limit of failed
    # logins (tests/transport/test_tcp_limits.py and the ws/bosh unit tests test it) would refuse the module's
    # later tests after its tenth refusal, so these servers turn it off.
    limits = "\n[xmppauth]\n  auth_failures_per_minute = 0\n" if "[xmppauth]" not in extra_toml else ""

    def configure() -> dict[str, int]:
        """Fresh ports, written into the config; the ports by listener name."""
        ports = {name: free_port() for name in LISTENERS}
        listeners = "".join(
            f"""
[[listen.http]]
  port = {ports[name]}
  ip_address = "127.0.0.1"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{cafile}"
  tls.verify_mode = "{mode}"
  tls.disconnect_on_failure = {str(disconnect).lower()}
  {tls_extra}
  [[listen.http.handlers.mod_websockets]]
    path = "/ws-xmpp"
    allowed_origins = {json.dumps(list(allowed_origins))}
  [[listen.http.handlers.mod_bosh]]
    path = "/http-bind"
    allowed_origins = {json.dumps(list(allowed_origins))}
"""
            for name, (mode, disconnect) in LISTENERS.items()
        )
        hosts_line = f"[general]\n  hosts = {json.dumps(list(hosts))}\n"
        config.write_text(hosts_line + listeners + extra_toml + limits)
        return ports

    ports = configure()
    env = {**os.environ, **server_environment(directory)}
    env.pop("REDIS_URL", None)
    migrate = [sys.executable, "manage.py", "migrate", "-v0"]
    subprocess.run(migrate, cwd=REPO, env=env, check=True, timeout=120)
    if runxmpp and recent_seconds is not None:
        command = ["-m", "tests.transport.short_recent", "runxmpp"]
        env["XMPPAUTH_TEST_RECENT_SECONDS"] = str(recent_seconds)
    elif runxmpp:
        command = ["manage.py", "runxmpp"]
    else:
        endpoints = [arg for index in range(len(LISTENERS)) for arg in ("-e", f"xmpptls:listener={index}")]
        command = ["-m", "transport.http.server", *endpoints, "xmppauth.asgi:application"]
    for attempt in range(1, PORT_ATTEMPTS + 1):
        if attempt > 1:
            ports = configure()
        log_path = directory / "server.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if not _listening_on(ports.values(), process, log_path):
                # another process took a port between free_port (which checked it) and the server's bind
                assert attempt < PORT_ATTEMPTS, "the server could not listen:\n" + log_path.read_text()
                continue
            yield XmppHttpServer(pki, directory, ports, process, env)
            return
        finally:
            stop_process(process)
            log.close()


PORT_ATTEMPTS = 3


def _listening_on(ports: Iterable[int], process: subprocess.Popen, log_path: Path) -> bool:
    """Until the server logs that it listens on every port and each one answers; False when it could not
    bind one (daphne logs a listen failure and stops). An answer alone would not do: the port may be another
    process's (the other test leg's free_port handed out the same one)."""
    deadline = time.monotonic() + 60
    for port in ports:
        while True:
            text = log_path.read_text()
            if "Listen failure" in text or process.poll() is not None:
                return False
            if f"listening on 127.0.0.1:{port} " in text:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                    break
                except OSError:
                    pass
            assert time.monotonic() < deadline, "the server did not listen within 60 s:\n" + text
            time.sleep(0.2)
    return True


def strophe_login(
    server: XmppHttpServer,
    url: str,
    client: Issued | None,
    jid: str = "alice@localhost",
    *,
    password: str | None = None,
    mechanism: str | None = None,
) -> dict:
    """Run ``tests/js/login.cjs`` (Strophe.js under Node) and return its JSON verdict; with ``password`` it
    logs in with it (only ``mechanism`` when given) instead of EXTERNAL."""
    files = server.client_files(client)
    args = ["node", str(JS_DIR / "login.cjs"), url, jid, *(str(f) for f in files or ())]
    # One resend of a failed BOSH request, then Strophe gives up ("connfail"): a refused handshake is told
    # within seconds, not by the script's 20 s watchdog ("timeout"); these servers fail no request otherwise.
    env = dict(os.environ, LOGIN_MAX_RETRIES="1")
    if password is not None:
        env["LOGIN_PASSWORD"] = password
    if mechanism is not None:
        env["LOGIN_MECHANISM"] = mechanism
    done = subprocess.run(args, cwd=JS_DIR, capture_output=True, text=True, timeout=60, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no verdict from login.cjs (exit {done.returncode}): {done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])
