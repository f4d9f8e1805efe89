"""Side-by-side benchmark (issue 7): our server next to ejabberd, Prosody and the TLS handshake limit.

One run on this machine, the targets back to back, each started by this script as its own process on
127.0.0.1 with free ports and its own config, data and logs in one scratch directory, and stopped again:

- ours: ``manage.py runc2s`` and ``manage.py runxmpp`` (``bench.targets.ours``);
- ejabberd from Debian's package, its own ``ejabberd.yml`` (``bench.targets.ejabberd``);
- Prosody from Debian's package with prosody-modules' mod_auth_ccert (``bench.targets.prosody``);
- ``openssl s_server`` requiring a client certificate: the mutual-TLS handshake limit.

All use the same server certificate and CA (the scratch setup of ``bench.run_login_bench``), the same client
(``bench.loadclient``, raw XML: direct TLS, SASL EXTERNAL, bind) and ECDSA P-256 client certificates, every
server at log level warning. Our accounts exist before the logins, as an operator provisions them (ejabberd
and Prosody create nothing at login either; ``bench.run_login_bench`` also measures our first logins). Per
target: 20 warm-up logins, then ``--count`` logins at ``--concurrency``;
then, for each ``--idle`` size, a fresh process holding that many sessions and its resident memory per
session. Last, ``bench.messaging`` (issue 6) in both of its modes, its output included as it prints it.

With ``--sasl scram-sha-256`` (issue 14) the login runs use passwords instead: the same TLS (each client
still presents its certificate, which every server verifies), then SCRAM-SHA-256 instead of EXTERNAL, against
our ``rdbms`` method (keys set as ``manage.py account passwd`` sets them), ejabberd's ``internal`` auth with
``auth_password_format: scram`` and Prosody's ``internal_hashed`` with ``password_hash = "SHA-256"``. Before
the timed run every user logs in once, untimed: the client then holds each user's salted password (RFC 5802
§5.1 lets it cache it, as real clients do) and Prosody has turned its users' text passwords into keys, so the
figure is each server's SCRAM exchange, with no PBKDF2 on either side. The idle runs stay on EXTERNAL.

A missing ejabberd or Prosody is installed with apt-get when running as root (``--no-install`` skips that);
a target that cannot be had or does not start is skipped with the reason, and the run still exits 0.

Run from the checkout::

    .venv/bin/python -m bench.compare            # full: 2000 logins at 50, idle 1000 and 10000 per server
    .venv/bin/python -m bench.compare --quick    # under a minute: 100 logins, idle 50, no messaging
    .venv/bin/python -m bench.compare --sasl scram-sha-256 --idle 0 --no-messaging   # password logins
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.clientcerts import KEY_TYPES, load_server_ca, make_identities, provision_accounts
from bench.loadclient import (
    IdleReport,
    LoginReport,
    ScramKeyCache,
    contexts_for,
    idle_rows,
    login_rows,
    prime_sessions,
    raise_nofile_limit,
    resumed_connector,
    run_idle,
    run_logins,
    scram_connector,
    tls_connector,
    xmpp_connector,
)
from bench.proc import Pids
from bench.run_login_bench import (
    BENCH_PASSWORD,
    DOMAIN,
    HOST,
    ROOT,
    WARM_UP_LOGINS,
    Scratch,
    machine,
    prepare,
    provision_passwords,
)
from bench.targets import ejabberd, ours, prosody
from bench.targets.common import Child, Target, TargetUnavailable, free_port

TARGETS = (*ours.TARGETS, "ejabberd", "prosody", "openssl")
APT_PACKAGES = {"ejabberd": ("ejabberd",), "prosody": prosody.PACKAGES}
INIT_SCRIPTS = {"ejabberd": "/etc/init.d/ejabberd", "prosody": "/etc/init.d/prosody"}
SASL = ("external", "scram-sha-256")


class Running(Protocol):
    """A started target: its pid (CPU, memory), its direct TLS port, and how to stop it."""

    @property
    def pid(self) -> Pids: ...

    port: int

    def stop(self) -> None: ...


@dataclass
class Results:
    logins: dict[str, LoginReport] = field(default_factory=dict)
    resumed: dict[str, LoginReport] = field(default_factory=dict)  # the same logins resuming TLS sessions
    idles: list[tuple[str, IdleReport]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    messaging: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def ensure_packages(name: str, allow_install: bool) -> str | None:
    """None when ``name`` (ejabberd or prosody) can run; else why not. Installs it with apt-get if allowed.

    Debian's packages may start the system's own instance on install (on public ports): it is stopped at once.
    """
    module = ejabberd if name == "ejabberd" else prosody
    if module.installed():
        return None
    packages = APT_PACKAGES[name]
    if not allow_install:
        return f"{' and '.join(packages)} not installed (--no-install)"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{' and '.join(packages)} not installed, and apt-get cannot run here as root"
    print(f"# installing {' '.join(packages)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", "install", "-y", *packages], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:  # an old package list: update once and try again
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(
            ["apt-get", "install", "-y", *packages], env=env, capture_output=True, text=True, check=False
        )
    if Path(INIT_SCRIPTS[name]).exists():  # the system's instance, if the package started it
        subprocess.run([INIT_SCRIPTS[name], "stop"], capture_output=True, check=False)
    if result.returncode != 0 or not module.installed():
        return f"apt-get install {' '.join(packages)} failed: {(result.stderr or result.stdout)[-300:]}"
    return None


def start_target(
    name: str,
    scratch: Scratch,
    ca: tuple,
    run_dir: Path,
    redis_url: str,
    *,
    users: Sequence[str] = (),
    password: str | None = None,
) -> Running:
    """``name`` started; with ``password``, ejabberd and Prosody check ``users``' passwords instead of
    certificates (ours has the method for both in the scratch config; its passwords are in the database)."""
    pki = scratch.pki
    logins = {"users": users, "password": password}
    if name == ours.SHARED:
        return ours.start_shared(scratch, run_dir, redis_url)
    if name in ours.COMMANDS:
        return ours.start(scratch, name, run_dir)
    if name == "ejabberd":
        return ejabberd.start(
            run_dir, DOMAIN, pki / "server.pem", pki / "server.key", pki / "ca.pem", **logins
        )
    if name == "prosody":
        return prosody.start(
            run_dir, DOMAIN, pki / "server.pem", pki / "server.key", pki / "ca.pem", ca[1], **logins
        )
    if name == "openssl":
        return start_openssl(scratch, run_dir)
    raise ValueError(f"unknown target {name!r}; accepted values: {', '.join(TARGETS)}")


class OpenSSLServer(Target):
    """``openssl s_server``: the mutual-TLS handshake limit."""


def start_openssl(scratch: Scratch, run_dir: Path) -> OpenSSLServer:
    """``openssl s_server -rev`` requiring a client certificate of the CA (``-Verify 1``), no tickets."""
    if shutil.which("openssl") is None:
        raise TargetUnavailable("openssl not found")
    run_dir.mkdir(parents=True, exist_ok=True)
    port, pki = free_port(), scratch.pki
    command = ["openssl", "s_server", "-accept", f"{HOST}:{port}", "-rev", "-no_ticket", "-Verify", "1"]
    command += ["-cert", str(pki / "server.pem"), "-key", str(pki / "server.key")]
    command += ["-CAfile", str(pki / "ca.pem"), "-quiet"]
    child = Child(command, dict(os.environ), run_dir / "s_server.log")
    child.wait_port(port)  # that probe is one accept of s_server's: harmless, it serves forever
    return OpenSSLServer(child, port)


def identities(
    ca: tuple, scratch: Scratch, prefix: str, count: int, key_type: str, *, accounts: bool
) -> tuple[list, list]:
    """``count`` new users and their client contexts; ``accounts``: their accounts exist in our database
    first (our server then serves returning users, as ejabberd and Prosody do: neither creates anything at
    login)."""
    certs = scratch.directory / "clients" / prefix
    users = make_identities(*ca, DOMAIN, count, certs, key_type=key_type, prefix=prefix)
    if accounts:
        provision_accounts(users)
    return users, contexts_for(users)


def login_target(name: str, scratch: Scratch, ca: tuple, args: argparse.Namespace, results: Results) -> None:
    """Warm-up, then ``args.count`` logins (or handshakes, for openssl) on a fresh process of ``name``."""
    provision = name in ours.TARGETS
    users, contexts = identities(ca, scratch, f"{name}-l-", args.count, args.key_type, accounts=provision)
    _, warm = identities(ca, scratch, f"{name}-w-", WARM_UP_LOGINS, args.key_type, accounts=provision)
    xmpp = name != "openssl"
    scram = xmpp and args.sasl == "scram-sha-256"
    localparts = [user.jid.partition("@")[0] for user in users] if scram else []
    cache = provision_passwords(users) if scram and provision else ScramKeyCache()
    run_dir = scratch.directory / "targets" / f"{name}-logins"
    try:
        server = start_target(
            name,
            scratch,
            ca,
            run_dir,
            args.redis_url,
            users=localparts,
            password=BENCH_PASSWORD if scram else None,
        )
    except TargetUnavailable as exc:
        results.skipped[name] = str(exc).splitlines()[0]
        results.problems.append(f"{name} did not start: {exc}")
        return
    try:

        def connector(contexts_: list) -> Callable:
            if scram:
                return scram_connector(
                    HOST, server.port, DOMAIN, contexts_, localparts, BENCH_PASSWORD, cache
                )
            if xmpp:
                return xmpp_connector(HOST, server.port, DOMAIN, contexts_, starttls=False)
            return tls_connector(HOST, server.port, DOMAIN, contexts_)

        # SCRAM: every user once, untimed (the client's key cache, Prosody's keys); else a few warm-up logins.
        warm, warm_count = (contexts, len(contexts)) if scram else (warm, WARM_UP_LOGINS)
        warm_up = asyncio.run(
            run_logins(connector(warm), warm_count, 10, "warm-up", server_pid=None, xmpp=xmpp)
        )
        if warm_up.errors:
            results.problems.append(f"{name} warm-up errors: {dict(warm_up.errors)}")
        label = SCRAM_LABELS.get(name, f"{LABELS[name]}, SCRAM-SHA-256") if scram else LABELS[name]
        run = run_logins(
            connector(contexts), args.count, args.concurrency, label, server_pid=server.pid, xmpp=xmpp
        )
        results.logins[name] = asyncio.run(run)
        print("\n".join(login_rows([results.logins[name]])[2:]), flush=True)
        if xmpp and not scram and args.resumed:
            results.resumed[name] = resumed_logins(name, server, users, args)
            print("\n".join(login_rows([results.resumed[name]])[2:]), flush=True)
    finally:
        children = getattr(server, "children", None) or [server.child]
        alive = all(child.process.poll() is None for child in children)
        server.stop()
        if not alive:
            results.problems.append(f"{name} exited during the login run")


def resumed_logins(name: str, server: Running, users: list, args: argparse.Namespace) -> LoginReport:
    """Issue 17 §4: ``args.count`` logins of the same users on the same process, each resuming the TLS
    session of an untimed login before it (a login that did a full handshake instead is an error)."""
    contexts = contexts_for(users, resuming=True)
    primed = asyncio.run(prime_sessions(HOST, server.port, DOMAIN, contexts))
    label = f"{LABELS[name]}, resumed TLS"
    if primed:
        label += f" (priming errors: {dict(primed)})"
    connect = resumed_connector(HOST, server.port, DOMAIN, contexts)
    return asyncio.run(
        run_logins(connect, args.count, args.concurrency, label, server_pid=server.pid, xmpp=True)
    )


def idle_target(
    name: str, size: int, scratch: Scratch, ca: tuple, args: argparse.Namespace, results: Results
) -> None:
    """``size`` sessions held on a fresh process of ``name`` (memory freed by earlier runs not reused)."""
    provision = name in ours.TARGETS
    _, contexts = identities(ca, scratch, f"{name}-i{size}-", size, args.key_type, accounts=provision)
    _, warm = identities(ca, scratch, f"{name}-iw{size}-", WARM_UP_LOGINS, args.key_type, accounts=provision)
    run_dir = scratch.directory / "targets" / f"{name}-idle{size}"
    try:
        server = start_target(name, scratch, ca, run_dir, args.redis_url)
    except TargetUnavailable as exc:
        results.problems.append(f"{name} (idle {size}) did not start: {exc}")
        return
    try:
        connect = xmpp_connector(HOST, server.port, DOMAIN, warm, starttls=False)
        asyncio.run(run_logins(connect, WARM_UP_LOGINS, 10, "warm-up", server_pid=None, xmpp=True))
        connect = xmpp_connector(HOST, server.port, DOMAIN, contexts, starttls=False)
        label = f"{LABELS[name]}, idle {size}"
        report = asyncio.run(run_idle(connect, size, args.concurrency, label, server_pid=server.pid))
        results.idles.append((name, report))
        print("\n".join(idle_rows([report])[2:]), flush=True)
    finally:
        server.stop()


LABELS = {
    "runc2s": "ours, runc2s",
    "runxmpp": "ours, runxmpp",
    ours.SHARED: "ours, 2 × runc2s --reuse-port (Redis)",
    "ejabberd": "ejabberd",
    "prosody": "Prosody, mod_auth_ccert",
    "openssl": "openssl s_server (TLS handshake only)",
}
SCRAM_LABELS = {
    "prosody": "Prosody, internal_hashed, SCRAM-SHA-256"
}  # the others: LABELS[name] + ", SCRAM-SHA-256"


def redis_answers(url: str) -> bool:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host or HOST, int(port or 6379)), timeout=2).close()
    except OSError:
        return False
    return True


def messaging(args: argparse.Namespace, results: Results) -> None:
    """``bench.messaging`` in-process (runxmpp) and across processes through Redis; its lines as printed."""
    for mode in ("embedded", "redis"):
        if mode == "redis" and not redis_answers(args.redis_url):
            results.messaging.append(f"redis: skipped, nothing answers on {args.redis_url}")
            continue
        command = [sys.executable, "-m", "bench.messaging", "--mode", mode, "--redis-url", args.redis_url]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if result.returncode != 0:
            lines.append(f"bench.messaging --mode {mode} exited {result.returncode}: {result.stderr[-500:]}")
        results.messaging.append(f"{mode}:")
        results.messaging.extend(f"    {line}" for line in lines)
        print("\n".join(results.messaging[-len(lines) - 1 :]), flush=True)


def ratio_rows(results: Results) -> list[str]:
    """Ours / each other target, in logins/s and in server CPU per login; ours resumed / ``s_server``'s full
    handshakes (issue 17 §4's target)."""
    rows = ["| ours / other | logins/s ratio | server CPU per login ratio |", "|---|---|---|"]
    pairs = [
        (results.logins.get(mine), results.logins.get(other))
        for mine in ours.TARGETS
        for other in ("ejabberd", "prosody", "openssl")
    ]
    pairs += [(results.resumed.get(mine), results.logins.get("openssl")) for mine in ours.TARGETS]
    for report, theirs in pairs:
        if report is None or not report.ok or theirs is None or not theirs.ok:
            continue
        cpu = (
            f"{report.cpu_ms_per_login / theirs.cpu_ms_per_login:.2f}"
            if report.cpu_ms_per_login and theirs.cpu_ms_per_login
            else "-"
        )
        rate = report.per_second / theirs.per_second
        rows.append(f"| {report.label} / {theirs.label} | {rate:.2f} | {cpu} |")
    return rows


def memory_rows(results: Results) -> list[str]:
    rows = ["| server | sessions | KiB per idle session |", "|---|---|---|"]
    for name, report in results.idles:
        rows.append(f"| {LABELS[name]} | {report.ok} | {report.bytes_per_session / 1024:.1f} |")
    return rows


def print_report(args: argparse.Namespace, results: Results, command: str) -> None:
    print()
    sasl = "SCRAM-SHA-256" if args.sasl == "scram-sha-256" else "SASL EXTERNAL"
    print(
        f"## Logins ({args.count} per target, concurrency {args.concurrency}, {args.key_type} client "
        f"certificates, direct TLS, {sasl}, bind)"
    )
    print()
    order = [results.logins[name] for name in TARGETS if name in results.logins]
    order += [results.resumed[name] for name in TARGETS if name in results.resumed]
    print("\n".join(login_rows(order)))
    print()
    print("\n".join(ratio_rows(results)))
    if results.idles:
        print()
        print("## Idle sessions (server VmRSS after minus before, per session)")
        print()
        print("\n".join(idle_rows([report for _, report in results.idles])))
        print()
        print("\n".join(memory_rows(results)))
    if results.messaging:
        print()
        print("## Messaging (bench.messaging: TCP client <-> WebSocket client)")
        print()
        print("\n".join(results.messaging))
    if results.skipped:
        print()
        print("## Skipped")
        print()
        print("\n".join(f"- {name}: {why}" for name, why in results.skipped.items()))
    print()
    print("## Machine and versions")
    print()
    print("\n".join(machine()))
    print("\n".join(f"- {name}: {version}" for name, version in results.versions.items()))
    print()
    print(f"Command: `{command}`")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 logins, idle 50, no messaging: < 1 min")
    parser.add_argument("--count", type=int, help="logins per target (default 2000, quick 100)")
    parser.add_argument("--concurrency", type=int, default=50)
    idle_help = "idle sessions to hold per server (repeatable; default 1000 and 10000, quick 50; 0 skips)"
    parser.add_argument("--idle", type=int, action="append", help=idle_help)
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    parser.add_argument(
        "--sasl", choices=SASL, default="external", help="the login runs' mechanism (default external)"
    )
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}"
    )
    parser.add_argument("--no-install", action="store_true", help="skip targets not installed")
    parser.add_argument(
        "--no-resumed",
        dest="resumed",
        action="store_false",
        help="skip the resumed-TLS login runs (EXTERNAL only: the same users again, each resuming a session)",
    )
    parser.add_argument("--no-messaging", action="store_true", help="skip bench.messaging")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/12",
        help=f"for {ours.SHARED} and bench.messaging (skipped when nothing answers there)",
    )
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = 100 if args.quick else 2000
    args.idle = [n for n in (args.idle or ([50] if args.quick else [1000, 10000])) if n > 0]
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; accepted values: {', '.join(TARGETS)}")
    if args.quick:
        args.no_messaging = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join([".venv/bin/python -m bench.compare", *(sys.argv[1:] if argv is None else argv)])
    raise_nofile_limit()
    results = Results()
    started = time.monotonic()
    targets = list(args.targets)
    for name in ("ejabberd", "prosody"):
        if name in targets:
            why = ensure_packages(name, allow_install=not args.no_install)
            if why:
                print(f"# skipping {name}: {why}", flush=True)
                results.skipped[name] = why
                targets.remove(name)
    if ours.SHARED in targets and not redis_answers(args.redis_url):
        results.skipped[ours.SHARED] = f"nothing answers on {args.redis_url} (--redis-url)"
        targets.remove(ours.SHARED)
    results.versions["ejabberd"] = ejabberd.version() if ejabberd.installed() else "not installed"
    results.versions["Prosody"] = prosody.version() if prosody.installed() else "not installed"
    directory = Path(tempfile.mkdtemp(prefix="xmppauth-compare-"))
    try:
        scratch = prepare(directory)
        os.environ.update(scratch.env)  # the same database and CA key as our server, for the certificates
        ca = load_server_ca()
        if args.count:
            for name in targets:
                login_target(name, scratch, ca, args, results)
        for size in args.idle:
            for name in targets:
                if name != "openssl" and name not in results.skipped:
                    idle_target(name, size, scratch, ca, args, results)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if not args.no_messaging:
        messaging(args, results)
    print_report(args, results, command)
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    if results.problems:
        print("\n## Problems seen\n")
        print("\n".join(problem[:3000] for problem in results.problems))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
