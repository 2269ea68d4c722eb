"""monitor.reports.export: CSV and GeoJSON of fixes and alerts."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.reports import export

T0 = datetime(2026, 11, 22, 13, 5, 0, 250_000, tzinfo=UTC)


def fix(seq: int | None, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device_id": "BR-0001",
        "seq": seq,
        "t": T0 + timedelta(seconds=seq or 0),
        "received_at": T0 + timedelta(seconds=(seq or 0) + 1),
        "subject_id": "4b1d3c5e-0000-4000-8000-000000000001",
        "lat": 43.238949,
        "lon": 76.889709,
        "acc": 8.5,
        "src": "gnss",
        "spd": None,
        "batt": 80,
    }
    row.update(changes)
    return row


def alert(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "0d2b9a77-1d1c-4b0e-8c83-9b6b1f7e2a10",
        "event_id": 12,
        "subject_id": "4b1d3c5e-0000-4000-8000-000000000001",
        "device_id": "BR-0001",
        "kind": "zone_exit",
        "severity": "critical",
        "state": "resolved",
        "fix_time": "2026-11-22T13:05:00.000Z",
        "received_at": "2026-11-22T13:05:01.200Z",
        "lat": 43.2405,
        "lon": 76.8983,
        "zone_id": None,
        "detail": {
            "rule": "status:abc",
            "count": 5,
            "last_fix": {"t": "2026-11-22T13:06:00.000Z", "acc": 8.5},
            "resolution_note": 'went out, said "pharmacy", came back,\nwarned',
            "resolved_by": "officer_a",
        },
    }
    body.update(changes)
    return body


def parse(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def test_fixes_csv_has_a_stable_header_and_iso_utc_times() -> None:
    data = export.fixes_csv([fix(1), fix(2, spd=1.25, batt=None), fix(None, src="wifi")])
    rows = parse(data)
    assert rows[0] == list(export.FIX_COLUMNS)
    assert rows[0] == [
        "t",
        "received_at",
        "device_id",
        "seq",
        "lat",
        "lon",
        "acc",
        "src",
        "spd",
        "batt",
    ]
    assert rows[1] == [
        "2026-11-22T13:05:01.250Z",
        "2026-11-22T13:05:02.250Z",
        "BR-0001",
        "1",
        "43.238949",
        "76.889709",
        "8.5",
        "gnss",
        "",
        "80",
    ]
    assert rows[2][8:] == ["1.25", ""]
    assert rows[3][3] == ""  # an OwnTracks fix has no seq
    assert data.endswith(b"\r\n")
    assert data.count(b"\r\n") == 4


def test_times_are_written_in_utc_whatever_their_zone() -> None:
    almaty = T0.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+05:00").tzinfo)
    rows = parse(export.fixes_csv([fix(1, t=almaty)]))
    assert rows[1][0] == "2026-11-22T13:05:00.250Z"


def test_csv_quotes_commas_quotes_and_line_breaks_and_reads_back_exactly() -> None:
    note = 'went out, said "pharmacy", came back,\nwarned'
    data = export.alerts_csv([alert(), alert(id="second", detail={})])
    rows = parse(data)
    header = rows[0]
    assert header == list(export.ALERT_COLUMNS)
    first = dict(zip(header, rows[1], strict=True))
    assert first["resolution_note"] == note
    assert first["rule"] == "status:abc"
    assert first["count"] == "5"
    assert first["last_fix_time"] == "2026-11-22T13:06:00.000Z"
    assert first["resolved_by"] == "officer_a"
    assert first["lat"] == "43.2405"
    assert json.loads(first["detail"])["resolution_note"] == note
    # The raw text: the note is one quoted field with its quotes doubled.
    assert b'"went out, said ""pharmacy"", came back,\nwarned"' in data
    second = dict(zip(header, rows[2], strict=True))
    assert second["resolution_note"] == ""
    assert second["detail"] == "{}"


def test_a_field_starting_like_a_formula_is_kept_as_recorded() -> None:
    rows = parse(export.alerts_csv([alert(detail={"resolution_note": "=1+2"})]))
    assert dict(zip(rows[0], rows[1], strict=True))["resolution_note"] == "=1+2"


def test_fixes_geojson_is_a_feature_collection_of_points_lon_lat() -> None:
    doc = json.loads(export.fixes_geojson([fix(1), fix(2)]))
    assert doc["type"] == "FeatureCollection"
    assert len(doc["features"]) == 2
    f = doc["features"][0]
    assert f["type"] == "Feature"
    assert f["geometry"] == {"type": "Point", "coordinates": [76.889709, 43.238949]}
    assert f["properties"] == {
        "device_id": "BR-0001",
        "seq": 1,
        "t": "2026-11-22T13:05:01.250Z",
        "received_at": "2026-11-22T13:05:02.250Z",
        "acc": 8.5,
        "src": "gnss",
        "batt": 80,
        "spd": None,
    }


def test_alerts_geojson_gives_unlocated_alerts_a_null_geometry() -> None:
    tamper = alert(id="t1", kind="tamper", lat=None, lon=None, detail={})
    doc = json.loads(export.alerts_geojson([alert(), tamper]))
    located, unlocated = doc["features"]
    assert located["id"] == alert()["id"]
    assert located["geometry"] == {"type": "Point", "coordinates": [76.8983, 43.2405]}
    assert located["properties"]["kind"] == "zone_exit"
    assert unlocated["geometry"] is None
    assert unlocated["properties"]["kind"] == "tamper"


def test_the_same_rows_give_the_same_bytes() -> None:
    rows = [fix(i) for i in range(1, 50)]
    assert export.fixes_csv(rows) == export.fixes_csv(list(rows))
    assert export.fixes_geojson(rows) == export.fixes_geojson(list(rows))
    assert export.alerts_csv([alert()]) == export.alerts_csv([alert()])
    assert export.alerts_geojson([alert()]) == export.alerts_geojson([alert()])


def test_non_ascii_text_is_utf8() -> None:
    data = export.alerts_csv([alert(detail={"resolution_note": "Иванов: дома"})])
    assert "Иванов: дома".encode() in data
    assert "Иванов".encode() in export.alerts_geojson([alert(detail={"note": "Иванов"})])
