"""Load with zero errors (issue 16 §6): one ``runxmpp``, every carrier at once, every message counted.

Prints figures; not a test (``tests/test_bench_load_mixed.py`` runs ``--quick`` and checks zero errors and
zero lost messages, never a time). On 127.0.0.1 with free ports:

1. a scratch server: config with a STARTTLS and a direct TLS c2s listener and one HTTPS listener serving
   WebSocket (RFC 7395) and BOSH (XEP-0206), ``verify_mode = "peer"``, SASL EXTERNAL; every client comes
   from 127.0.0.1, so ``max_connections_per_address = 0`` and ``auth_failures_per_minute = 0``. With
   ``DATABASE_URL`` set to PostgreSQL, a scratch database created next to the one it names (dropped
   afterwards); else a scratch SQLite file. With ``REDIS_URL`` set, the channel layer on that Redis and
   ``manage.py runworker`` on a router channel of this run's own; else the embedded in-memory layer and
   in-process router. Accounts provisioned up front (as an operator does), one P-256 client certificate each;
2. **logins**: ``--logins`` at once (``--login-concurrency`` in flight), spread evenly over STARTTLS,
   direct TLS, wss and BOSH, each closed after its bind result: logins/s, latency (connect to bind result)
   p50/p99 per carrier, errors by kind;
3. **idle**: ``--idle`` sessions over the four carriers logged in and held (a BOSH session keeps two
   connections, one request always held); the server's VmRSS before and after, per session;
4. **storm**: ``--messages`` chat messages between random pairs of those sessions (sender and recipient on
   any carriers), at most ``--window`` in flight; each message's id is counted where it arrives: lost,
   duplicated, misdelivered or bounced (``type='error'``) messages are errors. Messages/s, delivery latency
   p50/p99 (client send to client read, both in this one process), RSS after;
5. every session pings the server (XEP-0199): a session the server dropped is an error; then all close.

Errors also include any session lost at any time, and every ``Traceback`` or ``ERROR`` line in the servers'
output. The exit status is 0 only with zero errors and zero lost messages.

Run from the checkout::

    .venv/bin/python -m bench.load_mixed             # 1000 logins at once, 10 000 idle, 20 000 messages
    .venv/bin/python -m bench.load_mixed --quick     # 48 logins, 200 idle, 500 messages: under a minute
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/load_db REDIS_URL=redis://127.0.0.1:6379/7 \\
        .venv/bin/python -m bench.load_mixed         # the production setup (PostgreSQL + Redis)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import loadclient
from bench.clientcerts import load_server_ca, make_identities, provision_accounts
from bench.loadclient import LoginError, _attr, _percentile, contexts_for
from bench.mixedclient import TRANSPORTS, Session, Target, login, message
from bench.proc import cpu_seconds, machine_busy_seconds, rss_bytes
from bench.run_login_bench import Server, free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DOMAIN = "localhost"
START_TIMEOUT = 90.0
SETTLE = 2.0  # seconds the server is left alone before its memory is read
NOFILE = 65536  # open files wanted by this process and the server (raised as root; else the hard limit)
WARM_UP_PER_CARRIER = 3


@dataclass
class Phase:
    """What one phase measured; ``errors`` by kind."""

    name: str
    asked: int = 0
    ok: int = 0
    elapsed: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # carrier -> seconds
    errors: Counter[str] = field(default_factory=Counter)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    machine_cpu: float = 0.0

    @property
    def other_load(self) -> float:
        others = self.machine_cpu - self.client_cpu - self.server_cpu
        return max(0.0, others) / self.elapsed if self.elapsed > 0 else 0.0

    def all_latencies(self) -> list[float]:
        return [value for values in self.latencies.values() for value in values]


@contextmanager
def measured(phase: Phase, server_pids: tuple[int, ...]) -> Iterator[Phase]:
    """Time, server CPU, this process's CPU and the whole machine's CPU over the block."""
    server_before, client_before = cpu_seconds(server_pids), time.process_time()
    machine_before, started = machine_busy_seconds(), time.perf_counter()
    try:
        yield phase
    finally:
        phase.elapsed = time.perf_counter() - started
        phase.server_cpu = cpu_seconds(server_pids) - server_before
        phase.client_cpu = time.process_time() - client_before
        phase.machine_cpu = machine_busy_seconds() - machine_before


# == the scratch server ==========


def raise_nofile() -> int:
    """This process's open-file limit up to :data:`NOFILE` (children inherit it); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, NOFILE), max(hard, NOFILE)))
    except (ValueError, OSError):  # not root: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def config_toml(target: Target) -> str:
    return f"""[general]
  hosts = ["{DOMAIN}"]

[[listen.c2s]]
  port = {target.starttls_port}
  ip_address = "{HOST}"
  tls.mode = "starttls"
  tls.verify_mode = "peer"

[[listen.c2s]]
  port = {target.tls_port}
  ip_address = "{HOST}"
  tls.mode = "tls"
  tls.verify_mode = "peer"

[[listen.http]]
  port = {target.https_port}
  ip_address = "{HOST}"
  tls.verify_mode = "peer"
  [[listen.http.handlers.mod_websockets]]
    path = "{target.ws_path}"
  [[listen.http.handlers.mod_bosh]]
    path = "{target.bosh_path}"

[auth]
  methods = ["pki"]
  sasl_mechanisms = ["external"]

[xmppauth]
  # Every bench client comes from 127.0.0.1: the per-address bounds would refuse the 101st connection.
  max_connections_per_address = 0
  auth_failures_per_minute = 0
"""


