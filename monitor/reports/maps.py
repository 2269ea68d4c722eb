"""A small map of one violation, drawn with reportlab graphics: no tiles, no base map,
only what the record holds, to scale in metres.

It shows the rule's zone (a home radius, a polygon, a corridor) filled pale green when
the subject must be inside it and pale red when they must stay out, the fixes around the
violation joined in time order (blue where the rule was kept, red where it was broken,
each with its accuracy circle), the first violating fix ringed, a scale bar and north.
Positions are projected onto a local plane at the map's centre (metres per degree at that
latitude), which over the few kilometres such a map spans is true to well under 1 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import shapely
from reportlab.graphics.shapes import Circle as RLCircle
from reportlab.graphics.shapes import Drawing, Line, Path, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.pdfbase.pdfmetrics import stringWidth
from shapely.geometry import Point, box, shape

from geofences.geodesy import metres_per_degree
from monitor.reports.review import parse_time

__all__ = ["violation_map"]

INSIDE_FILL: Final = colors.Color(0.87, 0.94, 0.85)
INSIDE_EDGE: Final = colors.Color(0.16, 0.5, 0.2)
OUTSIDE_FILL: Final = colors.Color(0.97, 0.84, 0.85)
OUTSIDE_EDGE: Final = colors.Color(0.7, 0.12, 0.12)
KEPT: Final = colors.Color(0.12, 0.3, 0.6)
BROKEN: Final = colors.Color(0.75, 0.1, 0.1)
UNKNOWN: Final = colors.Color(0.45, 0.45, 0.45)
ACCURACY: Final = colors.Color(0.2, 0.4, 0.8, alpha=0.10)
TRACK: Final = colors.Color(0.5, 0.5, 0.5)
FONT: Final = "Helvetica"

# The smallest area a map shows, and how much bigger than the fixes a zone may be and
# still be drawn whole (a zone far larger than the track is drawn only where it is near).
MIN_SPAN_M: Final = 150.0
ZONE_WHOLE_FACTOR: Final = 4.0
ZONE_WHOLE_MIN_M: Final = 2000.0


def _nice(length: float) -> float:
    """The largest 1, 2 or 5 × 10^n not above `length`."""
    power = 10.0 ** math.floor(math.log10(length))
    for m in (5.0, 2.0, 1.0):
        if m * power <= length:
            return m * power
    return power / 2


def _label(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


class _Plane:
    """lon/lat to metres east and north of (lon0, lat0)."""

    def __init__(self, lon0: float, lat0: float) -> None:
        kx, ky = metres_per_degree(lat0)
        self.lon0, self.lat0 = lon0, lat0
        self.kx, self.ky = float(kx), float(ky)

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        dlon = (lon - self.lon0 + 180.0) % 360.0 - 180.0
        return dlon * self.kx, (lat - self.lat0) * self.ky


def _zone_geometry(zone: Mapping[str, Any] | None, plane: _Plane) -> Any:
    if not zone:
        return None
    geometry = zone.get("geometry") or {}
    props = zone.get("properties") or {}
    gtype = geometry.get("type")
    try:
        if gtype == "Point":
            radius = props.get("radius_m")
            if not isinstance(radius, int | float) or radius <= 0:
                return None
            lon, lat = geometry["coordinates"][:2]
            x, y = plane.xy(lon, lat)
            return Point(x, y).buffer(float(radius), quad_segs=32)
        geom = shape(geometry)
        local = shapely.transform(
            geom,
            lambda c: _project(c, plane),
        )
        if gtype in ("LineString", "MultiLineString"):
            width = props.get("width_m")
            if not isinstance(width, int | float) or width <= 0:
                return local
            return local.buffer(float(width), quad_segs=16)
        return local
    except (KeyError, TypeError, ValueError, shapely.errors.GEOSException):
        return None


def _project(coords: Any, plane: _Plane) -> Any:
    out = np.empty_like(coords)
    dlon = (coords[:, 0] - plane.lon0 + 180.0) % 360.0 - 180.0
    out[:, 0] = dlon * plane.kx
    out[:, 1] = (coords[:, 1] - plane.lat0) * plane.ky
    return out


def _rings(geom: Any) -> list[list[tuple[float, float]]]:
    rings: list[list[tuple[float, float]]] = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon":
            rings.append([(float(x), float(y)) for x, y in part.exterior.coords])
            rings.extend([(float(x), float(y)) for x, y in r.coords] for r in part.interiors)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            rings.extend(_rings(part))
    return rings


def _halo_label(d: Drawing, x: float, y: float, text: str, width: float, height: float) -> None:
    """A label beside the point (x, y), on a white ground so the track does not hide it,
    kept inside the map."""
    size = 6.5
    w = stringWidth(text, FONT, size)
    left = x + 8 if x + 8 + w < width - 4 else x - 8 - w
    bottom = y - 12 if y - 12 > 24 else y + 7
    bottom = min(bottom, height - 12)
    d.add(
        Rect(
            left - 1.5,
            bottom - 1.8,
            w + 3,
            size + 2.6,
            fillColor=colors.Color(1, 1, 1, alpha=0.85),
            strokeColor=None,
        )
    )
    d.add(String(left, bottom, text, fontName=FONT, fontSize=size, fillColor=BROKEN))


def violation_map(
    violation: Mapping[str, Any], width: float = 440.0, height: float = 230.0
) -> Drawing | None:
    """The map of one violation (the review's JSON), `width` × `height` points; None
    when there is nothing to place (no fix and no position, as for a strap opened
    before any fix)."""
    alert = violation.get("alert") or {}
    features: Sequence[Mapping[str, Any]] = (violation.get("fixes") or {}).get("features") or []
    fixes = [
        (
            float(f["geometry"]["coordinates"][0]),
            float(f["geometry"]["coordinates"][1]),
            f.get("properties") or {},
        )
        for f in features
        if f.get("geometry")
    ]
    first = None
    if alert.get("lat") is not None and alert.get("lon") is not None:
        first = (float(alert["lon"]), float(alert["lat"]))
    anchors = [(lon, lat) for lon, lat, _ in fixes] + ([first] if first else [])
    if not anchors:
        return None
    rule = violation.get("rule") or {}
    inside_rule = bool(rule.get("must_be_inside", True))

    # A plane centred on the fixes; the extent around them (and the zone if not huge).
    lon0 = sum(a[0] for a in anchors) / len(anchors)
    lat0 = sum(a[1] for a in anchors) / len(anchors)
    plane = _Plane(lon0, lat0)
    points = [plane.xy(lon, lat) for lon, lat in anchors]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    west, east, south, north = min(xs), max(xs), min(ys), max(ys)
    zone = _zone_geometry(rule.get("zone"), plane)
    if zone is not None and not zone.is_empty:
        zw, zs, ze, zn = zone.bounds
        span = max(east - west, north - south, MIN_SPAN_M)
        if max(ze - zw, zn - zs) <= max(ZONE_WHOLE_FACTOR * span, ZONE_WHOLE_MIN_M):
            west, south, east, north = min(west, zw), min(south, zs), max(east, ze), max(north, zn)
    cx, cy = (west + east) / 2, (south + north) / 2
    span_x = max(east - west, MIN_SPAN_M) * 1.15
    span_y = max(north - south, MIN_SPAN_M) * 1.15
    # Same scale both ways: widen whichever side is short for the drawing's shape.
    scale = min(width / span_x, height / span_y)  # points per metre
    span_x, span_y = width / scale, height / scale
    west, south = cx - span_x / 2, cy - span_y / 2

    def to_pt(x: float, y: float) -> tuple[float, float]:
        return (x - west) * scale, (y - south) * scale

    d = Drawing(width, height)
    d.add(Rect(0, 0, width, height, fillColor=colors.Color(0.98, 0.98, 0.97), strokeColor=None))

    # The zone, clipped to the map.
    if zone is not None and not zone.is_empty:
        clipped = zone.intersection(box(west, south, west + span_x, south + span_y))
        for ring in _rings(clipped):
            path = Path(
                fillColor=INSIDE_FILL if inside_rule else OUTSIDE_FILL,
                strokeColor=INSIDE_EDGE if inside_rule else OUTSIDE_EDGE,
                strokeWidth=1.0,
                fillMode=0,  # even-odd: holes stay open
            )
            x0, y0 = to_pt(*ring[0])
            path.moveTo(x0, y0)
            for x, y in ring[1:]:
                path.lineTo(*to_pt(x, y))
            path.closePath()
            d.add(path)
        geometry = ((rule.get("zone") or {}).get("geometry")) or {}
        if geometry.get("type") == "Point":
            hx, hy = to_pt(*plane.xy(*geometry["coordinates"][:2]))
            if 0 <= hx <= width and 0 <= hy <= height:
                d.add(Line(hx - 4, hy, hx + 4, hy, strokeColor=INSIDE_EDGE, strokeWidth=0.8))
                d.add(Line(hx, hy - 4, hx, hy + 4, strokeColor=INSIDE_EDGE, strokeWidth=0.8))
                d.add(String(hx - 5, hy - 9, "home", fontName=FONT, fontSize=6.5, textAnchor="end"))

    placed = [(to_pt(*plane.xy(lon, lat)), props) for lon, lat, props in fixes]
    for (x, y), props in placed:
        acc = props.get("acc")
        if isinstance(acc, int | float) and acc * scale > 2.5:
            d.add(RLCircle(x, y, acc * scale, fillColor=ACCURACY, strokeColor=None))
    if len(placed) > 1:
        flat = [c for (xy, _) in placed for c in xy]
        d.add(PolyLine(flat, strokeColor=TRACK, strokeWidth=0.6))
    for (x, y), props in placed:
        v = props.get("violating")
        colour = UNKNOWN if v is None else BROKEN if v else KEPT
        d.add(RLCircle(x, y, 2.0, fillColor=colour, strokeColor=colors.white, strokeWidth=0.3))
    if first is not None:
        fx, fy = to_pt(*plane.xy(*first))
        d.add(RLCircle(fx, fy, 5.0, fillColor=None, strokeColor=BROKEN, strokeWidth=1.3))
        t = parse_time(alert.get("fix_time"))
        text = "first violating fix" + (f", {t:%H:%M:%S} UTC" if t else "")
        _halo_label(d, fx, fy, text, width, height)

    # Scale bar, bottom left; north arrow, top right; a frame.
    bar_m = _nice(span_x * 0.25)
    bar = bar_m * scale
    x0, y0 = 10.0, 10.0
    d.add(Rect(x0 - 4, y0 - 4, bar + 30, 18, fillColor=colors.white, strokeColor=None))
    half = bar / 2
    d.add(Rect(x0, y0, half, 3, fillColor=colors.black, strokeColor=colors.black, strokeWidth=0.4))
    d.add(
        Rect(
            x0 + half,
            y0,
            half,
            3,
            fillColor=colors.white,
            strokeColor=colors.black,
            strokeWidth=0.4,
        )
    )
    d.add(String(x0, y0 + 5, "0", fontName=FONT, fontSize=6.5))
    d.add(String(x0 + bar, y0 + 5, _label(bar_m), fontName=FONT, fontSize=6.5, textAnchor="middle"))
    nx, ny = width - 14, height - 26
    d.add(Line(nx, ny, nx, ny + 14, strokeColor=colors.black, strokeWidth=1))
    arrow = Path(fillColor=colors.black, strokeColor=None)
    arrow.moveTo(nx - 3.5, ny + 9)
    arrow.lineTo(nx, ny + 16)
    arrow.lineTo(nx + 3.5, ny + 9)
    arrow.closePath()
    d.add(arrow)
    d.add(String(nx, ny - 8, "N", fontName=FONT, fontSize=7.5, textAnchor="middle"))
    d.add(
        Rect(
            0,
            0,
            width,
            height,
            fillColor=None,
            strokeColor=colors.Color(0.4, 0.4, 0.4),
            strokeWidth=0.6,
        )
    )
    return d
