"""Login-rate and idle-memory benchmark of our c2s server, next to the TLS handshake limit of this machine.

Prints figures; not a test (``tests/test_bench_quick.py`` only checks that ``--quick`` still runs).

What it does, all on 127.0.0.1 with free ports:

1. a scratch directory: SQLite database migrated and bootstrapped (CA, server certificate) in its own
   XMPPAUTH_VAR_DIR, a TOML config with a STARTTLS and a direct TLS (XEP-0368) listener, ``verify_mode =
   "peer"``, ``auth.methods = ["pki"]``, XMPPAUTH_LOG_LEVEL=WARNING;
2. one client certificate per simulated user, issued by that server's CA (``bench.clientcerts``);
3. ``manage.py runc2s`` as its own process (open-file limit raised), then ``bench.loadclient`` logins over
   direct TLS and over STARTTLS of users whose accounts exist (``bench.clientcerts.provision_accounts``, as
   an operator creates them), and direct TLS first logins (the account created at login), reading the
   server's CPU time from /proc;
4. ``openssl s_server -rev`` with the same certificate, CA and ``-Verify 1``, and the same client doing only
   the mutual-TLS handshake: the ceiling our login rate is compared with;
5. for each ``--idle`` size, a fresh ``runc2s`` (so freed memory of earlier runs is not reused), that many
   sessions logged in and held, and the server's resident memory per session.

Run from the checkout::

    .venv/bin/python -m bench.run_login_bench            # full: 2000 logins at 50, idle 1000 and 10000
    .venv/bin/python -m bench.run_login_bench --quick    # under a minute: 200 logins, idle 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL

from bench.clientcerts import KEY_TYPES, load_server_ca, make_identities, provision_accounts
from bench.loadclient import (
    IdleReport,
    LoginReport,
    ScramKeyCache,
    contexts_for,
    idle_rows,
    login_rows,
    raise_nofile_limit,
    run_idle,
    run_logins,
    scram_connector,
    tls_connector,
    xmpp_connector,
)

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "localhost"
HOST = "127.0.0.1"
START_TIMEOUT = 60.0
WARM_UP_LOGINS = 20
LABEL_DIRECT = "XMPP login, direct TLS"
LABEL_STARTTLS = "XMPP login, STARTTLS"
LABEL_FIRST = "XMPP login, direct TLS, first login"
LABEL_SCRAM = "XMPP login, direct TLS, SCRAM-SHA-256"
BENCH_PASSWORD = "bench password, never a real one"
SCRAM_ITERATIONS = 10000  # MongooseIM's default auth.password.scram_iterations


@dataclass(frozen=True)
class Scratch:
    """The scratch server's files and environment."""

    directory: Path
    env: dict[str, str]
    starttls_port: int
    direct_port: int

    @property
    def pki(self) -> Path:
        return self.directory / "var" / "pki"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def config_toml(
    starttls_port: int, direct_port: int, ping_interval: int | None = None, crl_files: tuple[Path, ...] = ()
) -> str:
    listeners = []
    crls = f"  tls.crl_files = {json.dumps([str(path) for path in crl_files])}\n" if crl_files else ""
    for port, mode in ((starttls_port, "starttls"), (direct_port, "tls")):
        listeners.append(
            f'[[listen.c2s]]\n  port = {port}\n  ip_address = "{HOST}"\n  tls.mode = "{mode}"\n'
            '  tls.verify_mode = "peer"\n' + crls
        )
    # Every bench client connects from 127.0.0.1: the per-address bounds (issue 16 point 3) would refuse them.
    options = "\n[xmppauth]\n  max_connections_per_address = 0\n  auth_failures_per_minute = 0\n"
    if ping_interval is not None:
        options += f"  ping_interval_seconds = {ping_interval}\n"
    return (
        f'[general]\n  hosts = ["{DOMAIN}"]\n\n'
        + "\n".join(listeners)
        + '\n[auth]\n  methods = ["pki", "rdbms"]\n  sasl_mechanisms = ["external", "scram_sha256"]\n'
        + '  sasl_external = ["standard"]\n'
        + f'  [auth.password]\n    hash = ["sha256"]\n    scram_iterations = {SCRAM_ITERATIONS}\n'
        + options
    )


