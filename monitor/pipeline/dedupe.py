"""Stage 5: each `(device_id, seq)` once.

Seqs above a device's watermark are known exactly (the accounted set): those already
stored are skipped without a lookup. A seq at or below it (a resend of an acknowledged
record, perhaps with another `t`, or a late record a data gap skipped) is looked up in
the store, and a seq given twice in the batch is taken once. Every seq of an upload is
accounted for the device's `ack`, refused records included (the device stops resending
them). The watermarks of devices this process has not met yet are read in two queries
for the whole batch (after a restart or a takeover, every device is new at once)."""

from __future__ import annotations

import logging
from collections import defaultdict

from monitor.domain import DeviceEvent, Fix, Rejection
from monitor.pipeline.batch import Batch
from monitor.rules.watermark import Watermark
from monitor.store import positions

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(b: Batch) -> None:
    await _warm(b)
    state = b.state
    for item in b.items:
        upload, device = item.upload, item.device
        if upload is None or device is None:
            continue
        wm = state.watermarks[device.device_id]
        for f in upload.fixes:
            if f.seq is None or f.seq not in wm.above:
                b.fixes.append((f, device.subject_at(f.t)))
                if f.seq is None or f.seq <= wm.upto:
                    b.fresh = False
        for e in upload.events:
            if e.seq is None or e.seq not in wm.above:
                b.events.append((e, device.subject_at(e.t)))
        b.rejections.extend(r for r in upload.rejections if r.seq not in wm.above)
        for r in upload.rejections:
            log.info("refused a record of %s: %s", device.device_id, r.reason)
        b.accounted[device.device_id].update(upload.seqs)
        b.uploaded.add(device.device_id)
    await _drop_stored(b)


async def _warm(b: Batch) -> None:
    state = b.state
    cold = {
        item.device.device_id
        for item in b.items
        if item.upload is not None
        and item.device is not None
        and item.device.device_id not in state.watermarks
    }
    if not cold:
        return
    acks = await positions.load_acks(b.conn, sorted(cold))
    above = await positions.accounted_seqs_many(b.conn, {d: acks.get(d, 0) for d in cold})
    warmed: dict[str, Watermark] = {}
    for device_id in cold:
        warmed[device_id] = wm = Watermark(acks.get(device_id, 0))
        wm.account(above[device_id], b.now)
    state.keep_watermarks(warmed)


async def _drop_stored(b: Batch) -> None:
    maybe: dict[str, list[int]] = defaultdict(list)
    records: list[DeviceEvent | Fix | Rejection] = [
        *(f for f, _ in b.fixes),
        *(e for e, _ in b.events),
        *b.rejections,
    ]
    for r in records:
        if r.seq is None or r.device_id is None:
            continue
        wm = b.state.watermarks.get(r.device_id)
        if wm is not None and r.seq <= wm.upto:
            maybe[r.device_id].append(r.seq)
    stored = await positions.stored_seqs(b.conn, maybe) if maybe else set()
    seen: set[tuple[str, int]] = set()

    def first_time(device_id: str | None, seq: int | None) -> bool:
        if seq is None or device_id is None:
            return True
        key = (device_id, seq)
        if key in stored or key in seen:
            return False
        seen.add(key)
        return True

    b.fixes = [(f, s) for f, s in b.fixes if first_time(f.device_id, f.seq)]
    b.events = [(e, s) for e, s in b.events if first_time(e.device_id, e.seq)]
    b.rejections = [r for r in b.rejections if first_time(r.device_id, r.seq)]