@dataclass
class ScratchDatabase:
    """A database for this run only: a SQLite file, or a PostgreSQL database dropped afterwards."""

    url: str
    admin_url: str | None = None  # PostgreSQL: the maintenance database it was created from
    name: str | None = None

    @classmethod
    def create(cls, directory: Path, database_url: str | None) -> ScratchDatabase:
        if not database_url or not database_url.startswith(("postgres://", "postgresql://")):
            return cls(f"sqlite:///{directory / 'db.sqlite3'}")
        import psycopg  # noqa: PLC0415 (only for the PostgreSQL setup)

        parts = urlsplit(database_url)
        name = f"{parts.path.lstrip('/') or 'postgres'}_mixed_{secrets.token_hex(4)}"
        admin_url = urlunsplit(parts._replace(path="/postgres"))  # the server's maintenance database
        with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return cls(urlunsplit(parts._replace(path=f"/{name}")), admin_url, name)

    def drop(self) -> None:
        if self.admin_url is None:
            return
        import psycopg  # noqa: PLC0415

        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


@dataclass
class Scratch:
    directory: Path
    target: Target
    env: dict[str, str]
    database: ScratchDatabase
    redis_url: str | None
    router_channel: str | None


def prepare(directory: Path, database_url: str | None, redis_url: str | None) -> Scratch:
    target = Target(HOST, DOMAIN, free_port(), free_port(), free_port())
    config = directory / "xmppauth.toml"
    config.write_text(config_toml(target))
    database = ScratchDatabase.create(directory, database_url)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        XMPPAUTH_VAR_DIR=str(directory / "var"),
        DATABASE_URL=database.url,
        XMPPAUTH_LOG_LEVEL="WARNING",
        XMPPAUTH_ADMIN_PASSWORD=secrets.token_urlsafe(12),  # so bootstrap prints none
        PYTHONUNBUFFERED="1",
    )
    router_channel = None
    if redis_url:
        router_channel = f"xmpp.router.bench{secrets.token_hex(4)}"  # apart from anything else on that Redis
        env.update(REDIS_URL=redis_url, XMPPAUTH_ROUTER_CHANNEL=router_channel)
    for command in (["migrate", "--noinput"], ["bootstrap"]):
        result = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return Scratch(directory, target, env, database, redis_url, router_channel)