def prepare(directory: Path, database_url: str | None = None, ping_interval: int | None = None) -> Scratch:
    """Config, migrated database and bootstrap (CA, server certificate) in ``directory``.

    ``database_url`` replaces the scratch SQLite file (a database that may be thrown away: the bench adds a CA
    and thousands of accounts to it).
    """
    starttls_port, direct_port = free_port(), free_port()
    config = directory / "xmppauth.toml"
    config.write_text(config_toml(starttls_port, direct_port, ping_interval))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        XMPPAUTH_VAR_DIR=str(directory / "var"),
        DATABASE_URL=database_url or f"sqlite:///{directory / 'db.sqlite3'}",
        XMPPAUTH_LOG_LEVEL="WARNING",
        XMPPAUTH_ADMIN_PASSWORD=secrets.token_urlsafe(12),  # so bootstrap prints none
        PYTHONUNBUFFERED="1",
    )
    for command in (["migrate", "--noinput"], ["bootstrap"]):
        result = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return Scratch(directory, env, starttls_port, direct_port)


def _raise_child_nofile() -> None:
    """In the server's process before exec: as many open files as the hard limit allows (prlimit)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """A child process (runc2s or openssl s_server) whose output is kept for the report."""

    def __init__(self, command: list[str], env: dict[str, str], ready: str, cwd: Path = ROOT) -> None:
        self.command = command
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_raise_child_nofile,  # noqa: PLW1509 (no threads of ours touch the child before exec)
        )
        self.output: list[str] = []
        self._ready = threading.Event()
        self._ready_text = ready
        self._ready_count = 0
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if self._ready_text in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        if not self._ready.wait(timeout) or self.process.poll() is not None:
            raise SystemExit(f"{self.command[0]} did not start:\n{''.join(self.output)}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        return "".join(self.output)


def start_runc2s(scratch: Scratch) -> Server:
    server = Server([sys.executable, "manage.py", "runc2s"], scratch.env, ready="runc2s ready:")
    server.wait_ready()
    # Both listeners print a line; the second follows the first at once. Wait until both ports accept.
    wait_listening(server, (scratch.starttls_port, scratch.direct_port))
    return server


def wait_listening(server: Server, ports: tuple[int, ...], timeout: float = START_TIMEOUT) -> None:
    """Until each of ``ports`` accepts a connection; SystemExit with the output if one never does."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.process.poll() is not None:
                    name = " ".join(server.command[1:3])
                    raise SystemExit(f"{name} never listened on {port}:\n{server.stop()}") from None
                time.sleep(0.1)


@contextmanager
def running(server: Server, what: str, problems: list[str]) -> Iterator[Server]:
    """Stop the server afterwards and keep any traceback or error line it printed for the report."""
    try:
        yield server
    finally:
        died = server.process.poll()
        output = server.stop()
        bad = [line.rstrip() for line in output.splitlines() if "Traceback" in line or " ERROR " in line]
        if died is not None:
            problems.append(f"{what}: the server process exited with {died} during the run")
        if bad:
            problems.append(f"{what}: {len(bad)} error lines in the server output, first: {bad[0]}")
            problems.append(output[-4000:])


def openssl_limit(
    scratch: Scratch, contexts: list[ssl.SSLContext], count: int, concurrency: int
) -> LoginReport:
    """Mutual-TLS handshakes/s against ``openssl s_server`` (same server key, CA and client certificates)."""
    port = free_port()
    pki = scratch.pki
    command = ["openssl", "s_server", "-accept", f"{HOST}:{port}", "-rev", "-no_ticket", "-Verify", "1"]
    command += [
        "-cert",
        str(pki / "server.pem"),
        "-key",
        str(pki / "server.key"),
        "-CAfile",
        str(pki / "ca.pem"),
    ]
    server = Server([*command, "-naccept", str(count + 1)], dict(os.environ), ready="ACCEPT")
    server.wait_ready()
    try:
        connect = tls_connector(HOST, port, DOMAIN, contexts)
        label = "TLS handshake only, openssl s_server"
        return asyncio.run(run_logins(connect, count, concurrency, label, server_pid=server.pid, xmpp=False))
    finally:
        server.stop()


