"""Stage 12: device events. A command's answer (`cmd_result`) completes its command
(and a confirmed `set_interval` changes the device's intervals); a phone's status with
risky settings raises a warning that a later clean status clears; the other kinds open
or clear their device condition (tamper, battery, no fix, jamming, SOS: `rules.events`)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from monitor.domain import AlertKind, DeviceEvent, iso
from monitor.pipeline import alerts
from monitor.pipeline.batch import Batch
from monitor.rules.alerting import Condition
from monitor.rules.events import judge as judge_event
from monitor.store import commands as command_store
from monitor.store import devices as device_store

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(b: Batch) -> None:
    found: list[Condition] = []
    for event, subject in b.events:
        if (event.device_id, event.seq, event.t) not in b.new_events:
            continue
        if event.kind == "cmd_result" and event.detail is not None:
            # Conditions found so far go first, in the order they came.
            await alerts.conditions(b.conn, b.config.severity, found, b.now)
            found = []
            await _answered(b, event)
        if subject is None:
            continue
        if event.kind == "phone_status" and event.detail is not None:
            warnings = list(event.detail.get("warnings") or [])
            found.append(
                Condition(
                    subject,
                    event.device_id,
                    AlertKind.PHONE_STATUS,
                    clears=not warnings,
                    at=event.t,
                    info={"warnings": warnings}
                    if warnings
                    else {"reason": "phone settings restored"},
                    received_at=event.received_at,
                    positioned=False,
                )
            )
            continue
        outcome = judge_event(event)
        if outcome is None:
            continue
        found.append(
            Condition(
                subject,
                event.device_id,
                outcome.kind,
                clears=outcome.clears,
                at=event.t,
                info={
                    "event": event.kind,
                    "event_seq": event.seq,
                    "event_t": iso(event.t),
                    "reason": outcome.reason,
                    "late": event.received_at - event.t > timedelta(minutes=5),
                },
                received_at=event.received_at,
            )
        )
    await alerts.conditions(b.conn, b.config.severity, found, b.now)


async def _answered(b: Batch, event: DeviceEvent) -> None:
    assert event.detail is not None
    row = await command_store.answer(
        b.conn,
        event.device_id,
        str(event.detail["id"]),
        bool(event.detail.get("ok")),
        event.t,
        event.detail,
    )
    if row is None:
        log.info("cmd_result for an unknown command %r of %s", event.detail["id"], event.device_id)
        return
    if row["cmd"] == "set_interval" and row["state"] == "ok" and row["args"]:
        fix_s, upload_s = row["args"].get("fix_s"), row["args"].get("upload_s")
        await device_store.set_intervals(b.conn, event.device_id, fix_s, upload_s)
        known = b.state.devices.get(event.device_id)
        if known is not None:
            b.state.devices[event.device_id] = replace(
                known,
                fix_interval_s=float(fix_s or known.fix_interval_s),
                upload_interval_s=float(upload_s or known.upload_interval_s),
            )
