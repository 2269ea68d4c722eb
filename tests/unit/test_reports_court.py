"""monitor.reports.court and .maps: the court report as PDF, and its violation maps."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pypdf
from reportlab.graphics.shapes import Drawing

from geofences.geodesy import offset
from monitor.domain import Status, iso
from monitor.reports import court, maps, review
from monitor.rules.book import RuleBook, StatusOrder

HOME = (76.889709, 43.238949)
T0 = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
ZONE = "6f1c1f5e-7a0e-4a4c-9d0c-2f6a8d9b0c11"
NAME = "Иванов Иван Иванович"


def track(points: list[tuple[float, float]]) -> list[dict[str, Any]]:
    rows = []
    for i, (east, north) in enumerate(points):
        lon, lat = offset(HOME[0], HOME[1], east, north)
        t = T0 + timedelta(minutes=i)
        rows.append(
            {
                "device_id": "BR-0001",
                "seq": i + 1,
                "t": t,
                "received_at": t + timedelta(seconds=1),
                "lat": float(lat),
                "lon": float(lon),
                "acc": 12.0,
                "src": "gnss",
                "spd": None,
                "batt": None,
            }
        )
    return rows


def home_zone() -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": ZONE,
        "geometry": {"type": "Point", "coordinates": list(HOME)},
        "properties": {
            "kind": "home",
            "radius_m": 500.0,
            "source": "status",
            "valid_from": iso(T0 - timedelta(days=2)),
            "valid_until": None,
        },
    }


def a_violation() -> dict[str, Any]:
    fixes = track([(0, 0), (300, 50), (650, 100), (800, 120), (400, 60), (50, 0)])
    first = fixes[2]
    alert = {
        "id": "0d2b9a77-1d1c-4b0e-8c83-9b6b1f7e2a10",
        "event_id": 9,
        "subject_id": "s1",
        "device_id": "BR-0001",
        "kind": "zone_exit",
        "severity": "critical",
        "state": "resolved",
        "fix_time": iso(first["t"]),
        "received_at": iso(first["received_at"]),
        "lat": first["lat"],
        "lon": first["lon"],
        "zone_id": ZONE,
        "detail": {
            "count": 2,
            "worst_margin_m": 311.4,
            "last_fix": {"t": iso(fixes[3]["t"])},
            "cleared_at": iso(fixes[4]["t"]),
            "resolved_by": "officer_a",
            "resolved_at": iso(T0 + timedelta(hours=1)),
            "resolution_note": "Went to the pharmacy; warned <in person> & noted.",
        },
    }
    book = RuleBook(
        "s1",
        "Asia/Almaty",
        (),
        (
            StatusOrder(
                Status.YELLOW, T0 - timedelta(days=2), T0 - timedelta(days=2), HOME, 500.0, ZONE
            ),
        ),
    )
    events = [
        {
            "event_id": 3,
            "at": first["received_at"],
            "change": "opened",
            "actor": None,
            "state": "open",
        },
        {
            "event_id": 9,
            "at": T0 + timedelta(hours=1),
            "change": "resolved",
            "actor": "officer_a",
            "state": "resolved",
        },
    ]
    return review.violation(
        alert, f"status:{ZONE}", fixes, events, book, {ZONE: home_zone()}, None, len(fixes)
    )


def report(**changes: Any) -> court.CourtReport:
    args: dict[str, Any] = {
        "subject": {
            "id": "s1",
            "name": NAME,
            "external_id": "IIN-900101300001",
            "timezone": "Asia/Almaty",
            "officer": "officer_a",
        },
        "since": T0 - timedelta(hours=1),
        "until": T0 + timedelta(days=1),
        "statuses": [
            {
                "status": "yellow",
                "home_lon": HOME[0],
                "home_lat": HOME[1],
                "radius_m": 500.0,
                "effective_at": T0 - timedelta(days=2),
                "recorded_at": T0 - timedelta(days=2),
                "set_by": "admin",
            }
        ],
        "orders": [
            {
                "reference": "2-1234/2026",
                "authority": "Almaty district court",
                "starts_at": T0 - timedelta(days=2),
                "ends_at": None,
                "status": "yellow",
                "version": 1,
            }
        ],
        "zones": [home_zone()],
        "violations": [a_violation()],
        "devices": [{"device_id": "BR-0001", "fixes": 6, "first": T0, "last": T0}],
        "fix_count": 6,
        "provenance": [("Record up to", "2026-11-22 14:00:00 UTC")],
        "as_of": T0 + timedelta(hours=1),
        "footer": "Evidence bundle",
    }
    args.update(changes)
    return court.CourtReport(**args)


def text_of(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_the_report_is_a_pdf_with_the_subject_the_violation_and_page_numbers() -> None:
    pdf = court.render(report())
    assert pdf.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    pages = len(reader.pages)
    text = text_of(pdf)
    assert NAME in text
    assert "IIN-900101300001" in text
    assert "2-1234/2026" in text
    assert "2026-11-22 13:02:00 UTC" in text  # the first violating fix
    assert "2026-11-22 18:02:00 local (UTC+05:00)" in text  # and in Almaty
    assert "must stay within 500 m of the home" in text
    assert "Went to the pharmacy; warned <in person> & noted." in text
    assert "311.4 m on the wrong side" in text
    assert f"Page 1 of {pages}" in text
    assert f"Page {pages} of {pages}" in text
    assert reader.metadata is not None
    assert NAME in str(reader.metadata.title)
    assert str(reader.metadata.get("/CreationDate", "")).startswith("D:20261122140000")


def test_the_same_report_renders_to_the_same_bytes() -> None:
    assert court.render(report()) == court.render(report())


def test_a_report_with_nothing_in_it_still_renders() -> None:
    empty = report(statuses=[], orders=[], zones=[], violations=[], devices=[], fix_count=0)
    text = text_of(court.render(empty))
    assert "No violation in the period." in text
    assert "No order or status is recorded for this subject." in text


def test_the_bundle_report_lists_the_data_files() -> None:
    files = [{"name": "fixes.csv", "size": 1234, "sha256": "ab" * 32}]
    text = text_of(court.render(report(files=files)))
    assert "Files of this evidence bundle" in text
    assert "ab" * 32 in text


def test_a_violation_map_is_drawn_to_scale() -> None:
    drawing = maps.violation_map(a_violation(), width=400, height=200)
    assert isinstance(drawing, Drawing)
    labels = [s.text for s in drawing.contents if hasattr(s, "text")]
    assert "N" in labels
    assert any(label.endswith(" m") for label in labels)  # the scale bar
    assert any(label.startswith("first violating fix") for label in labels)


def test_no_map_without_a_position() -> None:
    v = a_violation()
    v["alert"] = {**v["alert"], "lat": None, "lon": None}
    v["fixes"] = {"type": "FeatureCollection", "features": [], "total": 0, "thinned": False}
    assert maps.violation_map(v) is None


def test_a_zone_far_larger_than_the_track_is_clipped_to_the_map() -> None:
    v = a_violation()
    w, s = offset(HOME[0], HOME[1], -20_000, -20_000)
    e, n = offset(HOME[0], HOME[1], 20_000, 20_000)
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    v["rule"] = {
        **v["rule"],
        "zone": {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"kind": "inclusion"},
        },
    }
    drawing = maps.violation_map(v, width=400, height=200)
    assert drawing is not None
    x0, y0, x1, y1 = drawing.getBounds()
    assert x0 >= -1
    assert y0 >= -1
    assert x1 <= 401
    assert y1 <= 201


def test_a_corridor_is_drawn_as_its_buffer() -> None:
    v = a_violation()
    line = [list(offset(HOME[0], HOME[1], -300, 0)), list(offset(HOME[0], HOME[1], 300, 0))]
    v["rule"] = {
        **v["rule"],
        "zone": {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": line},
            "properties": {"kind": "inclusion", "width_m": 40},
        },
    }
    assert maps.violation_map(v) is not None