def start_servers(scratch: Scratch) -> list[Server]:
    """runxmpp (and, with Redis, ``runworker`` on this run's router channel), once every port accepts."""
    servers: list[Server] = []
    try:
        _start_each(scratch, servers)
    except BaseException:
        for server in servers:  # none left running when start-up fails
            server.stop()
        raise
    return servers


def _start_each(scratch: Scratch, servers: list[Server]) -> None:
    if scratch.router_channel:
        router = Server(
            [sys.executable, "manage.py", "runworker", scratch.router_channel], scratch.env, "Running worker"
        )
        servers.append(router)
        router.wait_ready(START_TIMEOUT)
    runxmpp = Server([sys.executable, "manage.py", "runxmpp"], scratch.env, ready="admin at https:")
    servers.insert(0, runxmpp)
    runxmpp.wait_ready(START_TIMEOUT)
    target = scratch.target
    wait_listening(runxmpp, (target.starttls_port, target.tls_port, target.https_port), START_TIMEOUT)


def server_problems(servers: list[Server]) -> tuple[list[str], Counter[str], list[str]]:
    """Each server's exit during the run and its Traceback/ERROR lines (one error each), its WARNING lines
    (by kind), and the end of the output of each server with a problem."""
    problems: list[str] = []
    warnings: Counter[str] = Counter()
    tails: list[str] = []
    for server in servers:
        died = server.process.poll()
        output = server.stop()
        name = " ".join(server.command[2:4])
        if died is not None:
            problems.append(f"{name}: exited with {died} during the run")
        lines = output.splitlines()
        bad = [line for line in lines if "Traceback" in line or " ERROR " in line or "CRITICAL" in line]
        if bad:
            problems += [f"{name}: {line}" for line in bad]
            tails.append(f"{name}:\n{output[-3000:]}")
        for line in lines:
            if " WARNING " in line:
                warnings[f"{name}: {_without_numbers(line.split(' WARNING ', 1)[1])}"] += 1
    return problems, warnings, tails


def _without_numbers(text: str) -> str:
    """A log line with its addresses, ports and counts blanked, so lines of one kind count together."""
    return "".join("#" if ch.isdigit() else ch for ch in text)[:400]


# == the phases ==========


Assignment = tuple[str, ssl.SSLContext]  # carrier, client context


def assignments(contexts: list[ssl.SSLContext]) -> list[Assignment]:
    """User n logs in over carrier n mod 4: an even mix."""
    return [(TRANSPORTS[n % len(TRANSPORTS)], context) for n, context in enumerate(contexts)]


async def log_in_all(
    users: list[Assignment],
    target: Target,
    concurrency: int,
    phase: Phase,
    *,
    keep: bool,
) -> list[Session]:
    """Log every user in, ``concurrency`` at a time; keep the sessions (started) or close each at once."""
    held: list[Session] = []
    closing: set[asyncio.Task[None]] = set()
    next_user = iter(users)

    async def worker() -> None:
        for transport, context in next_user:
            started = time.perf_counter()
            try:
                session = await login(transport, target, context)
            except LoginError as exc:
                phase.errors[f"{transport}: {exc.kind}"] += 1
                continue
            except Exception as exc:  # a kind the client did not foresee: count it, keep going
                phase.errors[f"{transport}: unexpected {type(exc).__name__}: {exc}"] += 1
                continue
            phase.latencies.setdefault(transport, []).append(time.perf_counter() - started)
            phase.ok += 1
            if keep:
                if transport == "bosh":
                    try:
                        await session.open_second()
                    except LoginError as exc:
                        phase.errors[f"bosh: second connection: {exc.kind}"] += 1
                session.start()
                held.append(session)
            else:
                task = asyncio.create_task(session.close())
                closing.add(task)
                task.add_done_callback(closing.discard)

    phase.asked = len(users)
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(users)))))
    if closing:
        await asyncio.gather(*closing, return_exceptions=True)
    return held


