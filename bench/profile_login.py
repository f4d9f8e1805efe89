"""Where a login's server CPU goes: the reactor thread against the database threads, and optionally which
functions, sampled with py-spy.

Prints figures; not a test. Starts the scratch ``runc2s`` of ``bench.run_login_bench`` (SQLite, direct TLS,
accounts provisioned; with ``--redis-url``, the Redis channel layer), warms it up, then runs ``--count``
logins at ``--concurrency`` and reads each of the server's threads' CPU time from ``/proc/<pid>/task/*/stat``
before and after. With ``--py-spy`` (needs
``py-spy`` on the PATH or in the venv: ``pip install py-spy``), it also samples the server's Python stacks
while the GIL is held (``--gil --nonblocking``, so the server is not paused) and prints the functions that
hold it longest, per thread group. Native time outside the GIL (OpenSSL, SQLite) is in the CPU split but
not in the samples.

Run from the checkout::

    .venv/bin/python -m bench.profile_login --count 1000
    .venv/bin/python -m bench.profile_login --count 1000 --py-spy --top 40
    .venv/bin/python -m bench.profile_login --count 1500 --users 100   # returning users (issue 17 §1 caches)
    .venv/bin/python -m bench.profile_login --count 3000 --database-on-loop   # the probe below
    .venv/bin/python -m bench.profile_login --count 3000 --resumed   # each login resumes its TLS session
    .venv/bin/python -m bench.profile_login --count 2000 --phases    # CPU per login, phase by phase

Besides CPU time, it reads each thread's context switches (``/proc/<pid>/task/*/status``), summed over the
process, and the share of the CPU time spent in the kernel: the hand-offs between the reactor thread and
the worker threads, and the GIL changing hands between them, show there.

``--database-on-loop`` is an experiment, never a configuration: the server runs with
``bench/probes/database_on_loop`` first on its ``PYTHONPATH``, whose ``sitecustomize`` makes every call the
listener would hand to a worker thread run on the reactor thread instead (see that file). Compared with a
plain run, it measures what the worker threads cost a login.

``--phases`` runs the server with ``bench/probes/phase_timers`` (see that file): each callback of the event
loop and each phase of a login (the handshake, the chain check, the XMPP stream, the database batch...) is
timed in the server's own thread CPU time, and the table gives each one's µs per login, inclusive. Its
timers cost about a microsecond per timed call: read the phases against each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from bench.clientcerts import load_server_ca, make_identities, provision_accounts
from bench.loadclient import (
    contexts_for,
    prime_sessions,
    raise_nofile_limit,
    resumed_connector,
    run_logins,
    xmpp_connector,
)
from bench.proc import CLOCK_TICKS, stat_ticks
from bench.run_login_bench import DOMAIN, HOST, WARM_UP_LOGINS, prepare, running, start_runc2s

PROBES = Path(__file__).resolve().parent / "probes"
_FRAME_FILE = re.compile(r" \(([^)]*/)?([^/)]+)\)$")


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime of each thread of ``pid``, in clock ticks."""
    ticks = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            ticks[int(task)] = stat_ticks(Path(f"/proc/{pid}/task/{task}/stat"))
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return ticks


def thread_switches(pid: int) -> dict[int, tuple[int, int]]:
    """Voluntary and involuntary context switches of each thread of ``pid`` (proc(5) ``status``)."""
    switches = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            lines = Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        switches[int(task)] = (
            int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]),
        )
    return switches


def system_ticks(pid: int) -> int:
    """stime of the whole process (all its threads, proc(5) ``stat`` field 15), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[12])


def postgres_ticks() -> dict[int, int]:
    """utime + stime of every PostgreSQL server process on this machine (``comm`` postgres), in clock ticks:
    the database server's own CPU, which the server process's /proc/<pid>/stat does not hold. Empty when
    none runs here (SQLite)."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                ticks[int(entry)] = stat_ticks(Path(f"/proc/{entry}/stat"))
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
    return ticks


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def summarise_samples(raw: Path, top: int) -> list[str]:
    """py-spy's raw (collapsed) stacks: inclusive share of the functions, reactor thread and the rest."""
    groups: dict[str, Counter[str]] = {"reactor thread": Counter(), "database threads": Counter()}
    totals: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_FRAME_FILE.sub(r" (\2)", frame) for frame in stack.split(";")[1:]]
        if not frames:
            continue
        group = "reactor thread" if any("manage.py" in frame for frame in frames) else "database threads"
        totals[group] += int(count)
        for frame in set(frames):
            groups[group][frame] += int(count)
    lines = []
    for group, counter in groups.items():
        total = totals[group] or 1
        lines += ["", f"## {group}: {totals[group]} samples holding the GIL (inclusive share)", ""]
        lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return lines


POSTGRES_COUNTERS = {
    "transactions committed (an autocommit statement is one)": "xact_commit",
    "rows inserted": "tup_inserted",
    "rows deleted": "tup_deleted",
    "rows updated": "tup_updated",
}


