"""Writing alerts, for every stage that opens or changes them: opened with the severity
configured for their kind and the mark of a planned suspension covering their time
(`rules.alerting`), and device conditions opened, added to or cleared in a few
statements for many devices (a silent fleet opens 100,000 at once)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from monitor.pipeline.batch import Conn
from monitor.rules.alerting import Condition, opening_severity, plan_conditions, suspended
from monitor.store import alerts as alert_store
from monitor.store import subjects as subject_store

__all__ = ["conditions", "open_many", "open_one"]


async def open_many(
    conn: Conn, severity: Mapping[str, str], alerts: list[tuple[str, alert_store.NewAlert]]
) -> list[dict[str, Any]]:
    """Open alerts (each with the id drawn for it)."""
    if not alerts:
        return []
    covering = await subject_store.suspensions_covering(
        conn, [(a.subject_id, a.fix_time or a.received_at) for _, a in alerts]
    )
    return await alert_store.insert_many(
        conn,
        [
            (
                alert_id,
                replace(
                    alert,
                    severity=opening_severity(alert.kind, alert.severity, severity),
                    detail=suspended(alert.detail, covering.get(i)),
                ),
            )
            for i, (alert_id, alert) in enumerate(alerts)
        ],
    )


async def open_one(
    conn: Conn, severity: Mapping[str, str], alert: alert_store.NewAlert
) -> dict[str, Any]:
    return (await open_many(conn, severity, [(str(uuid.uuid4()), alert)]))[0]


async def conditions(
    conn: Conn, severity: Mapping[str, str], items: list[Condition], now: datetime
) -> None:
    """Device conditions, in order: each opens its device's alert of its kind, adds to
    the open one (`detail.last`), or clears it."""
    if not items:
        return
    stored = await alert_store.open_condition_alerts(
        conn, [(c.kind.value, c.device_id, c.subject) for c in items]
    )
    opens, amends = plan_conditions(items, stored, lambda: str(uuid.uuid4()))
    await open_many(
        conn,
        severity,
        [
            (
                alert_id,
                alert_store.NewAlert(
                    subject_id=c.subject,
                    device_id=c.device_id,
                    kind=c.kind.value,
                    severity=c.opening_severity.value,
                    rule_key=c.kind.value,
                    zone_id=None,
                    fix_time=c.at if c.positioned else None,
                    received_at=c.received_at or now,
                    lat=c.info.get("lat"),
                    lon=c.info.get("lon"),
                    detail=c.info,
                ),
            )
            for alert_id, c in opens
        ],
    )
    await alert_store.amend_many(
        conn,
        [
            alert_store.Amendment(a.alert_id, a.event, a.patch, cleared_at=a.cleared_at)
            for a in amends
        ],
    )