@dataclass
class Storm:
    """Messages sent and where each arrived."""

    sent: dict[str, float] = field(default_factory=dict)  # id -> send time
    sender: dict[str, Session] = field(default_factory=dict)
    recipient: dict[str, Session] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)  # id -> receive time
    bounced: set[str] = field(default_factory=set)  # ids that came back to their sender as errors
    errors: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)  # other stanzas the clients got (not errors)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    first_send: float = 0.0
    last_receive: float = 0.0

    def handle(self, session: Session, element: bytes) -> None:
        if not element.startswith(b"<message"):
            self.other[element[1:].split(None, 1)[0].split(b">", 1)[0].decode(errors="replace")] += 1
            return
        message_id = _attr(element, b"id").decode()
        if _attr(element, b"type") == b"error":  # RFC 6120 §8.3: bounced to its sender
            condition = element.split(b"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'")[0].rsplit(b"<", 1)[-1]
            self.errors[f"bounced: {condition.decode(errors='replace').strip()}"] += 1
            self.bounced.add(message_id)
        elif message_id not in self.sent:
            self.errors["message with an id never sent"] += 1
        elif self.recipient[message_id] is not session:
            self.errors["message delivered to the wrong session"] += 1
        elif message_id in self.received:
            self.errors["message delivered twice"] += 1
        else:
            self.received[message_id] = self.last_receive = time.perf_counter()
            self.progress.set()

    @property
    def in_flight(self) -> int:
        return len(self.sent) - len(self.received)

    def lost_by_carrier(self) -> Counter[str]:
        """Messages that never arrived, by sender → recipient carrier, and whether an error came back for
        each (bounced: the server said so; silent: it did not, RFC 6120 §8.3 broken)."""
        return Counter(
            f"{self.sender[i].transport}→{self.recipient[i].transport} "
            f"({'bounced' if i in self.bounced else 'silent'})"
            for i in self.sent
            if i not in self.received
        )

    def delivery_latencies(self) -> list[float]:
        return [self.received[i] - self.sent[i] for i in self.received]


async def storm(sessions: list[Session], count: int, window: int, drain: float, seed: int) -> Storm:
    """``count`` messages between random pairs, at most ``window`` unanswered; waits ``drain`` seconds at
    most for progress before giving up on the rest (they count as lost)."""
    result = Storm()
    for session in sessions:
        session.handler = result.handle
    rng = random.Random(seed)
    result.first_send = time.perf_counter()
    for n in range(count):
        while result.in_flight >= window:
            if not await _progress(result, drain):
                return result
        pair = _live_pair(sessions, rng)
        if pair is None:
            result.errors["no two live sessions left to pick from"] += 1
            return result
        sender, recipient = pair
        message_id = f"m{n}"
        result.sent[message_id] = time.perf_counter()
        result.sender[message_id], result.recipient[message_id] = sender, recipient
        sender.send(message(recipient.jid, message_id))
        if n % 50 == 0:
            await asyncio.sleep(0)  # let the reads in
    while result.in_flight > 0:
        if not await _progress(result, drain):
            break
    return result


def _live_pair(sessions: list[Session], rng: random.Random) -> tuple[Session, Session] | None:
    """Two different sessions still up, picked at random (lost ones are counted elsewhere)."""
    for _ in range(100):
        sender, recipient = rng.sample(sessions, 2)
        if sender.lost is None and recipient.lost is None:
            return sender, recipient
    live = [session for session in sessions if session.lost is None]
    return (live[0], live[1]) if len(live) >= 2 else None


async def _progress(result: Storm, drain: float) -> bool:
    """Wait for one more delivery; False when none came within ``drain`` seconds."""
    result.progress.clear()
    try:
        await asyncio.wait_for(result.progress.wait(), drain)
    except TimeoutError:
        return False
    return True


# == the report ==========


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds == seconds else "-"


