"""The acknowledgement watermark of one device: which seqs are accounted for.

A record is accounted for once it is stored, refused with a reason, or declared part of
a data gap. `upto` is the largest N such that every seq <= N is accounted for; that is
what the backend acknowledges. A hole (a missing seq below one already received) that
stays open for the gap timeout becomes a data gap, and the watermark moves past it.
Pure: the caller passes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["Gap", "Watermark"]


@dataclass(frozen=True, slots=True)
class Gap:
    first_seq: int
    last_seq: int
    opened_at: datetime  # when the hole was first seen


@dataclass(slots=True)
class Watermark:
    upto: int = 0
    above: set[int] = field(default_factory=set)
    hole_since: datetime | None = None

    def _advance(self) -> None:
        while self.upto + 1 in self.above:
            self.upto += 1
            self.above.discard(self.upto)
        # Anything at or below the watermark is already accounted for.
        self.above = {s for s in self.above if s > self.upto}

    def account(self, seqs: list[int] | set[int], now: datetime) -> None:
        before = self.upto
        self.above.update(s for s in seqs if s > self.upto)
        self._advance()
        if not self.above:
            self.hole_since = None
        elif self.hole_since is None or self.upto != before:
            # A new hole, or the old one filled and a later one is now the first: the
            # time it was first seen is not kept, so it gets a full timeout from now
            # (a gap declared late, never early).
            self.hole_since = now

    def expire(self, now: datetime, timeout: timedelta) -> list[Gap]:
        """Declare holes open longer than `timeout` as gaps and move past them."""
        if not self.above or self.hole_since is None or now - self.hole_since < timeout:
            return []
        nxt = min(self.above)
        gap = Gap(self.upto + 1, nxt - 1, self.hole_since)
        self.upto = nxt - 1
        self._advance()
        # A further hole may have opened later than this one: it gets a full timeout of
        # its own from now rather than being declared early.
        self.hole_since = now if self.above else None
        return [gap]

    def copy(self) -> Watermark:
        return Watermark(self.upto, set(self.above), self.hole_since)