def postgres_activity(database_url: str | None, before: dict[str, int] | None) -> dict[str, int]:
    """The database's activity counters (``pg_stat_database``); with ``before``, the difference since then.

    A backend reports its counters when its transaction ends, at most once a second, and an idle one within
    about ten seconds: the first reading waits for the warm-up's, the second is taken after the server
    stopped (a backend reports at exit). Other clients of the database count too (none during the bench,
    but the server's own pollers: the termination watcher, five statements a second). Empty off PostgreSQL.
    """
    if not database_url or not database_url.startswith(("postgres://", "postgresql://")):
        return {}
    import psycopg

    if before is None:
        time.sleep(11)
    else:
        time.sleep(2)
    columns = ", ".join(POSTGRES_COUNTERS.values())
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute(
            f"SELECT {columns} FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    now = dict(zip(POSTGRES_COUNTERS, row or (), strict=True))
    return {name: now[name] - before[name] for name in now} if before is not None else now


def phase_table(path: Path, logins: int, process_ms_per_login: float) -> list[str]:
    """The phase probe's counts (written when the server stopped) as a table: calls and µs per login, µs per
    call, share of the whole process's CPU per login. The loop's callbacks first (they partition the reactor
    thread's time), then the phases in the probe's order (inclusive: a phase contains those below it)."""
    if not path.exists():
        return ["\n## Phases: the server wrote no counts (did it stop cleanly?)"]
    from bench.probes.phase_timers.sitecustomize import LOOP, PHASES

    counts = json.loads(path.read_text(encoding="utf-8"))
    loop = sorted((label for label in counts if label.startswith(LOOP)), key=lambda k: -counts[k]["seconds"])
    ordered = [label for label, _, _ in PHASES if label in counts]
    lines = ["\n## Phases (server thread CPU, inclusive)\n", "| phase | calls per login | µs per call | "
             "µs per login | share of the process |", "|---|---|---|---|---|"]  # fmt: skip
    for label in [*loop, *ordered]:
        calls, seconds = counts[label]["calls"], counts[label]["seconds"]
        if label in loop and seconds * 1e6 / logins < 1:
            continue  # a callback of the process's own timers, not of the logins
        per_login = seconds * 1e6 / logins
        share = per_login / (process_ms_per_login * 1000) if process_ms_per_login else 0.0
        name = label.lstrip(" ")
        name = "\u00a0" * (len(label) - len(name)) + name  # the indentation kept through Markdown
        lines.append(f"| {name} | {calls / logins:.2f} | {seconds * 1e6 / max(calls, 1):.1f} | "
                     f"{per_login:.0f} | {100 * share:.0f} % |")  # fmt: skip
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--first-login", action="store_true", help="no accounts provisioned up front")
    users_help = "distinct users (default --count: each logs in once); fewer: returning users, in turn"
    parser.add_argument("--users", type=int, help=users_help)
    parser.add_argument("--redis-url", help="the channel layer on this Redis, as in production")
    parser.add_argument("--database-url", help="a throw-away database instead of the scratch SQLite file")
    parser.add_argument("--py-spy", action="store_true", help="also sample the Python stacks (py-spy)")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30, help="functions listed per thread group")
    parser.add_argument("--samples-out", type=Path, help="also keep py-spy's raw (collapsed) stacks here")
    on_loop_help = "experiment: the server's worker-thread calls run on its reactor thread (bench/probes)"
    parser.add_argument("--database-on-loop", action="store_true", help=on_loop_help)
    resumed_help = "each login resumes the TLS session of an untimed login of the same user before it"
    parser.add_argument("--resumed", action="store_true", help=resumed_help)
    parser.add_argument("--phases", action="store_true", help="time the server's phases (bench/probes)")
    args = parser.parse_args(argv)
    if args.phases and args.database_on_loop:  # each probe is a sitecustomize: Python would import only one
        parser.error("--phases and --database-on-loop cannot run together: each probe is a sitecustomize")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    spy = py_spy() if args.py_spy else None
    if args.py_spy and spy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    problems: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="xmppauth-profile-"))
    try:
        scratch = prepare(directory, args.database_url)
        os.environ.update(scratch.env)
        if args.redis_url:
            scratch = replace(scratch, env={**scratch.env, "REDIS_URL": args.redis_url})
        probe = "database_on_loop" if args.database_on_loop else "phase_timers" if args.phases else None
        if probe is not None:
            paths = [str(PROBES / probe), scratch.env.get("PYTHONPATH", "")]
            python_path = os.pathsep.join(filter(None, paths))
            scratch = replace(scratch, env={**scratch.env, "PYTHONPATH": python_path})
        phases_out = directory / "phases.json"
        if args.phases:
            scratch = replace(scratch, env={**scratch.env, "XMPPAUTH_PHASES_OUT": str(phases_out)})
        ca = load_server_ca()
        users = make_identities(*ca, DOMAIN, args.users or args.count, directory / "clients", prefix="p")
        warm = make_identities(*ca, DOMAIN, WARM_UP_LOGINS, directory / "clients", prefix="w")
        if not args.first_login:
            provision_accounts([*users, *warm])
        with running(start_runc2s(scratch), "runc2s", problems) as server:
            connect = xmpp_connector(HOST, scratch.direct_port, DOMAIN, contexts_for(warm), starttls=False)
            asyncio.run(run_logins(connect, WARM_UP_LOGINS, 10, "warm-up", server_pid=None, xmpp=True))
            if args.resumed:
                contexts = contexts_for(users, resuming=True)
                primed = asyncio.run(prime_sessions(HOST, scratch.direct_port, DOMAIN, contexts))
                if primed:
                    problems.append(f"priming the sessions to resume: {dict(primed)}")
            raw = directory / "py-spy.txt"
            sampler = None
            if spy is not None:
                command = [spy, "record", "--gil", "--nonblocking", "--threads", "-r", str(args.rate)]
                command += ["-f", "raw", "-o", str(raw), "-p", str(server.pid)]
                sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # py-spy attaches
            database_before = postgres_activity(args.database_url, None)
            if args.phases:
                os.kill(server.pid, signal.SIGUSR2)  # the probe forgets the warm-up's phases
            before = thread_ticks(server.pid)
            switches_before, system_before = thread_switches(server.pid), system_ticks(server.pid)
            postgres_before = postgres_ticks() if args.database_url else {}
            if args.resumed:
                connect = resumed_connector(HOST, scratch.direct_port, DOMAIN, contexts)
            else:
                connect = xmpp_connector(
                    HOST, scratch.direct_port, DOMAIN, contexts_for(users), starttls=False
                )
            label = "first logins" if args.first_login else "logins, accounts provisioned"
            if args.resumed:
                label += ", resumed TLS"
            if args.users:
                label += f", {len(users)} users in turn"
            report = asyncio.run(
                run_logins(connect, args.count, args.concurrency, label, server_pid=server.pid, xmpp=True)
            )
            after = thread_ticks(server.pid)
            switches_after, system_after = thread_switches(server.pid), system_ticks(server.pid)
            postgres_after = postgres_ticks() if args.database_url else {}
            if sampler is not None:
                sampler.send_signal(2)  # SIGINT: py-spy writes its file and exits
                sampler.wait(30)
        database_work = postgres_activity(args.database_url, database_before)  # the server stopped: flushed
        ok = max(report.ok, 1)
        reactor = (after.get(server.pid, 0) - before.get(server.pid, 0)) / CLOCK_TICKS
        others = sum(ticks - before.get(tid, 0) for tid, ticks in after.items() if tid != server.pid)
        others /= CLOCK_TICKS
        if args.database_on_loop:
            label += ", database calls on the reactor thread (bench/probes/database_on_loop)"
        print(f"# {label}: {report.ok}/{report.count} at {args.concurrency}, {report.per_second:.1f}/s")
        print(f"# errors: {dict(report.errors) or 'none'}")
        print("\n| thread | server CPU ms per login |\n|---|---|")
        print(f"| reactor (TLS, XML core, Twisted) | {1000 * reactor / ok:.2f} |")
        print(f"| database threads (certificate, SASL, session rows) | {1000 * others / ok:.2f} |")
        print(f"| whole process (/proc/<pid>/stat) | {report.cpu_ms_per_login:.2f} |")
        system = (system_after - system_before) / CLOCK_TICKS
        print(f"| of which in the kernel (stime) | {1000 * system / ok:.2f} |")
        voluntary, involuntary = (
            sum(now[i] - switches_before.get(tid, (0, 0))[i] for tid, now in switches_after.items())
            for i in (0, 1)
        )
        print("\n| context switches, all threads | per login |\n|---|---|")
        print(f"| voluntary (a thread waited: a lock, the GIL, a queue, the poller) | {voluntary / ok:.1f} |")
        print(f"| involuntary (preempted) | {involuntary / ok:.1f} |")
        if postgres_after:
            # A backend that ended during the run takes its ticks with it; the server's connections last.
            database = sum(ticks - postgres_before.get(pid, 0) for pid, ticks in postgres_after.items())
            per_login = 1000 * database / CLOCK_TICKS / ok
            print(f"| PostgreSQL server processes (every postgres in /proc) | {per_login:.2f} |")
        if database_work:
            print("\n| PostgreSQL (pg_stat_database, the server's database) | per login |\n|---|---|")
            for name, value in database_work.items():
                print(f"| {name} | {value / ok:.2f} |")
        if args.phases:
            print("\n".join(phase_table(phases_out, ok, report.cpu_ms_per_login)))
        if spy is not None and raw.exists():
            print("\n".join(summarise_samples(raw, args.top)))
            if args.samples_out:
                shutil.copyfile(raw, args.samples_out)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if problems:
        print("\n## Problems seen\n\n" + "\n".join(problems))
    return 0 if report.ok == report.count else 1


if __name__ == "__main__":
    raise SystemExit(main())