def login_runs(
    scratch: Scratch, ca: tuple, args: argparse.Namespace, problems: list[str]
) -> tuple[list[LoginReport], list[ssl.SSLContext]]:
    """XMPP logins on one runc2s: direct TLS and STARTTLS for accounts that exist (provisioned up front, as
    the operator does), then direct TLS first logins (the account created at login); the direct TLS contexts
    for openssl."""
    certs = scratch.directory / "clients"
    made = time.monotonic()
    users = {
        prefix: make_identities(*ca, DOMAIN, n, certs, key_type=args.key_type, prefix=prefix)
        for prefix, n in (
            ("d", args.count),
            ("s", args.count),
            ("f", args.count),
            ("p", args.count),
            ("w", WARM_UP_LOGINS),
        )
    }
    provision_accounts([*users["d"], *users["s"], *users["w"], *users["p"]])
    scram_cache = provision_passwords(users["p"])
    contexts = {prefix: contexts_for(identities) for prefix, identities in users.items()}
    total = sum(len(c) for c in contexts.values())
    print(
        f"# {total} client certificates ({args.key_type}) and contexts made in "
        f"{time.monotonic() - made:.1f} s; accounts provisioned except for the first-login run"
    )
    reports: list[LoginReport] = []
    with running(start_runc2s(scratch), "runc2s (logins)", problems) as server:
        warm_up(scratch, contexts["w"], problems)
        for label, port, prefix, use_starttls in (
            (LABEL_DIRECT, scratch.direct_port, "d", False),
            (LABEL_STARTTLS, scratch.starttls_port, "s", True),
            (LABEL_FIRST, scratch.direct_port, "f", False),
            (LABEL_SCRAM, scratch.direct_port, "p", False),
        ):
            if prefix == "p":
                # Issue 14: the same TLS (with the client's certificate, as the listener demands), then
                # SCRAM-SHA-256 instead of EXTERNAL; the client caches its keys per user as real clients do.
                localparts = [identity.jid.partition("@")[0] for identity in users["p"]]
                connect = scram_connector(
                    HOST, port, DOMAIN, contexts["p"], localparts, BENCH_PASSWORD, scram_cache
                )
            else:
                connect = xmpp_connector(HOST, port, DOMAIN, contexts[prefix], starttls=use_starttls)
            run = run_logins(connect, args.count, args.concurrency, label, server_pid=server.pid, xmpp=True)
            reports.append(asyncio.run(run))
            print("\n".join(login_rows(reports[-1:])[2:]), flush=True)
    return reports, contexts["d"]


def provision_passwords(identities: list) -> ScramKeyCache:
    """SCRAM-SHA-256 keys for these users' accounts (``accounts.passwords``, as ``account passwd``)."""
    from accounts.models import Account  # needs load_server_ca's django.setup()
    from accounts.passwords import set_password
    from xmppauth.config import PasswordOptions

    options = PasswordOptions(hashes=("sha256",), scram_iterations=SCRAM_ITERATIONS)
    cache = ScramKeyCache()
    for identity in identities:
        account = Account.objects.by_jid(identity.jid)
        set_password(account, BENCH_PASSWORD, options, validate=False)
        row = account.password_credentials.get(hash="sha256")
        cache.prefill(account.localpart, BENCH_PASSWORD, bytes(row.salt), row.iterations)
    return cache


def warm_up(scratch: Scratch, contexts: list[ssl.SSLContext], problems: list[str]) -> None:
    """A few logins first, so lazy imports and first queries are not counted."""
    connect = xmpp_connector(HOST, scratch.direct_port, DOMAIN, contexts, starttls=False)
    report = asyncio.run(run_logins(connect, len(contexts), 10, "warm-up", server_pid=None, xmpp=True))
    if report.errors:
        problems.append(f"warm-up errors: {dict(report.errors)}")


def idle_run(
    scratch: Scratch, ca: tuple, size: int, args: argparse.Namespace, problems: list[str]
) -> IdleReport:
    """``size`` sessions held on a fresh runc2s (so memory freed by earlier runs is not reused)."""
    certs = scratch.directory / "clients" / f"idle{size}"
    users = make_identities(*ca, DOMAIN, size, certs, key_type=args.key_type, prefix=f"i{size}-")
    warm = make_identities(*ca, DOMAIN, WARM_UP_LOGINS, certs, key_type=args.key_type, prefix=f"w{size}-")
    contexts = contexts_for(users)
    with running(start_runc2s(scratch), f"runc2s (idle {size})", problems) as server:
        warm_up(scratch, contexts_for(warm), problems)
        connect = xmpp_connector(HOST, scratch.direct_port, DOMAIN, contexts, starttls=False)
        label = f"idle {size}, direct TLS"
        run = run_idle(connect, size, args.concurrency, label, server_pid=server.pid, hold=args.hold)
        report = asyncio.run(run)
    print("\n".join(idle_rows([report])[2:]), flush=True)
    return report


