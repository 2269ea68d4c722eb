"""The ingesting process's long-lived heap and Python's cyclic garbage collector.

The process holds rule state for every subject it has met (100,000 in the benchmark,
millions of objects), replaced piece by piece as fixes arrive. Left to its defaults,
the collector scans the whole old generation whenever a quarter of it is new. At 10,000
fixes/s that was a full collection every 2-5 s, each a pause of 100-570 ms (13 s of a
330-s run, measured), and those pauses were most of the tail of fix-to-operator
latency. Those 66 full collections freed nothing: the state is acyclic and reference
counting frees it.

So the young generations are collected as usual, though less often (at Python's
default of one every 700 allocations, their pauses took 5.7 % of the loop's time at
10,000 fixes/s), and automatic full collections are off. Between batches, `settle`
freezes what survived the young generations, at most once a `freeze_every_s`, which
takes it out of every later scan (`gc.freeze`). A full collection over everything,
frozen objects included, runs once every `full_every_s` as a safety net for cycles that
do form. It pauses the process as long as a default full collection did, but once in
hours, not every few seconds.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import MutableMapping
from typing import Any

__all__ = ["Heap"]

log = logging.getLogger(__name__)

# A generation-2 threshold never reached: the collector counts one per young
# collection of generation 1, a few per second here.
_NEVER = 2**30


class Heap:
    """The collector's policy for one process. `now` is monotonic seconds, passed in."""

    def __init__(
        self,
        now: float,
        *,
        young: int | None = None,
        freeze_every_s: float = 60.0,
        full_every_s: float = 6 * 3600.0,
        counters: MutableMapping[str, int] | None = None,
    ) -> None:
        """`young`: the allocations that start a young collection (Python's default,
        700, when None). `counters` gets `gc_collections` and `gc_pause_us`, every
        collection's count and time, for /metrics."""
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s
        self._frozen_at = now
        self._full_at = now
        self.freezes = 0
        self.full_collections = 0
        self.counters: MutableMapping[str, int] = counters if counters is not None else {}
        self._started = 0.0
        self._previous = gc.get_threshold()
        young = self._previous[0] if young is None else young
        gc.set_threshold(young, self._previous[1], _NEVER)
        gc.callbacks.append(self._timed)

    def close(self) -> None:
        """Give the collector its previous thresholds and every frozen object back."""
        gc.callbacks.remove(self._timed)
        gc.set_threshold(*self._previous)
        gc.unfreeze()

    def _timed(self, phase: str, _info: dict[str, Any]) -> None:
        # Collections pause the event loop: their time is part of every batch's.
        if phase == "start":
            self._started = time.perf_counter()
            return
        counters = self.counters
        counters["gc_collections"] = counters.get("gc_collections", 0) + 1
        counters["gc_pause_us"] = counters.get("gc_pause_us", 0) + round(
            (time.perf_counter() - self._started) * 1e6
        )

    def settle(self, now: float, *, grown: bool = False) -> None:
        """Between batches, when nothing is held half-changed. `grown`: the batch met
        subjects for the first time. Their state stays for the life of the process, so
        it is frozen at once rather than at the next minute: while 100,000 subjects are
        first met, that is what keeps young collections short."""
        if now - self._full_at >= self.full_every_s:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self._full_at = self._frozen_at = now
            self.full_collections += 1
            log.info(
                "full garbage collection: %d unreachable objects in %.0f ms",
                found,
                (time.perf_counter() - started) * 1000,
            )
        elif grown or now - self._frozen_at >= self.freeze_every_s:
            gc.collect(1)
            gc.freeze()
            self._frozen_at = now
            self.freezes += 1