def login_table(phase: Phase) -> list[str]:
    rows = [
        "| carrier | ok/asked | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|",
    ]
    for transport in TRANSPORTS:
        values = phase.latencies.get(transport, [])
        errors = sum(n for kind, n in phase.errors.items() if kind.startswith(f"{transport}:"))
        asked = len(values) + errors
        rows.append(
            f"| {transport} | {len(values)}/{asked} | {ms(_median(values))} "
            f"| {ms(_percentile(values, 0.99))} | {errors} |"
        )
    every = phase.all_latencies()
    rows.append(
        f"| all | {phase.ok}/{phase.asked} | {ms(_median(every))} | {ms(_percentile(every, 0.99))} "
        f"| {sum(phase.errors.values())} |"
    )
    return rows


def _median(values: list[float]) -> float:
    return _percentile(values, 0.5)


def errors_text(errors: Counter[str]) -> str:
    return "; ".join(f"{kind} ×{n}" for kind, n in errors.most_common()) or "none"


@dataclass
class Run:
    logins: Phase
    idle: Phase
    storm_phase: Phase
    storm: Storm
    rss: dict[str, int]
    alive: int
    lost_sessions: Counter[str]
    bosh_reopened: int  # BOSH connections the server closed while idle and the client opened again
    bosh_open_retries: int  # BOSH connection attempts that failed and were tried again
    problems: list[str]
    warnings: Counter[str]
    tails: list[str]
    load_before: str
    load_after: str

    @property
    def lost_messages(self) -> int:
        return len(self.storm.sent) - len(self.storm.received)

    @property
    def error_count(self) -> int:
        return (
            sum(self.logins.errors.values())
            + sum(self.idle.errors.values())
            + sum(self.storm.errors.values())
            + (self.idle.ok - self.alive)
            + sum(self.lost_sessions.values())
            + len(self.problems)
        )


