"""``bench.tls_server_side`` still runs: every variant completes its logins (the bench stops if a resumed one
does not resume).

A "scripts do not rot" check, not a timed assertion: any time above zero passes (figures: bench/RESULTS.md).
"""

from __future__ import annotations

import re

from tests.processes import SAME_ON_BOTH_LEGS, run_bench

pytestmark = SAME_ON_BOTH_LEGS

VARIANT = r"(full|resumed) \| (OpenSSL|ours) \| (session cache|stateless tickets)"
ROW = re.compile(rf"^\| 1 \| {VARIANT} \| ([\d.]+) \|$", re.MULTILINE)


def test_every_variant_runs_its_logins():
    result, output = run_bench("tls_server_side", "--count", "3", "--rounds", "1", timeout=120)
    assert result.returncode == 0, output
    rows = ROW.findall(result.stdout)
    assert len(rows) == 8 and len({row[:3] for row in rows}) == 8, result.stdout
    assert all(float(row[3]) > 0 for row in rows), result.stdout
