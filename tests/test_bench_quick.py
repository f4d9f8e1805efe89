"""The login benchmark still runs: ``bench.run_login_bench --quick`` exits 0 and prints a login rate.

A "scripts do not rot" check, not a timed assertion: any rate above zero passes (figures: bench/RESULTS.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| XMPP login, ([^|]+?) \| (\d+)/(\d+) \| \d+ \| ([\d.]+) \|", re.MULTILINE)


def test_quick_login_bench_exits_0_and_reports_logins_per_second():
    result = subprocess.run(
        [sys.executable, "-m", "bench.run_login_bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = {match[1]: float(match[4]) for match in ROW.finditer(result.stdout)}
    assert set(rows) == {"direct TLS", "STARTTLS", "direct TLS, first login"}, result.stdout[-4000:]
    assert all(rate > 0 for rate in rows.values()), result.stdout[-4000:]
    assert "idle 100, direct TLS" in result.stdout
