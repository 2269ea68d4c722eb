"""The collector's policy in the ingesting process: young generations as usual, no
automatic full collections, survivors frozen out of the scans between batches, and a
rare full collection that still frees cycles among frozen objects."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from monitor.heap import Heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def heap() -> Iterator[Heap]:
    before = gc.get_threshold()
    h = Heap(0.0, freeze_every_s=60.0, full_every_s=3600.0)
    yield h
    h.close()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_automatic_full_collections_are_off_young_ones_are_not(heap: Heap) -> None:
    young, middle, old = gc.get_threshold()
    assert young > 0
    assert middle > 0
    assert old >= 2**30


def test_survivors_are_frozen_at_most_once_a_minute_or_when_subjects_were_met(
    heap: Heap,
) -> None:
    heap.settle(30.0)
    assert heap.freezes == 0
    heap.settle(61.0)
    assert heap.freezes == 1
    assert gc.get_freeze_count() > 0
    heap.settle(70.0)
    assert heap.freezes == 1
    heap.settle(71.0, grown=True)
    assert heap.freezes == 2
    assert heap.full_collections == 0


def test_a_cycle_frozen_by_mistake_is_freed_by_the_rare_full_collection(heap: Heap) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    heap.settle(61.0)  # frozen while still in use
    del a, b
    gc.collect()
    assert gone() is not None  # out of every scan, as intended for live state
    heap.settle(3600.0)
    assert heap.full_collections == 1
    assert gone() is None


def test_every_collection_is_counted_and_timed_and_the_young_threshold_is_set() -> None:
    before = gc.get_threshold()
    counters: dict[str, int] = {}
    h = Heap(0.0, young=5000, counters=counters)
    try:
        assert gc.get_threshold()[0] == 5000
        gc.collect(0)
        gc.collect(1)
        assert counters["gc_collections"] >= 2
        assert counters["gc_pause_us"] >= 0
    finally:
        h.close()
    seen = counters["gc_collections"]
    gc.collect(0)
    assert counters["gc_collections"] == seen  # no longer hooked once closed
    assert gc.get_threshold() == before
