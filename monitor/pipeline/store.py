"""Stage 6: the batch's fixes, events and refusals written (COPY), and which of them
were new: only those are judged, observed and counted."""

from __future__ import annotations

from monitor.pipeline.batch import Batch
from monitor.store import positions

__all__ = ["run"]


async def run(b: Batch) -> None:
    b.new_fixes = await positions.insert_fixes(b.conn, b.fixes, fresh=b.fresh)
    b.new_events = await positions.insert_events(b.conn, b.events)
    await positions.insert_rejections(b.conn, b.rejections)
