"""Stage 10: impossible speeds and fix times ahead of receipt, flagged (spoofing
suspected, a device condition), never dropped. A device met for the first time since a
start or a takeover is still flagged when its spoofing alert is open, so it gets its
clear."""

from __future__ import annotations

from typing import Any

from monitor.domain import AlertKind, iso
from monitor.pipeline import alerts
from monitor.pipeline.batch import Batch
from monitor.rules.alerting import Condition
from monitor.rules.plausibility import DeviceCheck
from monitor.rules.plausibility import judge as judge_plausibility
from monitor.store import alerts as alert_store

__all__ = ["run"]


async def run(b: Batch) -> None:
    fixes = [f for fs in b.fixes_by_subject.values() for f in fs]
    if not fixes:
        return
    state = b.state
    devices = {f.device_id for f in fixes}
    cold = sorted(d for d in devices if d not in state.checks)
    flagged = (
        await alert_store.open_conditions(b.conn, cold, [AlertKind.SPOOFING.value])
        if cold
        else set()
    )
    checks = {
        d: state.checks.get(d) or DeviceCheck(flagged=(d, AlertKind.SPOOFING.value) in flagged)
        for d in devices
    }
    updated, outcomes = judge_plausibility(checks, fixes)
    found: list[Condition] = []
    for outcome in outcomes:
        device = state.devices.get(outcome.device_id)
        info: dict[str, Any] = {
            "reason": outcome.reason,
            "fix_t": iso(outcome.fix.t),
            "seq": outcome.fix.seq,
            "lat": outcome.fix.lat,
            "lon": outcome.fix.lon,
        }
        flag = outcome.flag
        if flag is not None:
            info["problem"] = flag.problem.value
            if flag.speed_m_s is not None:
                info["speed_m_s"] = round(flag.speed_m_s, 1)
            if flag.ahead_s is not None:
                info["ahead_s"] = round(flag.ahead_s, 1)
        found.append(
            Condition(
                device.subject_at(outcome.fix.t) if device else None,
                outcome.device_id,
                AlertKind.SPOOFING,
                outcome.clears,
                outcome.fix.t,
                info,
            )
        )
    await alerts.conditions(b.conn, b.config.severity, found, b.now)
    b.checks = dict(updated)
