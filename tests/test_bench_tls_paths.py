"""``bench.tls_paths`` still runs: every variant it can start here completes its handshakes.

A "scripts do not rot" check, not a timed assertion: any rate above zero passes (figures: bench/RESULTS.md).
A variant that needs uvloop is skipped, and says so, where uvloop is not installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.tls_paths import LABELS, VARIANTS
from tests.processes import SAME_ON_BOTH_LEGS

pytestmark = SAME_ON_BOTH_LEGS

ROOT = Path(__file__).resolve().parent.parent
COUNT = 20
ROW = re.compile(r"^\| (.+?) \| (\d+|skipped: [^|]+?) \| ([\d.]+|-) \|", re.MULTILINE)


def test_every_variant_completes_its_handshakes_or_says_why_it_was_skipped():
    result = subprocess.run(
        [sys.executable, "-m", "bench.tls_paths", "--count", str(COUNT), "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    per_run = re.findall(r"^\| round 1: (.+?) \| (\d+)/(\d+) \|", result.stdout, re.MULTILINE)
    assert all(ok == count == str(COUNT) for _, ok, count in per_run), result.stdout
    medians = {label: (rounds, rate) for label, rounds, rate in ROW.findall(result.stdout)}
    assert set(LABELS.values()) <= set(medians), result.stdout
    ran = {label for label, (rounds, _) in medians.items() if rounds == "1"}
    assert {label for label, _, _ in per_run} == ran, result.stdout
    for name in VARIANTS:
        rounds, rate = medians[LABELS[name]]
        if "uvloop" in name and rounds.startswith("skipped"):
            assert rounds == "skipped: uvloop not installed", result.stdout
            continue
        assert rounds == "1" and float(rate) > 0, result.stdout
