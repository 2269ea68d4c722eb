"""Zones as operators send them, GeoJSON Features, checked and turned into shapes.

Only RFC 7946 GeoJSON is accepted: WGS 84, positions ``[lon, lat]`` (an altitude may follow
and is ignored). A zone is refused with a reason that names the problem rather than being
guessed at, because a zone quietly read wrong puts someone in violation, or out of it, for
no reason they can see. The one exception is explicit: with ``properties.repair`` true,
an invalid polygon goes through ``shapely.make_valid`` and the spec says what was done.

The rules, by ``properties.kind``:

- ``home``: a Point with ``properties.radius_m`` in (0, 100 km].
- ``inclusion``: a Polygon or MultiPolygon (holes allowed), or a LineString or
  MultiLineString with ``properties.width_m`` in (0, 10 km], an allowed route (Corridor).
- ``exclusion``: a Polygon or MultiPolygon.

Swapped axes: a position whose second value is not a latitude while every first value
could be one is refused as "looks like [lat, lon]"; and when ``properties.expected_region``
gives a box ``[west, south, east, north]``, a geometry that falls outside it but would fall
inside with its axes swapped is refused the same way (one outside either way is refused as
outside the region). Nothing subtler is attempted: both orders are often plausible.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, cast, get_args

import pyproj
import shapely
from pyproj.exceptions import CRSError
from shapely import LineString, MultiLineString, MultiPolygon, Polygon

from geofences.model import Area, Circle, Corridor, Shape

__all__ = [
    "KINDS",
    "MAX_CORRIDOR_WIDTH_M",
    "MAX_HOME_RADIUS_M",
    "Kind",
    "ZoneCollectionError",
    "ZoneError",
    "ZoneSpec",
    "parse_collection",
    "parse_feature",
    "to_feature",
]

Kind: TypeAlias = Literal["home", "inclusion", "exclusion"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

MAX_HOME_RADIUS_M: Final = 100_000.0
# A corridor is a road or a route to work; wider than this it is an area, better drawn so.
MAX_CORRIDOR_WIDTH_M: Final = 10_000.0

# Names by which the old GeoJSON `crs` member may say "WGS 84, longitude first".
_WGS84_NAMES: Final = frozenset(
    {
        "urn:ogc:def:crs:OGC:1.3:CRS84",
        "urn:ogc:def:crs:OGC::CRS84",
        "OGC:CRS84",
        "CRS84",
        "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "EPSG:4326",
        "urn:ogc:def:crs:EPSG::4326",
        "http://www.opengis.net/def/crs/EPSG/0/4326",
    }
)

Position: TypeAlias = tuple[float, float]
Ring: TypeAlias = list[Position]


class ZoneError(Exception):
    """A zone that cannot be accepted: ``reason`` says why, ``feature_index`` which
    feature of a collection (None for a lone feature)."""

    def __init__(self, reason: str, feature_index: int | None = None) -> None:
        self.reason = reason
        self.feature_index = feature_index
        where = "" if feature_index is None else f"feature {feature_index}: "
        super().__init__(where + reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.feature_index))


class ZoneCollectionError(ZoneError):
    """Every bad feature of a collection at once, so that a file is fixed in one pass."""

    def __init__(self, errors: Iterable[ZoneError]) -> None:
        self.errors: tuple[ZoneError, ...] = tuple(errors)
        listed = "; ".join(str(e) for e in self.errors)
        super().__init__(f"{len(self.errors)} invalid feature(s): {listed}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A checked zone. ``properties`` is a copy of the feature's properties, all of them;
    ``repairs`` lists what was changed to accept it (empty unless asked for)."""

    kind: Kind
    shape: Shape
    properties: dict[str, Any]
    schedule: dict[str, Any] | None = None
    name: str | None = None
    repairs: tuple[str, ...] = ()


class _Refused(Exception):
    """Internal: raised with a reason deep in the parsing, turned into a ZoneError."""


def _number(value: object, where: str) -> float:
    # bool is an int in Python, and `true` is not a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"{where} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise _Refused(f"{where} is not a finite number ({value!r})")
    return number


def _position(value: object, where: str) -> Position:
    if not isinstance(value, list | tuple) or not 2 <= len(value) <= 3:
        raise _Refused(f"{where} must be a position [lon, lat], not {value!r}")
    for i, v in enumerate(value):
        _number(v, f"{where}[{i}]")
    return float(value[0]), float(value[1])


def _array(value: object, where: str) -> Sequence[object]:
    if not isinstance(value, list | tuple):
        raise _Refused(f"{where} must be an array, not {value!r}")
    return value


def _line(value: object, where: str) -> list[Position]:
    return [_position(p, f"{where}[{i}]") for i, p in enumerate(_array(value, where))]


