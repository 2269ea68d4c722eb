"""A violation in its context: the fixes around it, the rule in force at its fix time,
and the notes and history of its handling.

The shell fetches the rows (the alert, its events, the fixes in `window`, the zones the
rules name, the subject's rule book) and `violation` puts them together as the JSON the
API answers and the court report draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import shapely

from geofences.model import Area, Circle, Corridor, Shape, margin_m
from monitor.domain import iso
from monitor.reports.export import fix_feature
from monitor.rules.book import Rule, RuleBook, StatusOrder

__all__ = [
    "AROUND",
    "MAX_FIXES",
    "VIOLATION_KINDS",
    "describe_rule",
    "parse_time",
    "rule_json",
    "violation",
    "window",
]

# Breaches of the order itself (as opposed to the state of the equipment: battery,
# contact, data gaps), which the review and the court report list one by one.
VIOLATION_KINDS: Final = (
    "zone_exit",
    "zone_enter",
    "curfew",
    "proximity",
    "tamper",
    "jamming",
    "spoofing",
)

# The fixes shown with a violation: from this long before its first violating fix to this
# long after the later of its last violating fix and its clearing, at most MAX_FIXES
# (evenly thinned beyond that, the first violating fix always kept).
AROUND: Final = timedelta(minutes=10)
MAX_FIXES: Final = 200


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 instant as the API writes it (with `Z`), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def window(
    fix_time: datetime, detail: Mapping[str, Any], cleared_at: datetime | None
) -> tuple[datetime, datetime]:
    """[start, end) of the fixes shown around a violation."""
    last = detail.get("last_fix")
    ends = [fix_time]
    if isinstance(last, dict) and (t := parse_time(last.get("t"))) is not None:
        ends.append(t)
    if cleared_at is not None:
        ends.append(cleared_at)
    return fix_time - AROUND, max(ends) + AROUND


def _shape_geometry(shape: Shape) -> dict[str, Any]:
    if isinstance(shape, Circle):
        return {"type": "Point", "coordinates": [shape.lon, shape.lat]}
    geometry = shape.geometry if isinstance(shape, Area) else shape.line
    mapped: dict[str, Any] = _listify(shapely.geometry.mapping(geometry))
    return mapped


def _listify(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_listify(v) for v in value]
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    return value


def _shape_feature(rule: Rule) -> dict[str, Any]:
    props: dict[str, Any] = {"kind": "home" if rule.home else None}
    if isinstance(rule.shape, Circle):
        props["radius_m"] = rule.shape.radius_m
    elif isinstance(rule.shape, Corridor):
        props["width_m"] = rule.shape.width_m
    return {"type": "Feature", "geometry": _shape_geometry(rule.shape), "properties": props}


def _order_json(order: StatusOrder) -> dict[str, Any]:
    return {
        "status": order.status.value,
        "effective_at": iso(order.effective_at),
        "recorded_at": iso(order.recorded_at),
        "home": list(order.home) if order.home is not None else None,
        "radius_m": order.radius_m,
        "zone_id": order.zone_id,
    }


def describe_rule(rule: Mapping[str, Any]) -> str:
    """The rule in a sentence, for people (the report and the API's `description`)."""
    zone = rule.get("zone") or {}
    props = zone.get("properties") or {}
    name = props.get("name")
    order = rule.get("order")
    schedule = " while its schedule is in force" if rule.get("scheduled") else ""
    if rule.get("kind") == "proximity":
        return (
            f"must stay at least {rule.get('distance_m')} m away from device"
            f" {rule.get('other_device_id')}{schedule}"
        )
    if str(rule.get("key", "")).startswith("status:") and order is not None:
        home = order.get("home") or [None, None]
        radius = props.get("radius_m") or order.get("radius_m")
        return (
            f"must stay within {_metres(radius)} of the home at {_latlon(home[1], home[0])}"
            f" (the {order.get('status')} status order)"
        )
    geometry = zone.get("geometry") or {}
    what = f"the zone “{name}”" if name else f"the {props.get('kind') or 'zone'}"
    if geometry.get("type") == "Point" and props.get("radius_m") is not None:
        coords = geometry.get("coordinates") or [None, None]
        what = f"{what} (within {_metres(props['radius_m'])} of {_latlon(coords[1], coords[0])})"
    if rule.get("must_be_inside"):
        return f"must be inside {what}{schedule}"
    return f"must not enter {what}{schedule}"


def _metres(value: Any) -> str:
    if not isinstance(value, int | float):
        return "? m"
    return f"{value:g} m"


def _latlon(lat: Any, lon: Any) -> str:
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return "?"
    return f"{lat:.6f}, {lon:.6f}"


def rule_json(
    rule: Rule,
    book: RuleBook,
    at: datetime,
    zones: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """A rule in force at `at`: what it demands, its zone as GeoJSON (the stored zone
    when there is one, else its shape), the status order it comes from."""
    zone = zones.get(rule.zone_id) if rule.zone_id else None
    order = book.status_at(at) if rule.key.startswith("status:") else None
    out: dict[str, Any] = {
        "key": rule.key,
        "kind": rule.kind.value,
        "severity": rule.severity.value,
        "must_be_inside": rule.must_be_inside,
        "zone_id": rule.zone_id,
        "scheduled": rule.schedule is not None,
        "schedule_active": (
            True if rule.schedule is None else rule.schedule.active(at, book.timezone)
        ),
        "zone": dict(zone) if zone is not None else _shape_feature(rule),
        "order": _order_json(order) if order is not None else None,
    }
    out["description"] = describe_rule(out)
    return out


def _compact(rule: Rule, book: RuleBook, at: datetime) -> dict[str, Any]:
    return {
        "key": rule.key,
        "kind": rule.kind.value,
        "must_be_inside": rule.must_be_inside,
        "zone_id": rule.zone_id,
        "scheduled": rule.schedule is not None,
        "schedule_active": (
            True if rule.schedule is None else rule.schedule.active(at, book.timezone)
        ),
    }


def _history(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "event_id": int(e["event_id"]),
            "at": iso(e["at"]),
            "change": e["change"],
            "actor": e["actor"],
            "state": e.get("state"),
        }
        for e in events
    ]


def violation(
    alert: Mapping[str, Any],
    rule_key: str | None,
    fixes: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    book: RuleBook | None,
    zones: Mapping[str, Mapping[str, Any]],
    span: tuple[datetime, datetime] | None,
    total_fixes: int | None = None,
) -> dict[str, Any]:
    """One violation for review.

    `alert` is the alert as the API shows it and `rule_key` the key of the rule it
    broke; `fixes` the subject's stored fixes in `span`, oldest first (at most about
    MAX_FIXES, thinned by the store, of `total_fixes`); `events` the alert's history (rows
    with event_id, at, change, actor, state); `zones` the stored zones by id, as GeoJSON.
    Each fix carries `margin_m` (metres outside the rule's shape, negative inside) and
    `violating` when the rule has a shape.
    """
    fix_time = parse_time(alert.get("fix_time"))
    rule: Rule | None = None
    rules_in_force: list[dict[str, Any]] = []
    shared_in_force = 0
    rule_out: dict[str, Any] | None = None
    order_out: dict[str, Any] | None = None
    if book is not None and fix_time is not None:
        shared_ids = {z.zone_id for z in book.shared}
        key = rule_key or (alert.get("detail") or {}).get("rule") or None
        for r in book.rules_at(fix_time):
            if r.key == key or (key is None and r.zone_id and r.zone_id == alert.get("zone_id")):
                rule = r
            if r.zone_id in shared_ids:
                shared_in_force += 1
            else:
                rules_in_force.append(_compact(r, book, fix_time))
        if rule is not None:
            rule_out = rule_json(rule, book, fix_time, zones)
        else:
            proximity_at = getattr(book, "proximity_at", None)
            for p in proximity_at(fix_time) if proximity_at is not None else ():
                if p.key == key:
                    rule_out = {
                        "key": p.key,
                        "kind": p.kind.value,
                        "severity": p.severity.value,
                        "must_be_inside": False,
                        "zone_id": None,
                        "scheduled": p.schedule is not None,
                        "schedule_active": True,
                        "zone": None,
                        "order": None,
                        "other_device_id": p.other_device_id,
                        "distance_m": p.distance_m,
                    }
                    rule_out["description"] = describe_rule(rule_out)
        order = book.status_at(fix_time)
        order_out = _order_json(order) if order is not None else None

    kept = list(fixes)
    features = [fix_feature(r) for r in kept]
    if rule is not None and kept:
        lon = np.array([r["lon"] for r in kept], dtype=np.float64)
        lat = np.array([r["lat"] for r in kept], dtype=np.float64)
        margins = margin_m(rule.shape, lon, lat)
        for feature, m in zip(features, margins.tolist(), strict=True):
            outside = m > 0.0
            feature["properties"]["margin_m"] = round(m, 1)
            feature["properties"]["violating"] = outside if rule.must_be_inside else not outside

    detail = dict(alert.get("detail") or {})
    return {
        "alert": dict(alert),
        "window": {
            "since": iso(span[0]) if span else None,
            "until": iso(span[1]) if span else None,
        },
        "fixes": {
            "type": "FeatureCollection",
            "features": features,
            "total": total_fixes if total_fixes is not None else len(fixes),
            "thinned": len(features) < (total_fixes if total_fixes is not None else len(fixes)),
        },
        "rule": rule_out,
        "order": order_out,
        "rules_in_force": rules_in_force,
        "shared_zones_in_force": shared_in_force,
        "notes": {
            "state": alert.get("state"),
            "cleared_at": detail.get("cleared_at"),
            "clear_reason": detail.get("clear_reason"),
            "acknowledged_at": detail.get("acknowledged_at"),
            "acknowledged_by": detail.get("acknowledged_by"),
            "resolved_at": detail.get("resolved_at"),
            "resolved_by": detail.get("resolved_by"),
            "resolution_note": detail.get("resolution_note"),
            "history": _history(events),
        },
    }
