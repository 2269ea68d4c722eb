"""Fixes and alerts as CSV (RFC 4180) and GeoJSON (RFC 7946) files.

Columns keep a fixed order, times are ISO 8601 in UTC with a `Z` (milliseconds, as the
API writes them), an absent value is an empty CSV field (`null` in GeoJSON), and CSV
fields are quoted when they hold a comma, a quote or a line break. Text is written as
recorded (no spreadsheet-formula escaping), since these files are evidence: open them in
a spreadsheet with the import dialog, not by double-clicking.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from monitor.domain import iso

__all__ = [
    "ALERT_COLUMNS",
    "FIX_COLUMNS",
    "alert_feature",
    "alerts_csv",
    "alerts_geojson",
    "dumps",
    "fix_feature",
    "fixes_csv",
    "fixes_geojson",
]

FIX_COLUMNS: Final = (
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
)

ALERT_COLUMNS: Final = (
    "id",
    "kind",
    "severity",
    "state",
    "fix_time",
    "received_at",
    "lat",
    "lon",
    "device_id",
    "subject_id",
    "zone_id",
    "rule",
    "count",
    "last_fix_time",
    "cleared_at",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "resolution_note",
    "event_id",
    "detail",
)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON with a final newline; the same value gives the same bytes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso(value) or ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return str(value)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode()


def fix_feature(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored fix as the API's GeoJSON Feature (operator-api.md)."""
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
        "properties": {
            "device_id": row["device_id"],
            "seq": row["seq"],
            "t": iso(row["t"]),
            "received_at": iso(row["received_at"]),
            "acc": row["acc"],
            "src": row["src"],
            "batt": row["batt"],
            "spd": row["spd"],
        },
    }


def fixes_csv(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Stored fixes (oldest first, as given), one per line, columns `FIX_COLUMNS`."""
    return _csv(FIX_COLUMNS, ([r[c] for c in FIX_COLUMNS] for r in rows))


def fixes_geojson(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return dumps({"type": "FeatureCollection", "features": [fix_feature(r) for r in rows]})


def _alert_row(alert: Mapping[str, Any]) -> list[Any]:
    detail = dict(alert.get("detail") or {})
    last_fix = detail.get("last_fix")
    named = {
        "rule": detail.get("rule"),
        "count": detail.get("count"),
        "last_fix_time": last_fix.get("t") if isinstance(last_fix, dict) else None,
        "cleared_at": detail.get("cleared_at"),
        "acknowledged_at": detail.get("acknowledged_at"),
        "acknowledged_by": detail.get("acknowledged_by"),
        "resolved_at": detail.get("resolved_at"),
        "resolved_by": detail.get("resolved_by"),
        "resolution_note": detail.get("resolution_note"),
        "detail": detail,
    }
    return [named[c] if c in named else alert.get(c) for c in ALERT_COLUMNS]


def alerts_csv(alerts: Iterable[Mapping[str, Any]]) -> bytes:
    """Alerts as the API shows them (`alert_json`), one per line, columns
    `ALERT_COLUMNS`; `detail` holds the whole detail object as JSON."""
    return _csv(ALERT_COLUMNS, (_alert_row(a) for a in alerts))


def alert_feature(alert: Mapping[str, Any]) -> dict[str, Any]:
    """An alert as a GeoJSON Feature: a Point where it has a position, else a null
    geometry (a tamper or a loss of contact has none); the alert as properties."""
    geometry = None
    if alert.get("lat") is not None and alert.get("lon") is not None:
        geometry = {"type": "Point", "coordinates": [alert["lon"], alert["lat"]]}
    return {
        "type": "Feature",
        "id": alert["id"],
        "geometry": geometry,
        "properties": dict(alert),
    }


def alerts_geojson(alerts: Iterable[Mapping[str, Any]]) -> bytes:
    return dumps({"type": "FeatureCollection", "features": [alert_feature(a) for a in alerts]})
