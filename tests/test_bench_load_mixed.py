"""``bench.load_mixed --quick`` (issue 16 §6): logins over STARTTLS, direct TLS, wss and BOSH at once, idle
sessions held, a message storm between random pairs, on one ``runxmpp``: every login binds, every session
stays up, every message arrives exactly once where it was sent, and the server logs no error.

The bench counts end to end (message ids sent against ids received); nothing here asserts a time (figures:
bench/RESULTS.md). On the PostgreSQL leg the bench uses a scratch database next to DATABASE_URL's and the
Redis of REDIS_URL with a ``runworker`` of its own, as production does.
"""

from __future__ import annotations

import re

from tests.processes import run_bench

RESULT = re.compile(
    r"^RESULT logins=(\d+)/(\d+) idle=(\d+)/(\d+) alive=(\d+) sent=(\d+) received=(\d+) lost=(\d+) "
    r"errors=(\d+)$",
    re.MULTILINE,
)


def test_quick_mixed_load_loses_nothing_and_counts_no_error():
    result, output = run_bench("load_mixed", "--quick", timeout=600)
    found = RESULT.search(result.stdout)
    assert found is not None, output
    logins, asked, idle, idle_asked, alive, sent, received, lost, errors = map(int, found.groups())
    assert (logins, asked) == (48, 48), output
    assert (idle, idle_asked, alive) == (200, 200, 200), output
    assert (sent, received, lost) == (500, 500, 0), output
    assert errors == 0, output
    assert result.returncode == 0, output
