"""monitor.reports.review: a violation with its fixes, the rule in force then, its notes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from shapely import Polygon

from geofences.geodesy import offset
from geofences.model import Area
from monitor.domain import Status, iso
from monitor.reports import review
from monitor.rules.book import RuleBook, StatusOrder, ZoneEntry

HOME = (76.889709, 43.238949)
T0 = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
HOME_ZONE = "6f1c1f5e-7a0e-4a4c-9d0c-2f6a8d9b0c11"
EXCLUSION = "7a2d0f6e-1111-4a4c-9d0c-2f6a8d9b0c22"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fixes(track: list[tuple[float, float]]) -> list[dict[str, Any]]:
    out = []
    for i, (east, north) in enumerate(track):
        lon, lat = offset(HOME[0], HOME[1], east, north)
        out.append(
            {
                "device_id": "BR-0001",
                "seq": i + 1,
                "t": at(i),
                "received_at": at(i) + timedelta(seconds=1),
                "lat": float(lat),
                "lon": float(lon),
                "acc": 8.5,
                "src": "gnss",
                "spd": None,
                "batt": None,
            }
        )
    return out


def alert(fix: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "a1",
        "event_id": 4,
        "subject_id": "s1",
        "device_id": "BR-0001",
        "kind": "zone_exit",
        "severity": "critical",
        "state": "acknowledged",
        "fix_time": iso(fix["t"]),
        "received_at": iso(fix["received_at"]),
        "lat": fix["lat"],
        "lon": fix["lon"],
        "zone_id": HOME_ZONE,
        "detail": {
            "count": 3,
            "last_fix": {"t": iso(at(6))},
            "acknowledged_by": "operator1",
            "acknowledged_at": iso(at(8)),
        },
    }
    body.update(changes)
    return body


def home_feature() -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": HOME_ZONE,
        "geometry": {"type": "Point", "coordinates": list(HOME)},
        "properties": {"kind": "home", "radius_m": 500.0, "status": "yellow", "source": "status"},
    }


def book_with_orders() -> RuleBook:
    """Yellow (500 m) from a day before T0; green from an hour after T0."""
    return RuleBook(
        "s1",
        "Asia/Almaty",
        (),
        (
            StatusOrder(Status.YELLOW, at(-1440), at(-1440), HOME, 500.0, HOME_ZONE),
            StatusOrder(Status.GREEN, at(60), at(-30)),
        ),
    )


EVENTS = [
    {"event_id": 2, "at": at(3), "change": "opened", "actor": None, "state": "open"},
    {"event_id": 4, "at": at(8), "change": "acknowledged", "actor": "operator1", "state": "ack"},
]


def test_the_window_runs_from_before_the_first_fix_to_after_the_later_end() -> None:
    assert review.window(at(3), {"last_fix": {"t": iso(at(6))}}, None) == (at(-7), at(16))
    assert review.window(at(3), {"last_fix": {"t": iso(at(6))}}, at(9)) == (at(-7), at(19))
    assert review.window(at(3), {}, None) == (at(-7), at(13))


def test_a_violation_carries_the_rule_in_force_at_its_fix_time() -> None:
    track = fixes([(0, 0), (200, 0), (400, 0), (700, 0), (800, 0), (750, 0), (650, 0), (100, 0)])
    first = track[3]
    a = alert(first)
    v = review.violation(
        a,
        f"status:{HOME_ZONE}",
        track,
        EVENTS,
        book_with_orders(),
        {HOME_ZONE: home_feature()},
        review.window(first["t"], a["detail"], None),
        total_fixes=len(track),
    )
    assert v["alert"] == a
    rule = v["rule"]
    assert rule["key"] == f"status:{HOME_ZONE}"
    assert rule["kind"] == "zone_exit"
    assert rule["must_be_inside"] is True
    assert rule["zone"] == home_feature()
    assert rule["order"]["status"] == "yellow"
    assert rule["order"]["home"] == list(HOME)
    assert "500 m" in rule["description"]
    assert v["order"]["status"] == "yellow"
    assert [r["key"] for r in v["rules_in_force"]] == [f"status:{HOME_ZONE}"]
    # Each fix knows how far outside it was and whether it broke the rule.
    props = [f["properties"] for f in v["fixes"]["features"]]
    assert [p["violating"] for p in props] == [False, False, False, True, True, True, True, False]
    assert props[3]["margin_m"] == pytest.approx(200.0, abs=0.5)
    assert props[0]["margin_m"] == pytest.approx(-500.0, abs=0.5)
    assert v["fixes"]["total"] == 8
    assert v["fixes"]["thinned"] is False
    assert v["window"] == {"since": iso(at(-7)), "until": iso(at(16))}
    notes = v["notes"]
    assert notes["acknowledged_by"] == "operator1"
    assert notes["resolution_note"] is None
    assert [(h["change"], h["actor"]) for h in notes["history"]] == [
        ("opened", None),
        ("acknowledged", "operator1"),
    ]
    assert notes["history"][0]["at"] == iso(at(3))


def test_a_later_order_does_not_change_the_rule_of_an_earlier_violation() -> None:
    track = fixes([(700, 0)])
    late = [dict(track[0], t=at(90), received_at=at(90))]
    book = book_with_orders()
    v_early = review.violation(
        alert(track[0]), f"status:{HOME_ZONE}", track, [], book, {HOME_ZONE: home_feature()}, None
    )
    assert v_early["rule"] is not None
    v_late = review.violation(
        alert(late[0]), f"status:{HOME_ZONE}", late, [], book, {HOME_ZONE: home_feature()}, None
    )
    assert v_late["rule"] is None  # green from T0 + 60 min: nothing to break
    assert v_late["order"]["status"] == "green"
    assert "violating" not in v_late["fixes"]["features"][0]["properties"]


def test_an_exclusion_zone_is_broken_by_being_inside_it() -> None:
    corners = [offset(HOME[0], HOME[1], e, n) for e, n in ((300, -100), (500, -100), (500, 100))]
    ring = [(float(x), float(y)) for x, y in corners]
    polygon = Polygon([*ring, offset(HOME[0], HOME[1], 300, 100)])
    entry = ZoneEntry(EXCLUSION, "exclusion", Area(polygon), at(-60), name="Victim's street")
    book = RuleBook("s1", "Asia/Almaty", (entry,), ())
    track = fixes([(0, 0), (400, 0), (600, 0)])
    feature = {
        "type": "Feature",
        "id": EXCLUSION,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[list(p) for p in polygon.exterior.coords]],
        },
        "properties": {"kind": "exclusion", "name": "Victim's street"},
    }
    v = review.violation(
        alert(track[1], kind="zone_enter", zone_id=EXCLUSION),
        f"zone:{EXCLUSION}",
        track,
        [],
        book,
        {EXCLUSION: feature},
        None,
    )
    assert v["rule"]["must_be_inside"] is False
    assert v["rule"]["kind"] == "zone_enter"
    assert v["rule"]["description"] == "must not enter the zone “Victim's street”"
    assert [f["properties"]["violating"] for f in v["fixes"]["features"]] == [False, True, False]


def test_a_rule_without_a_stored_zone_gets_its_shape_as_geojson() -> None:
    track = fixes([(700, 0)])
    v = review.violation(
        alert(track[0]), f"status:{HOME_ZONE}", track, [], book_with_orders(), {}, None
    )
    zone = v["rule"]["zone"]
    assert zone["geometry"] == {"type": "Point", "coordinates": list(HOME)}
    assert zone["properties"]["radius_m"] == 500.0


def test_a_device_event_has_no_zone_rule_but_lists_the_rules_in_force() -> None:
    tamper = alert(fixes([(0, 0)])[0], kind="tamper", lat=None, lon=None, zone_id=None)
    v = review.violation(tamper, "event:tamper", [], [], book_with_orders(), {}, None)
    assert v["rule"] is None
    assert [r["key"] for r in v["rules_in_force"]] == [f"status:{HOME_ZONE}"]
    assert v["fixes"] == {"type": "FeatureCollection", "features": [], "total": 0, "thinned": False}


def test_thinned_fixes_are_flagged() -> None:
    track = fixes([(0, 0), (700, 0)])
    v = review.violation(alert(track[1]), None, track, [], None, {}, None, total_fixes=900)
    assert v["fixes"]["thinned"] is True
    assert v["fixes"]["total"] == 900
    assert v["rule"] is None


def test_parse_time_accepts_the_api_format_only() -> None:
    assert review.parse_time("2026-11-22T13:00:00.000Z") == T0
    assert review.parse_time("2026-11-22T13:00:00") is None  # no zone: not an instant
    assert review.parse_time("yesterday") is None
    assert review.parse_time(None) is None
