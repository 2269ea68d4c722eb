"""The court report: one subject over one period, as a PDF for a judge and a probation
officer.

It holds the subject, the orders and status history, the zones and the rules they set,
every violation (its time in UTC and in the subject's local time, its place, the
accuracy of the fix, the rule in force then, a small map, and the notes and history of
its handling), the other alerts of the period, and, in an evidence bundle, the SHA-256
of the data files beside it. The PDF depends only on the `CourtReport` given (reportlab's
invariant mode, the document date taken from the record), so the same record renders
to the same bytes.

Text is set in DejaVu Sans where the system has it (names in Cyrillic or Kazakh need
it) and in Helvetica otherwise, which shows only Latin-1.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from monitor.reports.maps import violation_map
from monitor.reports.review import describe_rule, parse_time

__all__ = ["CourtReport", "find_fonts", "render"]

FONT_DIRS: Final = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/usr/share/fonts/dejavu-sans-fonts",
)

KIND_TITLES: Final = {
    "zone_exit": "Left the area the order confines them to",
    "zone_enter": "Entered an area the order excludes them from",
    "curfew": "Away from the required place during curfew hours",
    "proximity": "Came too close to a protected person",
    "tamper": "Device tampered with (strap or case opened)",
    "jamming": "Positioning jammed",
    "spoofing": "Implausible positions (suspected spoofing)",
}

GRID: Final = colors.Color(0.75, 0.75, 0.75)
SHADE: Final = colors.Color(0.94, 0.94, 0.94)


@dataclass(frozen=True)
class CourtReport:
    """Everything the report shows; rows are mappings as the store and the API give.

    `subject`: id, name, external_id, timezone, officer. `statuses`: subject_statuses
    rows. `orders`: restraint orders (authority, reference, starts_at, ends_at, status,
    version), if any. `zones`: the subject's zones as GeoJSON (`zone_json`).
    `violations`: the review's violations (`review.violation`). `other_alerts`: the
    period's other alerts as the API shows them. `devices`: device_id, fixes, first,
    last. `provenance`: label and text lines (who generated it and why, or what the
    record runs up to). `files`: name, size, sha256 of files that go with the report.
    `as_of`: the document date (the latest record time for a reproducible report).
    """

    subject: Mapping[str, Any]
    since: datetime | None
    until: datetime | None
    statuses: Sequence[Mapping[str, Any]] = ()
    orders: Sequence[Mapping[str, Any]] = ()
    zones: Sequence[Mapping[str, Any]] = ()
    violations: Sequence[Mapping[str, Any]] = ()
    other_alerts: Sequence[Mapping[str, Any]] = ()
    devices: Sequence[Mapping[str, Any]] = ()
    fix_count: int = 0
    provenance: Sequence[tuple[str, str]] = ()
    files: Sequence[Mapping[str, Any]] = ()
    as_of: datetime | None = None
    generator: str = "em-monitor"
    footer: str = field(default="")


# fonts


def find_fonts(dirs: Sequence[str] = FONT_DIRS) -> tuple[str, str] | None:
    """Paths of DejaVu Sans and DejaVu Sans Bold, if the system has them."""
    for d in dirs:
        regular, bold = Path(d) / "DejaVuSans.ttf", Path(d) / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return str(regular), str(bold)
    return None


_registered: dict[tuple[str, str], tuple[str, str]] = {}


def _register(fonts: tuple[str, str] | None) -> tuple[str, str]:
    if fonts is None:
        return "Helvetica", "Helvetica-Bold"
    if fonts not in _registered:
        pdfmetrics.registerFont(TTFont("ReportSans", fonts[0]))
        pdfmetrics.registerFont(TTFont("ReportSans-Bold", fonts[1]))
        pdfmetrics.registerFontFamily(
            "ReportSans",
            normal="ReportSans",
            bold="ReportSans-Bold",
            italic="ReportSans",
            boldItalic="ReportSans-Bold",
        )
        _registered[fonts] = ("ReportSans", "ReportSans-Bold")
    return _registered[fonts]


# times and places


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _offset(t: datetime) -> str:
    off = t.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _utc(t: datetime | None) -> str:
    if t is None:
        return "—"
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _local(t: datetime | None, tz: ZoneInfo) -> str:
    if t is None:
        return "—"
    local = t.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M:%S} local ({_offset(local)})"


def _both(t: datetime | None, tz: ZoneInfo) -> str:
    if t is None:
        return "—"
    return f"{_utc(t)}<br/>{_local(t, tz)}"


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return parse_time(value)


def _place(lat: Any, lon: Any) -> str:
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return "—"
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"{abs(lat):.6f}° {ns}, {abs(lon):.6f}° {ew} (lat {lat:.6f}, lon {lon:.6f})"


def _metres(value: Any) -> str:
    if not isinstance(value, int | float):
        return "—"
    return f"{value:,.1f} m".replace(".0 m", " m")


def _text(value: Any) -> str:
    return escape("—" if value is None or value == "" else str(value))


def _lines(value: Any) -> str:
    """Free text (a note) as written, its line breaks kept."""
    return "<br/>".join(_text(line) for line in str(value).splitlines() or [""])


# the document


class _Styles:
    def __init__(self, regular: str, bold: str) -> None:
        self.body = ParagraphStyle(
            "body", fontName=regular, fontSize=9, leading=12, alignment=TA_LEFT
        )
        self.small = ParagraphStyle("small", parent=self.body, fontSize=7.5, leading=9.5)
        self.cell = ParagraphStyle("cell", parent=self.body, fontSize=8, leading=10)
        self.key = ParagraphStyle("key", parent=self.cell, fontName=bold)
        self.mono = ParagraphStyle("mono", parent=self.cell, fontName="Courier", fontSize=7)
        self.title = ParagraphStyle(
            "title", parent=self.body, fontName=bold, fontSize=16, leading=20, spaceAfter=2
        )
        self.subtitle = ParagraphStyle(
            "subtitle", parent=self.body, fontSize=11, leading=14, spaceAfter=8
        )
        self.h1 = ParagraphStyle(
            "h1",
            parent=self.body,
            fontName=bold,
            fontSize=12.5,
            leading=16,
            spaceBefore=12,
            spaceAfter=5,
        )
        self.h2 = ParagraphStyle(
            "h2",
            parent=self.body,
            fontName=bold,
            fontSize=10.5,
            leading=13,
            spaceBefore=10,
            spaceAfter=4,
        )
        self.regular, self.bold = regular, bold


def _kv(rows: Sequence[tuple[str, str]], s: _Styles, key_width: float = 42 * mm) -> Table:
    data = [[Paragraph(escape(k), s.key), Paragraph(v, s.cell)] for k, v in rows]
    table = Table(data, colWidths=[key_width, None], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, GRID),
                ("BACKGROUND", (0, 0), (0, -1), SHADE),
                ("TOPPADDING", (0, 0), (-1, -1), 2.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
            ]
        )
    )
    return table


def _grid(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    s: _Styles,
    widths: Sequence[float] | None = None,
    mono_cols: Sequence[int] = (),
) -> Table:
    data: list[list[Any]] = [[Paragraph(escape(h), s.key) for h in header]]
    for row in rows:
        data.append([Paragraph(v, s.mono if i in mono_cols else s.cell) for i, v in enumerate(row)])
    table = Table(data, colWidths=list(widths) if widths else None, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), (-1, 0), SHADE),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, GRID),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def _zone_summary(feature: Mapping[str, Any]) -> str:
    geometry = feature.get("geometry") or {}
    props = feature.get("properties") or {}
    gtype = geometry.get("type")
    if gtype == "Point":
        lon, lat = (geometry.get("coordinates") or [None, None])[:2]
        return f"circle of {_metres(props.get('radius_m'))} around {_place(lat, lon)}"
    if gtype in ("LineString", "MultiLineString"):
        return f"route corridor {_metres(props.get('width_m'))} either side of a line"
    if gtype == "Polygon":
        ring = (geometry.get("coordinates") or [[]])[0]
        return f"polygon of {max(len(ring) - 1, 0)} corners"
    if gtype == "MultiPolygon":
        return f"{len(geometry.get('coordinates') or [])} polygons"
    return str(gtype or "—")


def _schedule(props: Mapping[str, Any]) -> str:
    raw = props.get("schedule")
    if not raw:
        return "always"
    parts = []
    for w in raw.get("weekly") or [] if isinstance(raw, dict) else []:
        if isinstance(w, dict):
            days = w.get("days")
            day_text = ", ".join(str(d) for d in days) if isinstance(days, list) else "every day"
            parts.append(f"{day_text} {w.get('start', '?')}–{w.get('end', '?')}")
    text = "; ".join(parts) if parts else "scheduled"
    if isinstance(raw, dict) and raw.get("timezone"):
        text += f" ({raw['timezone']})"
    return text


def _subject_section(r: CourtReport, s: _Styles, tz: ZoneInfo) -> list[Flowable]:
    sub = r.subject
    period_from = _both(r.since, tz) if r.since else "the start of the record"
    period_to = _both(r.until, tz) if r.until else "the end of the record"
    devices = (
        "<br/>".join(
            f"{_text(d.get('device_id'))}: {int(d.get('fixes') or 0)} fixes,"
            f" {_utc(_when(d.get('first')))} to {_utc(_when(d.get('last')))}"
            for d in r.devices
        )
        or "no fixes in the period"
    )
    rows = [
        ("Subject", f"<b>{_text(sub.get('name'))}</b>"),
        ("External ID", _text(sub.get("external_id"))),
        ("Supervising officer", _text(sub.get("officer"))),
        ("Time zone", _text(sub.get("timezone"))),
        ("Period from", period_from),
        ("Period until (excl.)", period_to),
        ("Devices", devices),
        (
            "In the period",
            f"{r.fix_count} fixes; {len(r.violations)} violation(s);"
            f" {len(r.other_alerts)} other alert(s)",
        ),
        *((label, escape(text)) for label, text in r.provenance),
    ]
    return [_kv(rows, s)]


def _orders_section(r: CourtReport, s: _Styles, tz: ZoneInfo) -> list[Flowable]:
    out: list[Flowable] = [Paragraph("1. Orders and status history", s.h1)]
    if r.orders:
        out.append(Paragraph("Restraint orders, as recorded (each version):", s.body))
        rows = [
            [
                _text(o.get("reference")),
                _text(o.get("authority")),
                _both(_when(o.get("starts_at")), tz),
                _both(_when(o.get("ends_at")), tz) if o.get("ends_at") else "open-ended",
                _text(o.get("status")),
                _text(o.get("version")),
            ]
            for o in r.orders
        ]
        out.append(
            _grid(
                ["Reference", "Authority", "From", "Until", "Status", "Version"],
                rows,
                s,
                [28 * mm, 30 * mm, 40 * mm, 40 * mm, 16 * mm, 16 * mm],
            )
        )
        out.append(Spacer(1, 6))
    if r.statuses:
        out.append(
            Paragraph(
                "Status orders, in the order they were recorded. Each one sets the status"
                " rules from its effective time on, replacing what an earlier one said for"
                " that time.",
                s.body,
            )
        )
        rows = []
        for st in r.statuses:
            home = (
                _place(st.get("home_lat"), st.get("home_lon"))
                if st.get("home_lat") is not None
                else "—"
            )
            rows.append(
                [
                    f"<b>{_text(st.get('status'))}</b>",
                    _both(_when(st.get("effective_at")), tz),
                    home,
                    _metres(st.get("radius_m")),
                    f"{_utc(_when(st.get('recorded_at')))}<br/>by {_text(st.get('set_by'))}",
                ]
            )
        out.append(
            _grid(
                ["Status", "In force from", "Home", "Radius", "Recorded"],
                rows,
                s,
                [16 * mm, 40 * mm, 50 * mm, 18 * mm, 46 * mm],
            )
        )
    if not r.orders and not r.statuses:
        out.append(Paragraph("No order or status is recorded for this subject.", s.body))
    return out


def _zones_section(r: CourtReport, s: _Styles, tz: ZoneInfo) -> list[Flowable]:
    out: list[Flowable] = [Paragraph("2. Zones and the rules they set", s.h1)]
    if not r.zones:
        out.append(Paragraph("No zone is recorded for this subject.", s.body))
        return out
    rows = []
    for z in r.zones:
        props = z.get("properties") or {}
        kind = props.get("kind")
        rule = "must stay out" if kind == "exclusion" else "must be inside"
        origin = " (from a status order)" if props.get("source") == "status" else ""
        name = props.get("name") or kind
        until = props.get("valid_until")
        rows.append(
            [
                f"<b>{_text(name)}</b><br/>{_text(kind)}{origin}",
                f"{rule}<br/>{escape(_zone_summary(z))}",
                f"from {_both(_when(props.get('valid_from')), tz)}<br/>"
                + (f"until {_utc(_when(until))}" if until else "and still in force"),
                escape(_schedule(props)),
            ]
        )
    out.append(
        _grid(
            ["Zone", "Rule and shape", "In force", "When"],
            rows,
            s,
            [36 * mm, 58 * mm, 46 * mm, 30 * mm],
        )
    )
    return out


def _first_fix(v: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fix_time = (v.get("alert") or {}).get("fix_time")
    for f in (v.get("fixes") or {}).get("features") or []:
        if (f.get("properties") or {}).get("t") == fix_time:
            props: Mapping[str, Any] = f["properties"]
            return props
    return None


def _violation_block(
    i: int, n: int, v: Mapping[str, Any], s: _Styles, tz: ZoneInfo
) -> list[Flowable]:
    alert = v.get("alert") or {}
    detail = alert.get("detail") or {}
    notes = v.get("notes") or {}
    kind = str(alert.get("kind"))
    title = KIND_TITLES.get(kind, kind.replace("_", " ").capitalize())
    heading = Paragraph(
        f"3.{i} Violation {i} of {n}: {escape(title)}"
        f" <font size=8.5>({escape(kind)}, {_text(alert.get('severity'))})</font>",
        s.h2,
    )
    fix_time = _when(alert.get("fix_time"))
    first = _first_fix(v)
    acc = first.get("acc") if first else None
    if acc is None and isinstance(detail.get("last_fix"), dict) and detail.get("count") == 1:
        acc = detail["last_fix"].get("acc")
    last_fix = detail.get("last_fix") if isinstance(detail.get("last_fix"), dict) else {}
    rule = v.get("rule")
    order = v.get("order")
    time_label = "Time (first violating fix)" if rule else "Time"
    rows: list[tuple[str, str]] = [
        (time_label, _both(fix_time, tz)),
        ("Place", _place(alert.get("lat"), alert.get("lon"))),
        (
            "Accuracy",
            f"± {_metres(acc)} (the device's own estimate of its error radius)"
            if acc is not None
            else "—",
        ),
    ]
    if detail.get("worst_margin_m") is not None:
        rows.append(
            ("Furthest from the boundary", f"{_metres(detail['worst_margin_m'])} on the wrong side")
        )
    if detail.get("count") is not None:
        rows.append(
            (
                "Violating fixes",
                f"{int(detail['count'])}; the last at {_utc(_when(last_fix.get('t')))}"
                if last_fix
                else str(int(detail["count"])),
            )
        )
    rows += [
        (
            "Complied again",
            _both(_when(notes.get("cleared_at")), tz)
            if notes.get("cleared_at")
            else "not recorded (no compliant fix after it yet)",
        ),
        (
            "Device",
            f"{_text(alert.get('device_id'))}; received by the service at"
            f" {_utc(_when(alert.get('received_at')))}"
            + (" (uploaded late, from the device's memory)" if detail.get("late") else ""),
        ),
        (
            "Rule in force then",
            escape(str(rule.get("description") or describe_rule(rule)))
            if rule
            else "no zone rule (a device event)",
        ),
    ]
    if order:
        rows.append(
            (
                "Status in force then",
                f"{_text(order.get('status'))}, from {_utc(_when(order.get('effective_at')))}",
            )
        )
    handling = [f"state: <b>{_text(notes.get('state'))}</b>"]
    if notes.get("acknowledged_by"):
        handling.append(
            f"acknowledged by {_text(notes['acknowledged_by'])}"
            f" at {_utc(_when(notes.get('acknowledged_at')))}"
        )
    if notes.get("resolved_by"):
        handling.append(
            f"resolved by {_text(notes['resolved_by'])} at {_utc(_when(notes.get('resolved_at')))}"
        )
    rows.append(("Handling", "; ".join(handling)))
    rows.append(
        (
            "Note",
            f"“{_lines(notes.get('resolution_note'))}”"
            if notes.get("resolution_note")
            else "no resolution note yet",
        )
    )
    rows.append(("Alert", f"<font name='Courier' size=7>{_text(alert.get('id'))}</font>"))
    out: list[Flowable] = [KeepTogether([heading, _kv(rows, s, 44 * mm)])]

    drawing = violation_map(v, width=170 * mm, height=85 * mm)
    if drawing is not None:
        features = (v.get("fixes") or {}).get("features") or []
        times = [_when((f.get("properties") or {}).get("t")) for f in features]
        span = [t for t in times if t is not None]
        shown = (
            f"{len(features)} fixes from {_utc(min(span))} to {_utc(max(span))}"
            if span
            else "no fix"
        )
        total = (v.get("fixes") or {}).get("total")
        if isinstance(total, int) and total > len(features):
            shown += f" (evenly thinned from {total})"
        zone_note = (
            "Shaded green: where the order requires them to be; "
            if (rule or {}).get("must_be_inside", True)
            else "Shaded red: where the order forbids them to be; "
        )
        caption = Paragraph(
            f"Map of violation {i}, to scale, north up, without a base map. {zone_note}"
            "dots: fixes joined in time order (blue: rule kept, red: rule broken), each"
            " with its accuracy circle; ringed: the first violating fix. Shown: "
            f"{escape(shown)}.",
            s.small,
        )
        out.append(Spacer(1, 4))
        out.append(KeepTogether([drawing, Spacer(1, 2), caption]))
    history = notes.get("history") or []
    if history:
        rows_h = [
            [
                _utc(_when(h.get("at"))),
                _text(h.get("change")),
                _text(h.get("actor") or "the service"),
                _text(h.get("state")),
            ]
            for h in history
        ]
        out.append(Spacer(1, 4))
        out.append(
            KeepTogether(
                [
                    Paragraph("History of the alert", s.key),
                    _grid(
                        ["When", "Change", "By", "State after"],
                        rows_h,
                        s,
                        [46 * mm, 40 * mm, 46 * mm, 30 * mm],
                    ),
                ]
            )
        )
    return out


def _mapped(v: Mapping[str, Any]) -> bool:
    alert = v.get("alert") or {}
    return bool((v.get("fixes") or {}).get("features")) or alert.get("lat") is not None


def _violations_index(r: CourtReport, s: _Styles, tz: ZoneInfo) -> list[Flowable]:
    heading = Paragraph("3. Violations", s.h1)
    if not r.violations:
        return [heading, Paragraph("No violation in the period.", s.body)]
    counts: dict[str, int] = {}
    for v in r.violations:
        kind = str((v.get("alert") or {}).get("kind"))
        counts[kind] = counts.get(kind, 0) + 1
    summary = "; ".join(f"{n} × {escape(k)}" for k, n in counts.items())
    rows = []
    for i, v in enumerate(r.violations, start=1):
        a = v.get("alert") or {}
        rows.append(
            [
                f"3.{i}",
                _both(_when(a.get("fix_time")) or _when(a.get("received_at")), tz),
                escape(KIND_TITLES.get(str(a.get("kind")), str(a.get("kind")))),
                _text(a.get("state")),
            ]
        )
    return [
        KeepTogether(
            [
                heading,
                Paragraph(
                    f"{len(r.violations)} violation(s) in the period ({summary}), each set"
                    " out below with its map.",
                    s.body,
                ),
                Spacer(1, 4),
            ]
        ),
        _grid(["No.", "Time", "What", "State"], rows, s, [12 * mm, 50 * mm, 84 * mm, 24 * mm]),
    ]


def _others_section(r: CourtReport, s: _Styles, tz: ZoneInfo) -> list[Flowable]:
    out: list[Flowable] = [Paragraph("4. Other alerts in the period", s.h1)]
    if not r.other_alerts:
        out.append(Paragraph("None.", s.body))
        return out
    out.append(
        Paragraph(
            "Alerts about the equipment and the record rather than the order itself"
            " (battery, loss of contact or of positioning, data gaps, integrity).",
            s.body,
        )
    )
    rows = []
    for a in r.other_alerts:
        d = a.get("detail") or {}
        t = _when(a.get("fix_time")) or _when(a.get("received_at"))
        rows.append(
            [
                _both(t, tz),
                f"{_text(a.get('kind'))}<br/>{_text(a.get('severity'))}",
                _text(a.get("state")),
                _text(a.get("device_id")),
                _lines(d.get("resolution_note") or d.get("reason") or "—"),
            ]
        )
    out.append(
        _grid(
            ["Time", "Kind", "State", "Device", "Note"],
            rows,
            s,
            [48 * mm, 28 * mm, 22 * mm, 22 * mm, 50 * mm],
        )
    )
    return out


def _files_section(r: CourtReport, s: _Styles) -> list[Flowable]:
    out: list[Flowable] = [
        Paragraph("5. Files of this evidence bundle", s.h1),
        Paragraph(
            "The data behind this report, in the same bundle. Their SHA-256 digests are"
            " also in manifest.json, which lists this report too; any change to a file"
            " changes its digest.",
            s.body,
        ),
    ]
    rows = [
        [_text(f.get("name")), f"{int(f.get('size') or 0):,} bytes", _text(f.get("sha256"))]
        for f in r.files
    ]
    out.append(_grid(["File", "Size", "SHA-256"], rows, s, [30 * mm, 28 * mm, 112 * mm], [2]))
    return [KeepTogether(out)]


_READING: Final = (
    "Times are given in UTC and in the subject's local time. A fix is one position reported"
    " by the device, with its own estimate of its error (the accuracy radius); a fix is"
    " judged by the rules in force at its own time, however late it reached the service. A"
    " violation is one episode: it starts at its first violating fix and ends at the first"
    " fix that complies again. Places are WGS 84 latitude and longitude. Maps are drawn from"
    " the recorded positions alone, to scale, without a base map."
)


def _reading_notes(s: _Styles) -> list[Flowable]:
    return [KeepTogether([Paragraph("Reading this report", s.h1), Paragraph(_READING, s.body)])]


def _canvas_maker(r: CourtReport, regular: str) -> Any:
    name = str(r.subject.get("name") or "")
    ext = str(r.subject.get("external_id") or "")
    footer = r.footer

    class _Numbered(Canvas):  # type: ignore[misc]
        """Writes "page n of N" once every page is known."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []
            if r.as_of is not None:
                _stamp(self, r.as_of)

        def showPage(self) -> None:  # noqa: N802 (reportlab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                self._furniture(number, total)
                super().showPage()
            super().save()

        def _furniture(self, number: int, total: int) -> None:
            width, height = A4
            self.saveState()
            self.setFont(regular, 7.5)
            self.setFillColor(colors.Color(0.35, 0.35, 0.35))
            self.drawString(18 * mm, height - 11 * mm, "Electronic monitoring: court report")
            self.drawRightString(width - 18 * mm, height - 11 * mm, f"{name} ({ext})")
            self.setStrokeColor(GRID)
            self.setLineWidth(0.4)
            self.line(18 * mm, height - 12.5 * mm, width - 18 * mm, height - 12.5 * mm)
            self.line(18 * mm, 13 * mm, width - 18 * mm, 13 * mm)
            self.drawString(18 * mm, 9 * mm, footer[:140])
            self.drawRightString(width - 18 * mm, 9 * mm, f"Page {number} of {total}")
            self.restoreState()

    return _Numbered


