"""Stage 1: in cluster mode, this process still holds the batch's partitions.

First in the transaction: the epochs are checked under FOR SHARE, so a new owner's
claim waits for this transaction, and a process that lost its claim (paused, cut off)
writes nothing: `claims.Fenced` rolls the batch back."""

from __future__ import annotations

from monitor.pipeline.batch import Batch
from monitor.store import claims

__all__ = ["run"]


async def run(b: Batch) -> None:
    await claims.fence(b.conn, b.epochs)
