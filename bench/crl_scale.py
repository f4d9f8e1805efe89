"""Benchmark: a CRL of 100,000 serials refreshed while 1,000 sessions are live and logins go on (issue 11
point 7: large CRLs stay cheap).

Prints figures; not a test (``tests/test_bench_quick.py`` runs ``--quick`` so the script does not rot). What
it does, on 127.0.0.1 with free ports:

1. a scratch server as ``bench.run_login_bench`` prepares it (SQLite file migrated and bootstrapped, or
   ``--database-url``; ``--redis`` for the channel layer) and ``manage.py runc2s`` as its own process;
2. an external CA imported as an operator does (``certauth.services.import_ca``) with a ``file`` CRL source,
   its first CRL (listing nothing we use) accepted before the listener starts; client certificates of that
   CA for the held sessions and for the logins, accounts provisioned up front;
3. ``--sessions`` sessions logged in over direct TLS (XEP-0368) and held, answering keepalives;
4. logins at ``--login-concurrency`` go on all along (each closes its stream after the bind result); after
   ``--before`` seconds the next CRL is written, listing ``--serials`` serials of certificates that hold no
   session plus the serials of ``--affected`` held sessions, and another process refreshes the source with
   ``certauth.crlfetch.refresh_source``, as the Celery worker does (the receiver that ends sessions runs
   there too);
5. figures: the refresh's own duration (measured inside that process), the time from the refresh's start
   until the last affected session read ``<reset`` (RFC 6120 §13.7.2.3), the login median and p99 before
   the refresh and during it (logins started between the refresh's start and the last affected session's
   end, or the refresh's end if later), the commands written, and how many unaffected sessions still answer a
   ping (XEP-0199) afterwards.

Run from the checkout::

    .venv/bin/python -m bench.crl_scale                      # 100,000 serials, 1,000 sessions, 10 affected
    .venv/bin/python -m bench.crl_scale --database-url postgres://postgres@127.0.0.1:5432/DB \\
        --redis redis://127.0.0.1:6379/N
    .venv/bin/python -m bench.crl_scale --quick              # seconds: 2,000 serials, 30 sessions, 3 affected
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.clientcerts import Identity, make_identities, provision_accounts
from bench.loadclient import (
    HeldSession,
    LoginError,
    close_stream,
    contexts_for,
    raise_nofile_limit,
    xmpp_login,
)
from bench.proc import cpu_seconds
from bench.revocation_latency import setup_django
from bench.run_login_bench import DOMAIN, HOST, ROOT, Scratch, config_toml, prepare, start_runc2s

CA_NAME = "Bench CRL CA"
END_TIMEOUT = 60.0  # an affected session not ended this long after the refresh started counts as a failure
LOGIN_POOL = 200  # distinct certificates the continuing logins cycle through

REFRESH = """
    import django, json, os, time
    django.setup()
    from certauth import crlfetch
    from certauth.models import CrlSource
    source = CrlSource.objects.get(pk=int(os.environ["BENCH_SOURCE_ID"]))
    started, clock = time.time(), time.perf_counter()
    outcome = crlfetch.refresh_source(source)
    print(json.dumps({"start": started, "duration": time.perf_counter() - clock, "ok": outcome.ok,
                      "message": outcome.message}))
"""


@dataclass
class Login:
    started: float  # wall clock (time.time), comparable with the refresh process's start
    seconds: float


@dataclass
class Figures:
    """What one run measured."""

    serials: int
    sessions: int
    affected: int
    held_up: int = 0
    refresh_seconds: float = float("nan")
    refresh_message: str = ""
    ended: list[float] = field(default_factory=list)  # seconds from the refresh's start, per affected session
    ended_texts: Counter[str] = field(default_factory=Counter)
    commands: int = 0
    unaffected_alive: int = 0
    unaffected: int = 0
    logins: list[Login] = field(default_factory=list)
    login_errors: Counter[str] = field(default_factory=Counter)
    window: tuple[float, float] = (0.0, 0.0)
    before_start: float = 0.0
    server_cpu_in_window: float = float("nan")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def external_ca(directory: Path, crl_file: Path) -> tuple:
    """The CA (certificate, key), its row imported and trusted, and its ``file`` source with CRL #1 held."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from certauth import crlfetch, pki, services
    from certauth.models import CrlSource

    key = pki.generate_private_key("ec-p256")
    cert = pki.build_ca(CA_NAME, key, days=30)
    (directory / "bench-ca.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    row = services.import_ca(cert.public_bytes(Encoding.PEM), name=CA_NAME)
    source = CrlSource.objects.create(ca=row, kind=CrlSource.Kind.FILE, location=str(crl_file))
    crl_file.write_bytes(crl_der(cert, key, [], number=1))
    outcome = crlfetch.refresh_source(source)
    if not outcome.ok:
        raise SystemExit(f"the first CRL was refused: {outcome.message}")
    return cert, key, source.pk


def crl_der(cert, key, serials: list[int], *, number: int) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    from certauth import pki

    now = datetime.now(UTC)
    revoked_at = now - timedelta(hours=1)
    entries = [pki.RevokedEntry(serial, revoked_at, "key_compromise") for serial in serials]
    this_update, next_update = now - timedelta(minutes=1), now + timedelta(days=7)
    crl = pki.build_crl(
        cert, key, entries, crl_number=number, this_update=this_update, next_update=next_update
    )
    return crl.public_bytes(Encoding.DER)


def serial_of(identity: Identity) -> int:
    from certauth import pki

    return pki.load_certificates(identity.pem_file.read_bytes())[0].serial_number


def count_commands(since_id: int) -> int:
    from django.db import close_old_connections

    from transport.sessions.models import SessionTermination

    close_old_connections()
    return SessionTermination.objects.filter(id__gt=since_id).count()


def last_command_id() -> int:
    from transport.sessions import terminations as sessions

    return sessions.last_termination_id()


async def hold_sessions(
    port: int, contexts: list[ssl.SSLContext], concurrency: int
) -> tuple[list[HeldSession | None], Counter[str]]:
    """One held session per context (None where the login failed)."""
    held: list[HeldSession | None] = [None] * len(contexts)
    errors: Counter[str] = Counter()
    queue = iter(range(len(contexts)))

    async def worker() -> None:
        for n in queue:
            try:
                held[n] = HeldSession(await xmpp_login(HOST, port, DOMAIN, contexts[n], starttls=False))
            except LoginError as exc:
                errors[exc.kind] += 1

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(contexts)))))
    return held, errors