def machine() -> list[str]:
    """nproc, CPU model, RAM, Python and OpenSSL versions (for RESULTS.md)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    openssl_cli = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    return [
        f"- nproc: {os.cpu_count()} (client and server share them)",
        f"- CPU: {model}",
        f"- RAM: {memory_kib / 2**20:.1f} GiB",
        f"- kernel: {platform.release()}",
        f"- Python {platform.python_version()}; client (ssl module): {ssl.OPENSSL_VERSION}",
        f"- server (pyOpenSSL, cryptography's own): {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}",
        f"- openssl s_server: {openssl_cli}",
    ]


def ratio_rows(ours: list[LoginReport], limit: LoginReport | None) -> list[str]:
    if limit is None or not limit.ok:
        return []
    rows = ["", "| ours / limit | logins/s ratio | CPU per login ratio |", "|---|---|---|"]
    for report in ours:
        cpu = (
            f"{report.cpu_ms_per_login / limit.cpu_ms_per_login:.1f}×"
            if report.cpu_ms_per_login and limit.cpu_ms_per_login
            else "-"
        )
        rows.append(f"| {report.label} | {report.per_second / limit.per_second:.2f} | {cpu} |")
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 logins, idle 100: under a minute")
    parser.add_argument("--count", type=int, help="logins per run (default 2000, quick 200; 0 skips)")
    parser.add_argument("--concurrency", type=int, default=50)
    idle_help = "idle sessions to hold (repeatable; default 1000 and 10000, quick 100; 0 skips)"
    parser.add_argument("--idle", type=int, action="append", help=idle_help)
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    parser.add_argument("--database-url", help="a throw-away database instead of the scratch SQLite file")
    parser.add_argument(
        "--ping-interval", type=int, help="the server's keepalive ping interval (default: its own)"
    )
    parser.add_argument(
        "--hold", type=float, default=0.0, help="seconds to hold idle sessions after measuring"
    )
    parser.add_argument("--no-openssl", action="store_true", help="skip the openssl s_server limit")
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = 200 if args.quick else 2000
    args.idle = [n for n in (args.idle or ([100] if args.quick else [1000, 10000])) if n > 0]
    return args


def print_report(
    args: argparse.Namespace, logins: list[LoginReport], limit: LoginReport | None, idles: list[IdleReport]
) -> None:
    if logins:
        print()
        print(
            f"## Logins ({args.count} per run, concurrency {args.concurrency}, "
            f"{args.key_type} client certificates)"
        )
        print()
        print("\n".join(login_rows([*logins, *([limit] if limit else [])])))
        print("\n".join(ratio_rows(logins, limit)))
    if idles:
        print()
        print("## Idle sessions (server VmRSS after minus before, per session)")
        print()
        print("\n".join(idle_rows(idles)))
    print()
    print("## Machine")
    print()
    print("\n".join(machine()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    problems: list[str] = []
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="xmppauth-bench-"))
    try:
        scratch = prepare(directory, args.database_url, args.ping_interval)
        os.environ.update(scratch.env)  # the same database and CA key as the server, for the certificates
        ca = load_server_ca()
        logins, direct_contexts = login_runs(scratch, ca, args, problems) if args.count else ([], [])
        limit = None
        if args.no_openssl or not args.count:
            pass
        elif shutil.which("openssl") is None:
            problems.append("openssl not found: no handshake limit measured")
        else:
            limit = openssl_limit(scratch, direct_contexts, args.count, args.concurrency)
            print("\n".join(login_rows([limit])[2:]), flush=True)
        del direct_contexts
        idles = [idle_run(scratch, ca, size, args, problems) for size in args.idle]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print_report(args, logins, limit, idles)
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    if problems:
        print("\n## Problems seen\n")
        print("\n".join(problems))
    return 0 if all(r.ok for r in logins) and all(r.ok for r in idles) else 1


if __name__ == "__main__":
    raise SystemExit(main())
