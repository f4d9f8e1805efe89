"""``bench.tls_paths`` still runs: every variant it can start here completes its handshakes.

A "scripts do not rot" check, not a timed assertion: any rate above zero passes (figures: bench/RESULTS.md).
A variant that needs uvloop is skipped, and says so, where uvloop is not installed.
"""

from __future__ import annotations

import re

from bench.tls_paths import LABELS, VARIANTS
from tests.processes import SAME_ON_BOTH_LEGS, run_bench

pytestmark = SAME_ON_BOTH_LEGS

COUNT = 20
ROW = re.compile(r"^\| (.+?) \| (\d+|skipped: [^|]+?) \| ([\d.]+|-) \|", re.MULTILINE)


def test_every_variant_completes_its_handshakes_or_says_why_it_was_skipped():
    result, output = run_bench("tls_paths", "--count", str(COUNT), "--rounds", "1", timeout=120)
    assert result.returncode == 0, output
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
