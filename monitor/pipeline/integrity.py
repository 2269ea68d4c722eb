"""Stage 13: forged or unsigned uploads from signed devices. One open integrity alert
per device: further refusals add to it (a count, the last reason) rather than flooding
the operators; each is kept in rejected_messages all the same."""

from __future__ import annotations

from monitor.domain import AlertKind, Severity, iso
from monitor.pipeline import alerts
from monitor.pipeline.batch import Batch
from monitor.store import alerts as alert_store

__all__ = ["run"]


async def run(b: Batch) -> None:
    for device_id, fault, rejection in b.integrity:
        device = b.state.devices[device_id]
        found = await alert_store.open_integrity(b.conn, device_id)
        if found is not None:
            alert_id, count = found
            await alert_store.record_change(
                b.conn,
                alert_id,
                "updated",
                None,
                detail_patch={
                    "count": count + 1,
                    "last_reason": fault,
                    "last_received_at": iso(rejection.received_at),
                },
            )
            continue
        await alerts.open_one(
            b.conn,
            b.config.severity,
            alert_store.NewAlert(
                subject_id=device.subject_at(rejection.received_at),
                device_id=device_id,
                kind=AlertKind.INTEGRITY.value,
                severity=Severity.CRITICAL.value,
                rule_key="integrity",
                zone_id=None,
                fix_time=None,
                received_at=rejection.received_at,
                lat=None,
                lon=None,
                detail={"reason": fault, "topic": rejection.topic, "count": 1},
            ),
        )
