"""Stage 7: each device's `ack` watermark after the batch, written with it, and the data
gaps of sequence holes open too long (an event and an alert each).

The watermarks are tentative until the commit (`Batch.watermarks`): a batch that fails
is tried again from the watermarks it started with."""

from __future__ import annotations

import logging
from datetime import datetime

from monitor.domain import DEFAULT_SEVERITY, AlertKind, DeviceEvent, iso
from monitor.pipeline import alerts
from monitor.pipeline.batch import Batch, Config, Conn
from monitor.pipeline.state import PartitionState
from monitor.rules.watermark import Gap
from monitor.store import alerts as alert_store
from monitor.store import positions

__all__ = ["record_gaps", "run"]

log = logging.getLogger(__name__)


async def run(b: Batch) -> None:
    for device_id, seqs in b.accounted.items():
        wm = b.state.watermarks[device_id].copy()
        wm.account(seqs, b.now)
        b.gaps[device_id] = wm.expire(b.now, b.config.gap_timeout)
        b.watermarks[device_id] = wm
    await positions.save_acks(b.conn, {d: w.upto for d, w in b.watermarks.items()})
    await record_gaps(b.conn, b.state, b.config, b.gaps, b.now)


async def record_gaps(
    conn: Conn,
    state: PartitionState,
    config: Config,
    gaps: dict[str, list[Gap]],
    now: datetime,
) -> None:
    """A hole in a device's seq open past the gap timeout: a data_gap event and alert
    (the watermark moves past it)."""
    for device_id, found in gaps.items():
        device = state.devices.get(device_id)
        for gap in found:
            log.warning("data gap on %s: seq %d..%d", device_id, gap.first_seq, gap.last_seq)
            subject = device.subject_at(now) if device else None
            detail = {
                "first_seq": gap.first_seq,
                "last_seq": gap.last_seq,
                "opened_at": iso(gap.opened_at),
            }
            await positions.insert_events(
                conn, [(DeviceEvent(device_id, None, now, "data_gap", now, detail), subject)]
            )
            await alerts.open_one(
                conn,
                config.severity,
                alert_store.NewAlert(
                    subject_id=subject,
                    device_id=device_id,
                    kind=AlertKind.DATA_GAP.value,
                    severity=DEFAULT_SEVERITY[AlertKind.DATA_GAP].value,
                    rule_key="data_gap",
                    zone_id=None,
                    fix_time=None,
                    received_at=now,
                    lat=None,
                    lon=None,
                    detail=detail,
                ),
            )