def _ring(value: object, where: str) -> Ring:
    ring = _line(value, where)
    if len(ring) < 4:
        raise _Refused(f"ring {where} has {len(ring)} positions; a closed ring needs at least 4")
    if ring[0] != ring[-1]:
        raise _Refused(f"ring {where} is not closed: its first and last positions differ")
    return ring


def _polygon(value: object, where: str) -> list[Ring]:
    rings = [_ring(r, f"{where}[{i}]") for i, r in enumerate(_array(value, where))]
    if not rings:
        raise _Refused(f"{where} has no exterior ring")
    return rings


def _check_crs(crs: object, where: str) -> None:
    """The pre-RFC 7946 `crs` member: tolerated only when it says WGS 84 lon/lat."""
    if crs is None:
        return
    name = None
    if isinstance(crs, Mapping) and crs.get("type") == "name":
        props = crs.get("properties")
        if isinstance(props, Mapping) and isinstance(props.get("name"), str):
            name = cast(str, props["name"])
    if name is None:
        raise _Refused(f"{where} is not a named CRS; RFC 7946 GeoJSON has no crs member")
    if name in _WGS84_NAMES:
        return
    try:
        parsed = pyproj.CRS.from_user_input(name)
    except CRSError:
        raise _Refused(f"{where} names an unknown CRS {name!r}; only WGS 84 lon/lat") from None
    if parsed.is_projected:
        raise _Refused(
            f"{where} names a projected CRS ({name}, {parsed.name}); RFC 7946 GeoJSON is "
            "WGS 84 [lon, lat] in degrees: reproject the zone first"
        )
    raise _Refused(f"{where} names {name} ({parsed.name}); only WGS 84 [lon, lat] is accepted")


def _check_range(positions: Sequence[Position], props: Mapping[str, Any]) -> None:
    firsts = [p[0] for p in positions]
    seconds = [p[1] for p in positions]
    lat_bad = any(abs(v) > 90.0 for v in seconds)
    lon_bad = any(abs(v) > 180.0 for v in firsts)
    if lat_bad and all(abs(v) <= 90.0 for v in firsts) and all(abs(v) <= 180.0 for v in seconds):
        raise _Refused(
            "coordinates look like [lat, lon]: a second value is outside [-90, 90]; "
            "RFC 7946 positions are [longitude, latitude]"
        )
    if lat_bad:
        worst = max(seconds, key=abs)
        raise _Refused(f"latitude {worst} is outside [-90, 90]")
    if lon_bad:
        worst = max(firsts, key=abs)
        raise _Refused(f"longitude {worst} is outside [-180, 180]")
    region = props.get("expected_region")
    if region is None:
        return
    if not isinstance(region, list | tuple) or len(region) != 4:
        raise _Refused("properties.expected_region must be [west, south, east, north]")
    west, south, east, north = (
        _number(v, f"properties.expected_region[{i}]") for i, v in enumerate(region)
    )

    def inside(lon: float, lat: float) -> bool:
        in_lon = west <= lon <= east if west <= east else (lon >= west or lon <= east)
        return in_lon and south <= lat <= north

    if all(inside(lon, lat) for lon, lat in positions):
        return
    if all(inside(lat, lon) for lon, lat in positions):
        raise _Refused(
            "coordinates look like [lat, lon]: swapped, they fall in properties.expected_region;"
            " RFC 7946 positions are [longitude, latitude]"
        )
    raise _Refused("the geometry lies outside properties.expected_region")


def _encloses_nothing(ring: Ring) -> bool:
    """Whether every position lies on one line through the first (to a relative 1e-12):
    a ring with no area, whatever shapely would later say about its validity. A signed
    area would not do: a symmetric bow tie sums to zero too."""
    x0, y0 = ring[0]
    offsets = [(x - x0, y - y0) for x, y in ring if (x, y) != (x0, y0)]
    if not offsets:
        return True
    ux, uy = max(offsets, key=lambda v: abs(v[0]) + abs(v[1]))
    scale = math.hypot(ux, uy)
    return all(abs(ux * vy - uy * vx) <= 1e-12 * scale * math.hypot(vx, vy) for vx, vy in offsets)


def _lon_span_ok(rings: Iterable[Ring], where: str) -> None:
    lons = [lon for ring in rings for lon, _ in ring]
    if lons and max(lons) - min(lons) > 180.0:
        raise _Refused(
            f"{where} spans more than 180° of longitude; a zone across the antimeridian must "
            "be split there into a MultiPolygon (RFC 7946 §3.1.9)"
        )


