"""The comparison benchmark still runs: ``bench.compare --quick`` exits 0 and reports every target's logins.

A "scripts do not rot" check, not a timed assertion: any rate above zero passes (figures: COMPARISON.md).
Debian's ejabberd and Prosody (with prosody-modules) must be installed (``.ci/run`` installs them): without
them the test fails, unless XMPPAUTH_SKIP_COMPARISON=1 says to skip; the test does not ask the benchmark to
install them (``--no-install``). The two ``runc2s --reuse-port``
processes need Redis: their row is expected when Redis answers at the benchmark's default URL.
"""

from __future__ import annotations

import re

from bench.compare import parse_args, redis_answers
from bench.targets import ejabberd, prosody
from tests.processes import SAME_ON_BOTH_LEGS, need_comparison_target, run_bench

pytestmark = SAME_ON_BOTH_LEGS

ROW = re.compile(r"^\| ([^|]+?) \| (\d+)/(\d+) \| \d+ \| ([\d.]+) \|", re.MULTILINE)
LOGIN_LABELS = {
    "ours, runc2s",
    "ours, runxmpp",
    "ejabberd",
    "Prosody, mod_auth_ccert",
    "openssl s_server (TLS handshake only)",
    # issue 17 §4: the same users again, every login resuming its TLS session (a full handshake is an error)
    "ours, runc2s, resumed TLS",
    "ours, runxmpp, resumed TLS",
}

REDIS_URL = parse_args([]).redis_url


def test_quick_comparison_exits_0_and_reports_a_login_rate_for_every_target():
    need_comparison_target("ejabberd", ejabberd.installed())
    need_comparison_target("Prosody (with prosody-modules)", prosody.installed())
    result, output = run_bench(
        "compare", "--quick", "--count", "40", "--idle", "20", "--no-install", timeout=600
    )
    assert result.returncode == 0, output
    report = result.stdout[result.stdout.index("## Logins") :]
    rows = {match[1]: (int(match[2]), float(match[4])) for match in ROW.finditer(report)}
    shared = "ours, 2 × runc2s --reuse-port (Redis)"
    expected = LOGIN_LABELS | ({shared} if redis_answers(REDIS_URL) else set())
    assert expected <= set(rows), output
    assert all(rows[label][0] > 0 and rows[label][1] > 0 for label in expected), output
    assert "ejabberd, idle 20" in report and "Prosody, mod_auth_ccert, idle 20" in report, output