def report(run: Run, args: argparse.Namespace, setup: str) -> list[str]:
    logins, idle, storm_phase, storm_ = run.logins, run.idle, run.storm_phase, run.storm
    rss = run.rss
    per_session = (rss["idle"] - rss["before idle"]) / idle.ok / 1024 if idle.ok else float("nan")
    delivery = storm_.delivery_latencies()
    span = storm_.last_receive - storm_.first_send
    lines = [
        f"## Mixed load on one runxmpp ({setup})",
        "",
        f"load average before: {run.load_before}; after: {run.load_after}",
        "",
        f"### {logins.asked} logins, {args.login_concurrency} in flight, "
        "over STARTTLS, direct TLS, wss, BOSH",
        "",
        f"{logins.ok}/{logins.asked} in {logins.elapsed:.1f} s = {logins.ok / logins.elapsed:.1f} logins/s; "
        f"server CPU {logins.server_cpu / max(logins.ok, 1) * 1e3:.2f} ms/login, client CPU "
        f"{logins.client_cpu / max(logins.ok, 1) * 1e3:.2f} ms/login, "
        f"other load {logins.other_load:.2f} cores",
        "",
        *login_table(logins),
        "",
        f"client step timeout {args.step_timeout:.0f} s",
        "",
        f"### {idle.asked} idle sessions ({args.idle_concurrency} logins in flight), then a storm",
        "",
        f"sessions up: {idle.ok}/{idle.asked} in {idle.elapsed:.1f} s "
        f"({idle.ok / idle.elapsed:.1f} logins/s, other load {idle.other_load:.2f} cores); "
        f"alive at the end (ping answered): {run.alive}/{idle.ok}",
        "",
        *login_table(idle),
        "",
        f"messages: {len(storm_.sent)} sent, {len(storm_.received)} received, {run.lost_messages} lost, "
        f"window {args.window}; {len(storm_.received) / span if span > 0 else 0:.0f} messages/s "
        f"(first send to last receipt {span:.1f} s); delivery p50 {ms(_median(delivery))} ms, "
        f"p99 {ms(_percentile(delivery, 0.99))} ms, max {ms(max(delivery, default=float('nan')))} ms; "
        f"server CPU {storm_phase.server_cpu / max(len(storm_.received), 1) * 1e3:.2f} ms/message, "
        f"other load {storm_phase.other_load:.2f} cores",
        f"other stanzas the clients got during the storm: {dict(storm_.other) or 'none'}",
        "",
        "| server RSS (runxmpp) | MiB |",
        "|---|---|",
        *(f"| {when} | {value / 2**20:.1f} |" for when, value in rss.items()),
        f"| per idle session | {per_session:.1f} KiB |",
        "",
        f"login errors: {errors_text(logins.errors)}",
        f"idle errors: {errors_text(idle.errors)}",
        f"storm errors: {errors_text(storm_.errors)}",
        f"lost messages by sender→recipient carrier: {errors_text(storm_.lost_by_carrier())}",
        f"sessions lost: {errors_text(run.lost_sessions)}",
        f"BOSH connections closed by the server while idle and reopened (not errors): {run.bosh_reopened}; "
        f"connection attempts that failed and were tried again: {run.bosh_open_retries}",
        f"server warnings: {errors_text(run.warnings)}",
        f"server problems: {len(run.problems)}",
        *(f"- {problem}" for problem in run.problems[:20]),
        "",
        f"RESULT logins={logins.ok}/{logins.asked} idle={idle.ok}/{idle.asked} alive={run.alive} "
        f"sent={len(storm_.sent)} received={len(storm_.received)} lost={run.lost_messages} "
        f"errors={run.error_count}",
    ]
    if run.tails:
        lines += ["", "## The end of the output of the servers with problems", "", *run.tails]
    return lines


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# == main ==========


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="48 logins, 200 idle, 500 messages")
    parser.add_argument("--logins", type=int, help="logins of the first phase (default 1000, quick 48)")
    parser.add_argument("--login-concurrency", type=int, help="logins in flight (default: all at once)")
    parser.add_argument("--idle", type=int, help="sessions held (default 10000, quick 200)")
    parser.add_argument("--idle-concurrency", type=int, default=100, help="logins in flight while setting up")
    parser.add_argument("--messages", type=int, help="messages of the storm (default 20000, quick 500)")
    parser.add_argument("--window", type=int, default=1000, help="messages in flight at most")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds without a delivery = lost")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--step-timeout",
        type=float,
        default=120.0,
        help="seconds a client waits for one protocol step or a pong (a patient client: 1000 logins at once "
        "on a loaded 2-core machine take about 50 s)",
    )
    parser.add_argument("--ping-concurrency", type=int, default=500, help="pings in flight at the end")
    args = parser.parse_args(argv)
    args.logins = args.logins if args.logins is not None else (48 if args.quick else 1000)
    args.login_concurrency = args.login_concurrency or args.logins
    args.idle = args.idle if args.idle is not None else (200 if args.quick else 10000)
    args.messages = args.messages if args.messages is not None else (500 if args.quick else 20000)
    if args.idle < 2 and args.messages:
        parser.error("the storm needs at least 2 idle sessions")
    return args


async def _ping_all(sessions: list[Session], concurrency: int) -> list[bool]:
    """Every session pings the server (XEP-0199), ``concurrency`` at a time; whether each got its pong."""
    gate = asyncio.Semaphore(concurrency)

    async def one(session: Session) -> bool:
        async with gate:
            return await session.ping()

    return await asyncio.gather(*(one(session) for session in sessions))


