"""Stage 11: the batch's judged changes become alerts. One violation episode is one
alert: its first change opens it (unless a restart or a rule change judged its fixes
again, and it exists already), later ones update it (at most once per
`alerting.UPDATE_EVERY_S`) or clear it. What is written is decided in `rules.alerting`;
the alerts are written together, opened first, in a few statements."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from monitor.domain import Fix, iso
from monitor.pipeline import alerts
from monitor.pipeline.batch import Batch, Conn
from monitor.pipeline.state import PartitionState
from monitor.rules.alerting import coalesce
from monitor.rules.engine import AlertChange, Change, Episode
from monitor.store import alerts as alert_store

__all__ = ["apply", "run"]

log = logging.getLogger(__name__)


async def run(b: Batch) -> None:
    b.episode_alerts = await apply(b, b.changes)


async def apply(b: Batch, changes: list[AlertChange]) -> dict[str, str]:
    """Write `changes`; the alerts opened, by episode key."""
    state = b.state
    conn = b.conn
    opened: dict[str, str] = {}
    to_open: list[tuple[str, alert_store.NewAlert]] = []
    to_amend: list[alert_store.Amendment] = []
    updates: list[tuple[str, AlertChange, dict[str, Any]]] = []
    now = b.monotonic()
    absent = await _absent(conn, state, [c for c in changes if c.change is Change.OPEN])
    for planned in coalesce(changes):
        c, detail = planned.change, planned.detail
        ep = c.episode
        if c.change is Change.OPEN and (
            ep.key in opened
            or (ep.key not in absent and await _alert_of(conn, state, c) is not None)
        ):
            # Already alerted (a rule change judged fixes again, or a restart replayed
            # them, or opened earlier in this batch): one episode is one alert, so this
            # is an update.
            c = replace(c, change=Change.UPDATE)
        if c.change is Change.OPEN:
            # The id is drawn here, so that later changes in this batch can name it.
            new_id = b.new_id()
            to_open.append(
                (
                    new_id,
                    _new_alert(c, ep.first, detail),
                )
            )
            opened[ep.key] = new_id
            continue
        alert_id = opened.get(ep.key) or await _find(conn, state, c.subject_id, ep)
        if alert_id is None:
            log.warning("no alert found for episode %s (%s)", ep.key, c.change)
            continue
        if c.change is Change.UPDATE:
            updates.append((alert_id, c, detail))
            continue
        to_amend.append(
            alert_store.Amendment(
                alert_id,
                "cleared",
                {**detail, "cleared_at": iso(c.fix.t), "clear_reason": c.reason},
                cleared_at=c.fix.t,
            )
        )
    # A resolved alert is never changed again by fixes: when the violation goes on after
    # an officer resolved its alert, the next violating fix opens a new alert, which the
    # episode's later changes go to (contract, "How rules become alerts").
    resolved = await alert_store.resolved_among(conn, sorted({a for a, _c, _d in updates}))
    for alert_id, c, detail in updates:
        ep = c.episode
        if alert_id in resolved and ep.key not in opened:
            new_id = b.new_id()
            to_open.append(
                (
                    new_id,
                    _new_alert(c, c.fix, {**detail, "after_resolved": alert_id}),
                )
            )
            opened[ep.key] = new_id
        elif alert_id not in resolved and state.throttle.due(alert_id, now):
            to_amend.append(alert_store.Amendment(alert_id, "updated", detail))
    # Opened first (an alert opened and cleared in one batch is changed after it
    # exists). An alert an officer resolved is left as resolved.
    await alerts.open_many(conn, b.config.severity, to_open)
    await alert_store.amend_many(conn, to_amend)
    return opened


def _new_alert(c: AlertChange, first: Fix, detail: dict[str, Any]) -> alert_store.NewAlert:
    """The alert an episode opens, placed at `first`: its first violating fix, or the
    first one after an officer resolved its earlier alert."""
    rule = c.episode.rule
    return alert_store.NewAlert(
        subject_id=c.subject_id,
        device_id=first.device_id,
        kind=rule.kind.value,
        severity=rule.severity.value,
        rule_key=rule.key,
        zone_id=rule.zone_id,
        fix_time=first.t,
        received_at=first.received_at,
        lat=first.lat,
        lon=first.lon,
        detail=detail,
    )


async def _absent(conn: Conn, state: PartitionState, opening: list[AlertChange]) -> set[str]:
    """Of the episodes about to open, those surely without an alert (one may exist after
    a restart or a rule change judged fixes again), in one query for the batch. Those
    found join the known episode alerts."""
    unknown = [c for c in opening if c.episode.key not in state.episode_alerts]
    if not unknown:
        return set()
    found = await alert_store.episodes_alerted(
        conn, [(c.subject_id, c.episode.rule.key, c.episode.key) for c in unknown]
    )
    state.episode_alerts.update(found)
    return {c.episode.key for c in unknown} - set(found)


async def _alert_of(conn: Conn, state: PartitionState, c: AlertChange) -> str | None:
    known = state.episode_alerts.get(c.episode.key)
    if known is not None:
        return known
    return await alert_store.alert_of_episode(conn, c.subject_id, c.episode.rule.key, c.episode.key)


async def _find(conn: Conn, state: PartitionState, subject_id: str, episode: Episode) -> str | None:
    for key in (episode.key, episode.supersedes):
        known = state.episode_alerts.get(key) if key else None
        if known is not None:
            return known
    old = episode.supersedes or episode.key
    return await alert_store.episode_or_open_alert(
        conn, subject_id, episode.rule.key, episode.key, old
    )
