"""``xmppauth.gcpolicy``: what start-up made leaves the collector's way; cycles made later are still found."""

from __future__ import annotations

import gc
import weakref

import pytest

from xmppauth import gcpolicy


@pytest.fixture
def restored_collector():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref:
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def test_start_up_objects_are_frozen_and_young_collections_are_rarer(restored_collector):
    before = gc.get_freeze_count()
    gcpolicy.settle_heap_for_serving()
    assert gc.get_freeze_count() > before
    assert gc.get_threshold() == (gcpolicy.YOUNG_THRESHOLD, gcpolicy.OLDER_RATIO, gcpolicy.OLDER_RATIO)
    assert gc.get_threshold()[0] > 700  # CPython's default
    assert gc.get_count()[0] < 100  # what start-up made is out of the generations' counts


def test_a_cycle_made_after_settling_is_still_collected(restored_collector):
    gcpolicy.settle_heap_for_serving()
    ref = _cycle()
    assert ref() is not None  # only the collector frees a cycle
    gc.collect()
    assert ref() is None


def test_a_cycle_of_start_up_stays_out_of_collections(restored_collector):
    ref = _cycle()
    gcpolicy.settle_heap_for_serving()  # its collect() frees the garbage cycle before freezing
    assert ref() is None
    kept = _Node()
    kept.other = kept
    kept_ref = weakref.ref(kept)
    gcpolicy.settle_heap_for_serving()
    del kept
    gc.collect()
    assert kept_ref() is not None  # frozen: left to the process's lifetime, as the module says
