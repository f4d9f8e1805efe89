"""``bench.handoff`` still runs: each variant answers every call it makes (a variant whose answers never come
hangs and the check times out). A "scripts do not rot" check, not a timed assertion (figures:
bench/RESULTS.md, "Stop 23")."""

from __future__ import annotations

import re

from tests.processes import SAME_ON_BOTH_LEGS, run_bench

pytestmark = SAME_ON_BOTH_LEGS

MEDIAN_ROW = re.compile(r"^\| (\w+) \| ([\d.]+) \| (\d+) \|$", re.MULTILINE)


def test_every_variant_answers_its_calls_and_is_reported():
    result, output = run_bench("handoff", "--count", "2000", "--rounds", "1", timeout=120)
    assert result.returncode == 0, output
    medians = {row[1]: (float(row[2]), int(row[3])) for row in MEDIAN_ROW.finditer(result.stdout)}
    assert set(medians) == {"twisted", "workers", "asgiref", "in_worker"}, output
    assert all(cpu > 0 and rate > 0 for cpu, rate in medians.values()), output
