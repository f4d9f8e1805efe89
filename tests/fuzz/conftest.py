"""Hypothesis profiles for the fuzz targets (issue 16 §5).

``ci`` (the default, what ``make test`` runs): a few hundred inputs per target, seconds in all. ``nightly``
(``make fuzz``, or ``HYPOTHESIS_PROFILE=nightly``): 100,000 inputs per target, or ``FUZZ_RUNS``. No example
database is written into the checkout: every crasher found is kept as an explicit ``@example`` or a plain
test instead.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # no timed assertion: a hang is caught by harness.bounded instead
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("ci", max_examples=300, **_COMMON)
settings.register_profile("nightly", max_examples=int(os.environ.get("FUZZ_RUNS", "100000")), **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
