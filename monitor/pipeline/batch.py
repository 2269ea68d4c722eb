"""One batch as it goes through the stages: its messages, the connection whose
transaction writes it, and what each stage found for the next ones and for after the
commit (the rule state and watermarks it computed are applied only once it commits)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from monitor.domain import DeviceEvent, Fix, Rejection
from monitor.ingest.codec import Upload
from monitor.ingest.subscriber import Message
from monitor.pipeline.state import DeviceInfo, PartitionState
from monitor.rules.engine import AlertChange, Debounce, ProximityState, SubjectState
from monitor.rules.plausibility import DeviceCheck
from monitor.rules.transitions import Transition
from monitor.rules.watermark import Gap, Watermark

__all__ = ["Batch", "Config", "Conn", "Item", "Key"]

Conn = AsyncConnection[DictRow]
Key = tuple[str, int | None, datetime]  # (device_id, seq, t): one stored record


@dataclass(frozen=True, slots=True)
class Config:
    """What the stages need of the settings."""

    debounce: Debounce
    gap_timeout: timedelta
    severity: Mapping[str, str] = field(default_factory=dict)  # per kind, overriding


@dataclass
class Item:
    """A message on its way: the device it came from, once known, and its content."""

    msg: Message
    channel: str  # "up", "state" or "owntracks"
    device: DeviceInfo | None = None
    upload: Upload | None = None


@dataclass
class Batch:
    messages: list[Message]
    conn: Conn
    state: PartitionState
    config: Config
    now: datetime
    # The fencing epoch of each partition the messages belong to (cluster mode).
    epochs: dict[int, int] = field(default_factory=dict)
    # A monotonic clock (the update throttle) and an id source, passed in for tests.
    monotonic: Callable[[], float] = field(default=lambda: 0.0)
    new_id: Callable[[], str] = field(default=lambda: "")
    # identify → verify → decode
    items: list[Item] = field(default_factory=list)
    # decode → dedupe → store
    fixes: list[tuple[Fix, str | None]] = field(default_factory=list)
    events: list[tuple[DeviceEvent, str | None]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    accounted: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    uploaded: set[str] = field(default_factory=set)  # devices owed an ack
    integrity: list[tuple[str, str, Rejection]] = field(default_factory=list)
    # No fix could be stored already: every seq is above its device's watermark and
    # not among those accounted above it (a seq at or below may be a late record that a
    # data gap skipped, or a resend; a fix without seq is matched by time alone).
    fresh: bool = True
    # store
    new_fixes: set[Key] = field(default_factory=set)
    new_events: set[Key] = field(default_factory=set)
    # watermark
    watermarks: dict[str, Watermark] = field(default_factory=dict)
    gaps: dict[str, list[Gap]] = field(default_factory=dict)
    # judge
    fixes_by_subject: dict[str, list[Fix]] = field(default_factory=dict)
    warm: dict[str, SubjectState] = field(default_factory=dict)
    states: dict[str, SubjectState] = field(default_factory=dict)
    inside: dict[str, dict[str, bool]] = field(default_factory=dict)
    moves: list[tuple[str, Transition]] = field(default_factory=list)
    changes: list[AlertChange] = field(default_factory=list)
    # proximity, plausibility, episodes
    proximity: dict[str, ProximityState] = field(default_factory=dict)
    checks: dict[str, DeviceCheck] = field(default_factory=dict)
    episode_alerts: dict[str, str] = field(default_factory=dict)
    # what the counters of /metrics add once it commits
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def reject(self, msg: Message, reason: str, device_id: str | None) -> Rejection:
        self.counters["messages_refused"] += 1
        rejection = Rejection(msg.topic, reason, msg.payload, msg.received_at, device_id=device_id)
        self.rejections.append(rejection)
        return rejection