def _stamp(canvas: Canvas, at: datetime) -> None:
    """The document's creation date: the record's own time, not the clock's."""
    try:
        stamp = canvas._doc._timeStamp
        t = at.timestamp()
        lt = time.gmtime(t)
        stamp.t, stamp.lt, stamp.YMDhms = t, lt, tuple(lt)[:6]
        stamp.dhh = stamp.dmm = 0
        stamp.tzname = "UTC"
    except AttributeError:  # another reportlab: keep its invariant date
        pass


def render(report: CourtReport, fonts: tuple[str, str] | None = None) -> bytes:
    """The report as PDF bytes; `fonts` are TrueType paths (regular, bold), by default
    DejaVu Sans from the system (`find_fonts`)."""
    regular, bold = _register(fonts if fonts is not None else find_fonts())
    s = _Styles(regular, bold)
    tz = _zone(str(report.subject.get("timezone") or "UTC"))
    buf = io.BytesIO()
    sub = report.subject
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=f"Court report: {sub.get('name')} ({sub.get('external_id')})",
        author=report.generator,
        subject="Electronic-monitoring record",
        creator=report.generator,
        invariant=1,
    )
    story: list[Flowable] = [
        Paragraph("Electronic monitoring: court report", s.title),
        Paragraph(f"{_text(sub.get('name'))} · {_text(sub.get('external_id'))}", s.subtitle),
        *_subject_section(report, s, tz),
        *_orders_section(report, s, tz),
        *_zones_section(report, s, tz),
        *_violations_index(report, s, tz),
    ]
    for i, v in enumerate(report.violations, start=1):
        # Each violation starts where its facts and its map fit together.
        story.append(CondPageBreak(190 * mm if _mapped(v) else 90 * mm))
        story += _violation_block(i, len(report.violations), v, s, tz)
    story += _others_section(report, s, tz)
    if report.files:
        story += _files_section(report, s)
    story += _reading_notes(s)
    doc.build(story, canvasmaker=_canvas_maker(report, regular))
    return buf.getvalue()
