"""The cyclic garbage collector's settings for the long-running server processes (issue 17).

A listener allocates many short-lived container objects per login (XML elements, events, Deferreds, frames
of the driver and the core) while a large heap made at start-up (Django, the apps, Twisted, cryptography)
lives as long as the process. With CPython's defaults (a young collection every 700 allocations, and full
collections that walk the whole start-up heap) the collector held about 7 % of a listener's CPU under
``bench.profile_login`` (``perf``: ``gc_collect_main`` and its visitors), and about 1.5 % after
:func:`settle_heap_for_serving` (figures: bench/RESULTS.md, "Stop 25").

Reference counting still frees almost everything at once; the collector only finds cycles, so collecting
the young generations less often delays the freeing of cyclic garbage by a few thousand allocations, not
the freeing of anything else.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

# Allocations (minus deallocations) of container objects between two collections of the youngest generation
# (CPython's default: 700); the older generations keep CPython's ratio of 10.
YOUNG_THRESHOLD = 10_000
OLDER_RATIO = 10


def settle_heap_for_serving() -> None:
    """Call once, when a server process has set itself up and is about to serve: what start-up made is
    collected once and then left out of every later collection (``gc.freeze``: it lives as long as the
    process anyway), and the young generation is collected every :data:`YOUNG_THRESHOLD` allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_RATIO, OLDER_RATIO)
    logger.info("garbage collector: %d start-up objects left out; young generation collected every %d "
                "allocations", gc.get_freeze_count(), YOUNG_THRESHOLD)  # fmt: skip