async def keep_logging_in(
    port: int, contexts: list[ssl.SSLContext], concurrency: int, stop: asyncio.Event, figures: Figures
) -> None:
    counter = iter(range(10**9))

    async def worker() -> None:
        while not stop.is_set():
            n = next(counter)
            started, clock = time.time(), time.perf_counter()
            try:
                stream = await xmpp_login(HOST, port, DOMAIN, contexts[n % len(contexts)], starttls=False)
            except LoginError as exc:
                figures.login_errors[exc.kind] += 1
                continue
            figures.logins.append(Login(started, time.perf_counter() - clock))
            close_stream(stream, xmpp=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def until_ended(session: HeldSession) -> tuple[float, str]:
    """Wall-clock time at which the session's stream ended, and why."""
    await session.task
    return time.time(), session.lost or ""


@dataclass
class Setup:
    """What is made before the listener starts (so the CA is among its trust anchors from the start)."""

    source_id: int
    held: list[Identity]
    logins: list[Identity]
    affected: set[int]
    next_crl: bytes
    crl_file: Path


def set_up(scratch: Scratch, args: argparse.Namespace) -> Setup:
    directory = scratch.directory
    crl_file = directory / "bench.crl"
    ca_cert, ca_key, source_id = external_ca(directory, crl_file)
    # Start-up applies tls.crl_files strictly and keeps only the file sources it lists: list ours.
    config = directory / "xmppauth.toml"
    config.write_text(config_toml(scratch.starttls_port, scratch.direct_port, crl_files=(crl_file,)))
    certs = directory / "clients"
    held = make_identities(ca_cert, ca_key, DOMAIN, args.sessions, certs, prefix="held")
    logins = make_identities(
        ca_cert, ca_key, DOMAIN, min(LOGIN_POOL, args.sessions + 20), certs, prefix="login"
    )
    provision_accounts([*held, *logins])
    affected = set(random.Random(7).sample(range(args.sessions), args.affected))
    listed = [serial_of(held[n]) for n in sorted(affected)]
    made = time.perf_counter()
    filler = random.Random(11)
    serials = {filler.getrandbits(127) | (1 << 127) for _ in range(args.serials)}
    next_crl = crl_der(ca_cert, ca_key, [*serials, *listed], number=2)
    print(
        f"# CRL #2 built: {len(serials) + len(listed)} serials, {len(next_crl)} bytes, "
        f"{time.perf_counter() - made:.1f} s",
        flush=True,
    )
    return Setup(source_id, held, logins, affected, next_crl, crl_file)


async def run(
    scratch: Scratch, args: argparse.Namespace, made: Setup, figures: Figures, server_pid: int
) -> None:
    affected, crl_file = made.affected, made.crl_file
    held, errors = await hold_sessions(scratch.direct_port, contexts_for(made.held), args.concurrency)
    figures.held_up = sum(1 for session in held if session is not None)
    if errors:
        print(f"# held-session login errors: {dict(errors)}", flush=True)
    print(f"# {figures.held_up}/{args.sessions} sessions held", flush=True)

    stop = asyncio.Event()
    logins = asyncio.create_task(
        keep_logging_in(scratch.direct_port, contexts_for(made.logins), args.login_concurrency, stop, figures)
    )
    figures.before_start = time.time()
    await asyncio.sleep(args.before)
    since = await asyncio.to_thread(last_command_id)
    watchers = {n: asyncio.create_task(until_ended(held[n])) for n in affected if held[n] is not None}
    tmp = crl_file.with_suffix(".next")
    tmp.write_bytes(made.next_crl)
    os.replace(tmp, crl_file)
    env = {
        **scratch.env,
        "BENCH_SOURCE_ID": str(made.source_id),
        "DJANGO_SETTINGS_MODULE": "xmppauth.settings",
    }
    cpu_before = cpu_seconds(server_pid)
    refresh = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(REFRESH), cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await refresh.communicate()
    if refresh.returncode != 0:
        raise SystemExit(f"the refresh failed:\n{err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if not result["ok"]:
        raise SystemExit(f"CRL #2 was refused: {result['message']}")
    start = result["start"]
    figures.refresh_seconds = result["duration"]
    figures.refresh_message = result["message"]
    done, pending = await asyncio.wait(watchers.values(), timeout=args.end_timeout)
    for task in pending:
        task.cancel()
    for task in done:
        when, why = task.result()
        figures.ended.append(when - start)
        figures.ended_texts[why] += 1
    window_end = max([start + figures.refresh_seconds, *(start + s for s in figures.ended)])
    figures.window = (start, window_end)
    figures.server_cpu_in_window = cpu_seconds(server_pid) - cpu_before
    await asyncio.sleep(args.after)
    stop.set()
    await logins
    figures.commands = await asyncio.to_thread(count_commands, since)

    unaffected = [session for n, session in enumerate(held) if n not in affected and session is not None]
    figures.unaffected = len(unaffected)
    answers = await asyncio.gather(*(session.ping() for session in unaffected))
    figures.unaffected_alive = sum(answers)
    for session in held:
        if session is not None:
            session.task.cancel()
            close_stream(session.stream, xmpp=True)
    await asyncio.sleep(0.5)


def report(figures: Figures, label: str) -> None:
    start, end = figures.window
    before = [login.seconds for login in figures.logins if figures.before_start <= login.started < start]
    during = [login.seconds for login in figures.logins if start <= login.started <= end]

    def ms(values: list[float], fraction: float | None = None) -> str:
        if not values:
            return "n/a"
        value = statistics.median(values) if fraction is None else percentile(values, fraction)
        return f"{value * 1000:.0f}"

    print()
    print(f"## {label}")
    print(f"refresh: {figures.refresh_message}")
    print("| serials in CRL | sessions held | affected ended | refresh s | last affected ended s "
          "| commands | unaffected alive | logins before (median/p99 ms) | logins during (median/p99 ms) "
          "| server CPU s in window |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    last = f"{max(figures.ended):.2f}" if figures.ended else "n/a"
    print(
        f"| {figures.serials + figures.affected} | {figures.held_up}/{figures.sessions} "
        f"| {len(figures.ended)}/{figures.affected} | {figures.refresh_seconds:.2f} | {last} "
        f"| {figures.commands} | {figures.unaffected_alive}/{figures.unaffected} "
        f"| {len(before)}: {ms(before)}/{ms(before, 0.99)} | {len(during)}: {ms(during)}/{ms(during, 0.99)} "
        f"| {figures.server_cpu_in_window:.2f} |"
    )
    print(f"affected sessions ended with: {dict(figures.ended_texts)}")
    if figures.login_errors:
        print(f"login errors: {dict(figures.login_errors)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serials", type=int, default=100_000, help="serials listed besides the affected")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--affected", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=50, help="logins in flight while sessions open")
    parser.add_argument("--login-concurrency", type=int, default=4, help="logins in flight during the run")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of logins before the refresh")
    parser.add_argument("--after", type=float, default=2.0, help="seconds of logins after the last end")
    parser.add_argument(
        "--end-timeout", type=float, default=END_TIMEOUT, help="seconds to wait for the affected sessions"
    )
    parser.add_argument("--database-url", help="a throw-away database instead of a scratch SQLite file")
    parser.add_argument("--redis", help="REDIS_URL for the server and the refreshing process")
    parser.add_argument("--quick", action="store_true", help="2,000 serials, 30 sessions, 3 affected")
    args = parser.parse_args()
    if args.quick:
        args.serials, args.sessions, args.affected, args.before, args.after = 2000, 30, 3, 2.0, 0.5
    if not 0 < args.affected <= args.sessions:
        parser.error("--affected must be between 1 and --sessions")
    raise_nofile_limit()
    figures = Figures(args.serials, args.sessions, args.affected)
    with tempfile.TemporaryDirectory(prefix="crl-scale-bench-") as tmp:
        scratch = prepare(Path(tmp), args.database_url)
        if args.redis:
            scratch.env["REDIS_URL"] = args.redis
        setup_django(scratch)
        made = set_up(scratch, args)
        server = start_runc2s(scratch)
        try:
            asyncio.run(run(scratch, args, made, figures, server.pid))
        finally:
            output = server.stop()
        bad = [line for line in output.splitlines() if "Traceback" in line or " ERROR " in line]
        if bad:
            print(output[-3000:], file=sys.stderr)
    database = (args.database_url or "sqlite").split(":", 1)[0]
    report(figures, f"CRL refresh under load, {database}, {'Redis' if args.redis else 'no Redis'}")
    if len(figures.ended) != args.affected or figures.unaffected_alive != figures.unaffected or bad:
        raise SystemExit(
            "FAILED: not every affected session ended, an unaffected one did, or the server erred"
        )


if __name__ == "__main__":
    main()
