"""``bench.messaging`` still runs and delivers every message of its throughput runs (embedded mode).

A "scripts do not rot" check, not a timed assertion (figures: bench/RESULTS.md). 1,200 messages each way are
more than the server lets a session have waiting to be routed (``session_queue_stanzas``, 1,000): the bench
must keep fewer in flight, or the server ends the sending session with policy-violation, as it did to the
unwindowed bench of 2,000 messages in a burst.
"""

from __future__ import annotations

import re

from tests.processes import SAME_ON_BOTH_LEGS, run_bench

pytestmark = SAME_ON_BOTH_LEGS

THROUGHPUT = re.compile(
    r"^throughput (TCP -> WebSocket|WebSocket -> TCP): (\d+)/(\d+) messages", re.MULTILINE
)


def test_embedded_messaging_delivers_every_message_both_ways():
    result, output = run_bench(
        "messaging", "--mode", "embedded", "--round-trips", "5", "--messages", "1200", timeout=300
    )
    assert result.returncode == 0, output
    runs = {match[1]: (int(match[2]), int(match[3])) for match in THROUGHPUT.finditer(result.stdout)}
    assert runs == {"TCP -> WebSocket": (1200, 1200), "WebSocket -> TCP": (1200, 1200)}, output