async def phases(scratch: Scratch, users: dict[str, list[ssl.SSLContext]], args, servers) -> Run:  # noqa: ANN001
    target = scratch.target
    runxmpp = servers[0].pid
    pids = tuple(server.pid for server in servers)
    rss: dict[str, int] = {}
    warm = Phase("warm-up")
    await log_in_all(assignments(users["w"]), target, 4, warm, keep=False)
    if warm.errors:
        print(f"# warm-up errors: {errors_text(warm.errors)}", flush=True)
    load_before = load_average()
    await asyncio.sleep(SETTLE)
    rss["before logins"] = rss_bytes(runxmpp)

    logins = Phase("logins")
    with measured(logins, pids):
        await log_in_all(assignments(users["l"]), target, args.login_concurrency, logins, keep=False)
    print(f"# logins: {logins.ok}/{logins.asked} in {logins.elapsed:.1f} s", flush=True)
    await asyncio.sleep(SETTLE)
    rss["before idle"] = rss_bytes(runxmpp)

    idle = Phase("idle")
    with measured(idle, pids):
        sessions = await log_in_all(assignments(users["i"]), target, args.idle_concurrency, idle, keep=True)
    print(f"# idle: {idle.ok}/{idle.asked} up in {idle.elapsed:.1f} s", flush=True)
    await asyncio.sleep(SETTLE)
    rss["idle"] = rss_bytes(runxmpp)

    storm_phase = Phase("storm")
    with measured(storm_phase, pids):
        result = await storm(sessions, args.messages, args.window, args.drain, args.seed)
    print(f"# storm: {len(result.received)}/{len(result.sent)} in {storm_phase.elapsed:.1f} s", flush=True)
    await asyncio.sleep(SETTLE)
    rss["after the storm"] = rss_bytes(runxmpp)

    answers = await _ping_all(sessions, args.ping_concurrency)
    lost_sessions = Counter(f"{s.transport}: {s.lost}" for s in sessions if s.lost is not None)
    load_after = load_average()
    await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)
    await asyncio.sleep(SETTLE)
    rss["after closing"] = rss_bytes(runxmpp)
    reopened = sum(getattr(session, "reopened", 0) for session in sessions)
    retries = sum(getattr(session, "open_retries", 0) for session in sessions)
    return Run(
        logins,
        idle,
        storm_phase,
        result,
        rss,
        sum(answers),
        lost_sessions,
        reopened,
        retries,
        [],
        Counter(),
        [],
        load_before,
        load_after,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadclient.STEP_TIMEOUT = args.step_timeout  # every client step and pong (bench.mixedclient.step_timeout)
    nofile = raise_nofile()
    # A socket per session, two for a BOSH one (a quarter of them), one more while a BOSH session ends.
    wanted = max(args.idle, args.logins) * 3 // 2 + 200
    if nofile < wanted:
        raise SystemExit(f"open-file limit {nofile} is below the {wanted} this run needs (ulimit -n)")
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="xmppauth-load-"))
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL") or None
    scratch = None
    try:
        scratch = prepare(directory, database_url, redis_url)
        setup = ("PostgreSQL" if scratch.database.admin_url else "SQLite") + (
            ", Redis and runworker" if redis_url else ", in-memory channel layer, in-process router"
        )
        os.environ.update(scratch.env)  # the same database and CA as the server, for the certificates
        ca = load_server_ca()
        made = time.monotonic()
        certs = directory / "clients"
        identities = {
            prefix: make_identities(*ca, DOMAIN, n, certs, key_type="ec-p256", prefix=prefix)
            for prefix, n in (
                ("w", WARM_UP_PER_CARRIER * len(TRANSPORTS)),
                ("l", args.logins),
                ("i", args.idle),
            )
        }
        provision_accounts([identity for group in identities.values() for identity in group])
        users = {prefix: contexts_for(group) for prefix, group in identities.items()}
        total = sum(len(group) for group in identities.values())
        print(
            f"# {setup}; {total} P-256 certificates, accounts and contexts in {time.monotonic() - made:.1f} s"
        )
        servers = start_servers(scratch)
        try:
            run = asyncio.run(phases(scratch, users, args, servers))
        finally:
            run_problems, warnings, tails = server_problems(servers)
        run.problems, run.warnings, run.tails = run_problems, warnings, tails
    finally:
        if scratch is not None:
            scratch.database.drop()
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print("\n".join(report(run, args, setup)))
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    return 0 if run.error_count == 0 and run.lost_messages == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