def _polygonal(
    gtype: str, coordinates: object, props: Mapping[str, Any]
) -> tuple[Area, tuple[str, ...]]:
    if gtype == "Polygon":
        polygons = [_polygon(coordinates, "coordinates")]
    else:
        polygons = [
            _polygon(p, f"coordinates[{i}]")
            for i, p in enumerate(_array(coordinates, "coordinates"))
        ]
        if not polygons:
            raise _Refused("the MultiPolygon has no polygon")
    positions = [p for poly in polygons for ring in poly for p in ring]
    _check_range(positions, props)
    for i, poly in enumerate(polygons):
        where = "the polygon" if gtype == "Polygon" else f"polygon {i}"
        _lon_span_ok(poly, where)
        for j, ring in enumerate(poly):
            if _encloses_nothing(ring):
                what = "exterior ring" if j == 0 else f"hole {j}"
                raise _Refused(f"{where} has zero area: its {what} encloses nothing")
    shells = [Polygon(poly[0], poly[1:]) for poly in polygons]
    geometry: Any = shells[0] if gtype == "Polygon" else MultiPolygon(shells)
    repairs: tuple[str, ...] = ()
    if not shapely.is_valid(geometry):
        reason = str(shapely.is_valid_reason(geometry))
        if props.get("repair") is not True:
            label = "self-intersecting ring" if "Self-intersection" in reason else "invalid"
            raise _Refused(
                f"{label} ({reason}); fix the geometry, or set properties.repair to true "
                "to accept shapely.make_valid's repair"
            )
        geometry = _make_valid(geometry)
        repairs = (f"made valid with shapely.make_valid ({reason}): now a {geometry.geom_type}",)
    if shapely.area(geometry) == 0.0:
        raise _Refused("zero area")
    return Area(geometry), repairs


def _make_valid(geometry: Any) -> Any:
    fixed = shapely.make_valid(geometry)
    # make_valid may return lines or points beside the polygons; a zone is only its area.
    parts = [g for g in shapely.get_parts(fixed) if isinstance(g, Polygon | MultiPolygon)]
    if not parts:
        raise _Refused("shapely.make_valid left no area: the zone encloses nothing")
    joined = shapely.union_all(parts)
    if isinstance(joined, Polygon | MultiPolygon) and not joined.is_empty:
        return joined
    raise _Refused("shapely.make_valid left no area: the zone encloses nothing")


def _positive(props: Mapping[str, Any], key: str, limit: float, needed_for: str) -> float:
    if key not in props or props[key] is None:
        raise _Refused(f"{needed_for} needs properties.{key}")
    value = _number(props[key], f"properties.{key}")
    if not 0.0 < value <= limit:
        raise _Refused(f"properties.{key} must be in (0, {limit:g}] metres, not {value:g}")
    return value


def _corridor(gtype: str, coordinates: object, props: Mapping[str, Any]) -> Corridor:
    if gtype == "LineString":
        lines = [_line(coordinates, "coordinates")]
    else:
        lines = [
            _line(p, f"coordinates[{i}]") for i, p in enumerate(_array(coordinates, "coordinates"))
        ]
        if not lines:
            raise _Refused("the MultiLineString has no line")
    for i, line in enumerate(lines):
        if len(set(line)) < 2:
            raise _Refused(f"line {i} needs at least two distinct positions")
    positions = [p for line in lines for p in line]
    _check_range(positions, props)
    _lon_span_ok(lines, "the line")
    width = _positive(props, "width_m", MAX_CORRIDOR_WIDTH_M, "a corridor (LineString)")
    geometry: Any = LineString(lines[0]) if gtype == "LineString" else MultiLineString(lines)
    return Corridor(geometry, width)


def _build(
    kind: Kind, geometry: Mapping[str, Any], props: Mapping[str, Any]
) -> tuple[Shape, tuple[str, ...]]:
    gtype = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if coordinates is None:
        raise _Refused(f"the {gtype} geometry has no coordinates")
    if kind == "home":
        if gtype != "Point":
            raise _Refused(f"a home must be a Point with properties.radius_m, not a {gtype}")
        lon, lat = _position(coordinates, "coordinates")
        _check_range([(lon, lat)], props)
        radius = _positive(props, "radius_m", MAX_HOME_RADIUS_M, "a home")
        return Circle(lon, lat, radius), ()
    if gtype in ("Polygon", "MultiPolygon"):
        return _polygonal(str(gtype), coordinates, props)
    if gtype in ("LineString", "MultiLineString"):
        if kind != "inclusion":
            raise _Refused(
                "a LineString (corridor) is only allowed for inclusion zones; draw an "
                f"{kind} zone as a Polygon"
            )
        return _corridor(str(gtype), coordinates, props), ()
    if gtype == "Point":
        raise _Refused(f"an {kind} zone must be a Polygon or MultiPolygon; a Point is a home")
    raise _Refused(f"an {kind} zone must be a Polygon or MultiPolygon, not {gtype!r}")


