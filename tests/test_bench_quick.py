"""The login benchmarks still run: ``bench.run_login_bench --quick`` exits 0 and prints a login rate, and
``bench.profile_login`` on a few logins prints its CPU split.

A "scripts do not rot" check, not a timed assertion: any rate above zero passes (figures: bench/RESULTS.md).
"""

from __future__ import annotations

import re

import pytest

from tests.processes import SAME_ON_BOTH_LEGS, run_bench

pytestmark = SAME_ON_BOTH_LEGS

ROW = re.compile(r"^\| XMPP login, ([^|]+?) \| (\d+)/(\d+) \| \d+ \| ([\d.]+) \|", re.MULTILINE)


def test_quick_login_bench_exits_0_and_reports_logins_per_second():
    result, output = run_bench("run_login_bench", "--quick", "--count", "60", "--idle", "30", timeout=300)
    assert result.returncode == 0, output
    rows = {match[1]: float(match[4]) for match in ROW.finditer(result.stdout)}
    assert set(rows) == {
        "direct TLS",
        "STARTTLS",
        "direct TLS, first login",
        "direct TLS, SCRAM-SHA-256",  # issue 14
    }, result.stdout[-4000:]
    assert all(rate > 0 for rate in rows.values()), result.stdout[-4000:]
    assert "idle 30, direct TLS" in result.stdout


def test_profile_login_exits_0_and_splits_the_cpu_by_thread():
    result, output = run_bench("profile_login", "--count", "40", "--concurrency", "10", timeout=300)
    assert result.returncode == 0, output
    assert "# logins, accounts provisioned: 40/40 at 10" in result.stdout, result.stdout[-4000:]
    row = re.compile(r"^\| (reactor|database threads|whole process)[^|]* \| ([\d.]+) \|$", re.MULTILINE)
    split = dict(row.findall(result.stdout))
    assert set(split) == {"reactor", "database threads", "whole process"}, result.stdout[-4000:]
    assert float(split["whole process"]) > 0, result.stdout[-4000:]


CRL_ROW = re.compile(
    r"^\| (\d+) \| (\d+)/(\d+) \| (\d+)/(\d+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+)/(\d+) \|",
    re.MULTILINE,
)


def test_quick_crl_scale_bench_ends_exactly_the_listed_sessions():
    """``bench.crl_scale --quick``: the listed sessions end, one command each, the others still answer."""
    result, output = run_bench("crl_scale", "--quick", timeout=300)
    assert result.returncode == 0, output
    row = CRL_ROW.search(result.stdout)
    assert row is not None, result.stdout[-4000:]
    serials, held, sessions, ended, affected, refresh, last_end, commands, alive, unaffected = row.groups()
    assert (int(serials), held, sessions) == (2003, "30", "30"), result.stdout[-4000:]
    assert ended == affected == commands == "3", result.stdout[-4000:]
    assert alive == unaffected == "27", result.stdout[-4000:]
    assert float(refresh) > 0 and float(last_end) > 0, result.stdout[-4000:]
    assert "'held: stream error reset': 3" in result.stdout, result.stdout[-4000:]


def test_tls_memory_bench_exits_0_and_reports_a_size_per_connection():
    """``bench.tls_memory``: OpenSSL's own memory per idle connection (issue 17 §5), BIOs swapped or not."""
    for extra in ([], ["--swap-bios", "--groups", "X25519"]):
        result, output = run_bench("tls_memory", "--count", "30", *extra, timeout=300)
        assert result.returncode == 0, output
        sizes = re.findall(r"malloc in use ([\d.]+) KiB per connection", result.stdout)
        assert len(sizes) == 1 and float(sizes[0]) > 0, result.stdout
        assert f"BIOs swapped {bool(extra)}" in result.stdout, result.stdout


def test_profile_login_reports_context_switches_and_runs_with_the_database_on_loop_probe():
    args = ("profile_login", "--count", "40", "--concurrency", "10", "--database-on-loop")
    result, output = run_bench(*args, timeout=300)
    assert result.returncode == 0, output
    label = "accounts provisioned, database calls on the reactor thread (bench/probes/database_on_loop)"
    assert f"# logins, {label}: 40/40 at 10" in result.stdout, result.stdout[-4000:]
    names = ("voluntary", "involuntary", "of which in the kernel")
    row = re.compile(rf"^\| ({'|'.join(names)})[^|]* \| ([\d.]+) \|$", re.MULTILINE)
    assert set(dict(row.findall(result.stdout))) == set(names), result.stdout[-4000:]


def test_profile_login_resumed_times_only_logins_that_resumed_their_tls_session():
    """``--resumed``: each timed login resumes its user's session (one that did a full handshake is counted
    as an error by ``bench.loadclient.resumed_connector``, so 40/40 with no error means 40 resumed)."""
    result, output = run_bench(
        "profile_login", "--count", "40", "--concurrency", "10", "--resumed", timeout=300
    )
    assert result.returncode == 0, output
    assert "# logins, accounts provisioned, resumed TLS: 40/40 at 10" in result.stdout, result.stdout[-4000:]
    assert "# errors: none" in result.stdout and "Problems seen" not in result.stdout, result.stdout[-4000:]


def test_profile_login_phases_times_every_phase_the_probe_names():
    """``--phases`` (bench/probes/phase_timers): every phase of the probe is found in the server and timed,
    once per login where a login has exactly one (a renamed function would show as a missing row)."""
    from bench.probes.phase_timers.sitecustomize import PHASES

    args = ("profile_login", "--count", "40", "--concurrency", "10", "--phases")
    result, output = run_bench(*args, timeout=300)
    assert result.returncode == 0, output
    row = re.compile(r"^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) % \|$", re.MULTILINE)
    rows = {name.replace("\u00a0", " "): float(calls) for name, calls, *_ in row.findall(result.stdout)}
    assert {label for label, _, _ in PHASES} <= set(rows), result.stdout[-4000:]
    once = ("accept: connection_made", "  check_certificate", "  authenticate_external", "  bind: admit")
    assert all(rows[label] == 1.0 for label in once), result.stdout[-4000:]
    assert rows["    OpenSSL's handshake"] >= 1.0, result.stdout[-4000:]
    assert any(name.startswith("event loop: ") for name in rows), result.stdout[-4000:]


def test_profile_login_refuses_two_probes_at_once():
    """Each probe is a ``sitecustomize``: Python imports one, so the other would silently not run."""
    from bench.profile_login import parse_args

    with pytest.raises(SystemExit) as refused:
        parse_args(["--phases", "--database-on-loop"])
    assert refused.value.code == 2
    assert parse_args(["--phases"]).phases and parse_args(["--database-on-loop"]).database_on_loop
