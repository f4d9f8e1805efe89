"""``bench.messaging`` still runs and delivers every message of its throughput runs (embedded mode).

A "scripts do not rot" check, not a timed assertion (figures: bench/RESULTS.md). 1,200 messages each way are
more than the server lets a session have waiting to be routed (``session_queue_stanzas``, 1,000): the bench
must keep fewer in flight, or the server ends the sending session with policy-violation, as it did to the
unwindowed bench of 2,000 messages in a burst.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.processes import SAME_ON_BOTH_LEGS

pytestmark = SAME_ON_BOTH_LEGS

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT = re.compile(
    r"^throughput (TCP -> WebSocket|WebSocket -> TCP): (\d+)/(\d+) messages", re.MULTILINE
)


def test_embedded_messaging_delivers_every_message_both_ways():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.messaging",
            "--mode",
            "embedded",
            "--round-trips",
            "5",
            "--messages",
            "1200",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout[-4000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    runs = {match[1]: (int(match[2]), int(match[3])) for match in THROUGHPUT.finditer(result.stdout)}
    assert runs == {"TCP -> WebSocket": (1200, 1200), "WebSocket -> TCP": (1200, 1200)}, output
