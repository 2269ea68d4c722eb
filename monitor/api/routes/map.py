"""What the dashboard's map needs: subjects' last positions, zones and tracks.

Both are reads of location data: they need `X-Access-Reason` and are written to the
consultation log, like every other read of a subject's positions."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from monitor.api.deps import AccessReason, CurrentUser, RuntimeDep, require_roles, visible_subject
from monitor.domain import Status, iso
from monitor.rules.book import RuleBook, StatusOrder
from monitor.store import alerts as alert_store
from monitor.store import overview
from monitor.store import subjects as subject_store
from monitor.store import zones as zone_store

router = APIRouter(prefix="/api/v1/map", tags=["map"])

# Most severe first: the marker shows the worst unresolved alert of its subject.
_SEVERITY_RANK = {"critical": 0, "serious": 1, "warning": 2, "info": 3}
TRACK_MAX_FIXES = 10_000
HISTORY_ALERTS = 100


def _collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}


def _current_orders(
    subjects: list[dict[str, Any]], orders: list[dict[str, Any]], now: datetime
) -> dict[str, StatusOrder]:
    """The status order in force now for each subject, by the rule book's own reading of
    the orders (a later-recorded order replaces earlier ones from its effective_at on)."""
    by_subject: dict[str, list[StatusOrder]] = defaultdict(list)
    for r in orders:
        by_subject[str(r["subject_id"])].append(
            StatusOrder(
                status=Status(r["status"]),
                effective_at=r["effective_at"],
                recorded_at=r["recorded_at"],
                home=(r["home_lon"], r["home_lat"]) if r["home_lon"] is not None else None,
                radius_m=r["radius_m"],
                zone_id=str(r["zone_id"]) if r["zone_id"] is not None else None,
            )
        )
    current: dict[str, StatusOrder] = {}
    for s in subjects:
        sid = str(s["id"])
        if sid not in by_subject:
            continue
        order = RuleBook(sid, s["timezone"], statuses=tuple(by_subject[sid])).status_at(now)
        if order is not None:
            current[sid] = order
    return current


def _alert_state(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A subject's unresolved alerts in one value for the marker; None when there are none."""
    if not rows:
        return None
    worst = min(rows, key=lambda r: _SEVERITY_RANK.get(r["severity"], 9))["severity"]
    unacknowledged = sum(int(r["n"]) for r in rows if r["state"] == "open")
    worst_open = [r["severity"] for r in rows if r["state"] == "open"]
    return {
        "state": "open" if unacknowledged else "acknowledged",
        "severity": worst,
        "open_severity": (
            min(worst_open, key=lambda s: _SEVERITY_RANK.get(s, 9)) if worst_open else None
        ),
        "count": sum(int(r["n"]) for r in rows),
        "unacknowledged": unacknowledged,
    }


def _last_fix(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "lon": r["lon"],
        "lat": r["lat"],
        "t": iso(r["t"]),
        "received_at": iso(r["received_at"]),
        "acc": r["acc"],
        "src": r["src"],
        "batt": r["batt"],
        "device_id": r["device_id"],
    }


@router.get("/subjects")
async def map_subjects(
    user: CurrentUser, runtime: RuntimeDep, reason: AccessReason
) -> dict[str, Any]:
    """Every subject the user may see, with what the map draws for it.

    `{"generated_at", "subjects": [{"id", "name", "external_id", "officer", "status",
    "status_since", "alert": {"state", "severity", "open_severity", "count",
    "unacknowledged"} | null, "last_fix": {"lon", "lat", "t", "received_at", "acc", "src",
    "batt", "device_id"} | null, "zones": FeatureCollection}], "shared_zones":
    FeatureCollection}`. Zones are those in force now; a status home is a Point with
    `properties.radius_m`."""
    require_roles(user, "administrator", "operator", "officer")
    now = datetime.now(UTC)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(conn, user.username, reason, None, "map/subjects")
        subjects = await overview.subjects(conn, None if user.sees_everyone else user.username)
        ids = [str(s["id"]) for s in subjects]
        fixes = {str(r["subject_id"]): r for r in await overview.last_fixes(conn, ids)}
        orders = await overview.status_orders(conn, ids)
        zones = await overview.zones_in_force(conn, ids, now)
        shared = await overview.shared_zones(conn, now)
        alerts = await overview.alert_summary(conn, ids)
    current = _current_orders(subjects, orders, now)
    zones_by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for z in zones:
        sid = str(z["subject_id"])
        order = current.get(sid)
        # A status home is in force only while its order is the one in force.
        if z["source"] == "status" and (order is None or order.zone_id != str(z["id"])):
            continue
        zones_by[sid].append(zone_store.zone_json(z))
    alerts_by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        alerts_by[str(a["subject_id"])].append(a)
    items = []
    for s in subjects:
        sid = str(s["id"])
        order = current.get(sid)
        items.append(
            {
                "id": sid,
                "name": s["name"],
                "external_id": s["external_id"],
                "officer": s["officer"],
                "status": order.status.value if order else None,
                "status_since": iso(order.effective_at) if order else None,
                "alert": _alert_state(alerts_by.get(sid, [])),
                "last_fix": _last_fix(fixes.get(sid)),
                "zones": _collection(zones_by.get(sid, [])),
            }
        )
    return {
        "generated_at": iso(now),
        "subjects": items,
        "shared_zones": _collection([zone_store.zone_json(z) for z in shared]),
    }


@router.get("/subjects/{subject_id}/track")
async def track(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24,
) -> dict[str, Any]:
    """The subject's fixes of the last `hours` and its alert history.

    `{"subject_id", "since", "until", "truncated", "line": LineString Feature | null,
    "fixes": FeatureCollection of Points (properties t, received_at, acc, src, batt,
    device_id, seq), "alerts": [alert, newest first]}`. At most 10,000 fixes (the latest);
    `truncated` says when there were more. `line` needs two fixes at least."""
    require_roles(user, "administrator", "operator", "officer")
    await visible_subject(runtime, user, subject_id)
    until = datetime.now(UTC)
    since = until - timedelta(hours=hours)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, "map/track", since, until
        )
        rows = await overview.track(conn, subject_id, since, until, TRACK_MAX_FIXES + 1)
        history = await alert_store.list_page(
            conn,
            subject_id=subject_id,
            state=None,
            visible_subjects=None,
            before_no=None,
            limit=HISTORY_ALERTS,
        )
    truncated = len(rows) > TRACK_MAX_FIXES
    if truncated:
        rows = rows[1:]
    coordinates = [[r["lon"], r["lat"]] for r in rows]
    line = None
    if len(coordinates) >= 2:
        line = {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": coordinates},
            "properties": {"times": [iso(r["t"]) for r in rows]},
        }
    points = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": {
                "t": iso(r["t"]),
                "received_at": iso(r["received_at"]),
                "acc": r["acc"],
                "src": r["src"],
                "spd": r["spd"],
                "batt": r["batt"],
                "device_id": r["device_id"],
                "seq": r["seq"],
            },
        }
        for r in rows
    ]
    return {
        "subject_id": subject_id,
        "since": iso(since),
        "until": iso(until),
        "truncated": truncated,
        "line": line,
        "fixes": _collection(points),
        "alerts": [alert_store.alert_json(a) for a in history],
    }
