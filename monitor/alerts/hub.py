"""The alert hub: every committed alert event, pushed to every client that may see it.

The hub learns that events were committed (`notify`, fed by PostgreSQL's NOTIFY, which
is delivered at commit in commit order) and reads them back in `event_id` order through
the `fetch_after` function it was given, so it works the same whichever process
committed the change. The publisher never waits for a client: each subscription has a
bounded queue, and a client that lets it fill up is cut off with a reason; it resumes
from the last event id it saw, losing nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AlertEvent", "Hub", "Subscription"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    event_id: int
    subject_id: str | None
    alert: dict[str, Any]  # the alert as of this change, as the API shows it
    # The websocket message, encoded once for every client that receives it.
    text: str = ""

    @classmethod
    def of(cls, event_id: int, alert: dict[str, Any]) -> AlertEvent:
        return cls(
            event_id,
            alert.get("subject_id"),
            alert,
            json.dumps({"type": "alert", "alert": alert}, separators=(",", ":")),
        )


@dataclass(eq=False)
class Subscription:
    visible: Callable[[AlertEvent], bool]
    queue: asyncio.Queue[AlertEvent]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: AlertEvent) -> None:
        if self.overflowed.is_set() or not self.visible(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()


class Hub:
    def __init__(
        self,
        fetch_after: Callable[[int], Awaitable[list[AlertEvent]]],
        queue_size: int = 2000,
    ) -> None:
        self._fetch_after = fetch_after
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self._wake = asyncio.Event()
        self.last_event_id = 0

    @property
    def clients(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, visible: Callable[[AlertEvent], bool]) -> Subscription:
        sub = Subscription(visible, asyncio.Queue(self._queue_size))
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def notify(self) -> None:
        """Something was committed (or may have been: after a reconnect)."""
        self._wake.set()

    async def run(self, start_after: int) -> None:
        self.last_event_id = start_after
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while True:
                    events = await self._fetch_after(self.last_event_id)
                    for event in events:
                        self.last_event_id = event.event_id
                        for sub in list(self._subscriptions):
                            sub.offer(event)
                    if len(events) < 1000:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading alert events failed; will retry")
                await asyncio.sleep(1)
                self._wake.set()