def parse_feature(feature: object, *, index: int | None = None) -> ZoneSpec:
    """Check one GeoJSON Feature and return its zone, or raise ZoneError saying why not.

    ``index`` is only reported back in the error (its place in a collection).
    """
    try:
        return _parse(feature)
    except _Refused as refused:
        raise ZoneError(str(refused), index) from None


def _parse(feature: object) -> ZoneSpec:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise _Refused('not a GeoJSON Feature (an object with "type": "Feature")')
    props_raw = feature.get("properties")
    if props_raw is None:
        props_raw = {}
    if not isinstance(props_raw, Mapping):
        raise _Refused(f"properties must be an object, not {props_raw!r}")
    props: dict[str, Any] = copy.deepcopy(dict(props_raw))
    kind = props.get("kind")
    if kind is None:
        raise _Refused("properties.kind is missing: expected home, inclusion or exclusion")
    if kind not in KINDS:
        raise _Refused(f"unknown kind {kind!r}: expected home, inclusion or exclusion")
    _check_crs(feature.get("crs"), "the feature's crs member")
    geometry = feature.get("geometry")
    if geometry is None:
        raise _Refused("missing geometry")
    if not isinstance(geometry, Mapping) or not isinstance(geometry.get("type"), str):
        raise _Refused(f"geometry must be a GeoJSON geometry object, not {geometry!r}")
    _check_crs(geometry.get("crs"), "the geometry's crs member")
    name = props.get("name")
    if name is not None and not isinstance(name, str):
        raise _Refused(f"properties.name must be a string, not {name!r}")
    schedule = props.get("schedule")
    if schedule is not None and not isinstance(schedule, Mapping):
        raise _Refused(f"properties.schedule must be an object, not {schedule!r}")
    shape, repairs = _build(cast(Kind, kind), geometry, props)
    return ZoneSpec(
        kind=cast(Kind, kind),
        shape=shape,
        properties=props,
        schedule=None if schedule is None else copy.deepcopy(dict(schedule)),
        name=name,
        repairs=repairs,
    )


def parse_collection(fc: object) -> list[ZoneSpec]:
    """Check every feature of a FeatureCollection; raise ZoneCollectionError listing each
    bad one (by its index) if any is bad, so that nothing is half-accepted."""
    if not isinstance(fc, Mapping) or fc.get("type") != "FeatureCollection":
        raise ZoneError(
            'not a GeoJSON FeatureCollection (an object with "type": "FeatureCollection")'
        )
    try:
        _check_crs(fc.get("crs"), "the collection's crs member")
    except _Refused as refused:
        raise ZoneError(str(refused)) from None
    features = fc.get("features")
    if not isinstance(features, list):
        raise ZoneError("the FeatureCollection has no features array")
    specs: list[ZoneSpec] = []
    errors: list[ZoneError] = []
    for i, feature in enumerate(features):
        try:
            specs.append(parse_feature(feature, index=i))
        except ZoneError as error:
            errors.append(error)
    if errors:
        raise ZoneCollectionError(errors)
    return specs


def _coords(geometry: Any) -> list[list[float]]:
    return [[float(x), float(y)] for x, y in shapely.get_coordinates(geometry)]


def _polygon_coords(polygon: Any) -> list[list[list[float]]]:
    return [_coords(polygon.exterior)] + [_coords(ring) for ring in polygon.interiors]


def _geometry(shape: Shape) -> dict[str, Any]:
    if isinstance(shape, Circle):
        return {"type": "Point", "coordinates": [shape.lon, shape.lat]}
    if isinstance(shape, Area):
        g = shape.geometry
        if isinstance(g, Polygon):
            return {"type": "Polygon", "coordinates": _polygon_coords(g)}
        return {"type": "MultiPolygon", "coordinates": [_polygon_coords(p) for p in g.geoms]}
    line = shape.line
    if isinstance(line, LineString):
        return {"type": "LineString", "coordinates": _coords(line)}
    return {"type": "MultiLineString", "coordinates": [_coords(part) for part in line.geoms]}


def to_feature(spec: ZoneSpec) -> dict[str, Any]:
    """The zone back as an RFC 7946 GeoJSON Feature (``parse_feature`` of it gives ``spec``
    back, repairs aside: a repaired geometry is valid and needs none the second time)."""
    props = copy.deepcopy(spec.properties)
    props["kind"] = spec.kind
    if spec.name is not None:
        props["name"] = spec.name
    if spec.schedule is not None:
        props["schedule"] = copy.deepcopy(spec.schedule)
    if isinstance(spec.shape, Circle):
        props["radius_m"] = spec.shape.radius_m
    elif isinstance(spec.shape, Corridor):
        props["width_m"] = spec.shape.width_m
    return {"type": "Feature", "geometry": _geometry(spec.shape), "properties": props}
