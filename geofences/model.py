"""Zone shapes, immutable, and their signed margin in metres.

A margin is the distance from a point to the shape's boundary, negative inside and
positive outside, so ``margin <= 0`` is inside, and a fix with accuracy radius ``acc`` is
surely inside when ``margin <= -acc``, surely outside when ``margin > acc``, and possibly
either in between.

Edges follow RFC 7946: a line between two positions is straight in longitude and latitude.
Containment is therefore decided exactly in lon/lat (shapely's ``contains_xy``), and
distances are measured to those lon/lat-straight edges in metres on the WGS 84 ellipsoid.
Projecting the vertices into a local plane instead would bend the edges: a 30 km
east-west edge at 51° bows by about 20 m in an azimuthal projection, so containment and
distance would disagree unless every edge were densified, which costs far more than it
saves.

How a distance to the boundary is found, for many points at once:

1. every edge is measured in the flat metric of the point itself (metres per degree at its
   latitude), one numpy broadcast over points × edges, in cache-sized slices;
2. that metric misjudges a distance d by up to about d·(1 + |tan φ|)/R, so every edge
   within twice that of the nearest stays a candidate: usually one edge, or the two that
   meet at the nearest vertex;
3. on each candidate the foot is moved by one Newton step in the metric of the mid
   latitude between the point and its foot, turned by half the meridian convergence,
   which removes the first-order error of the flat metric;
4. the exact geodesic distance to each refined foot is computed (``geodesy.distance_m``)
   and the least kept.

Accuracy, against a reference that minimises Karney's geodesic distance along each edge
(tests/unit/geofences/test_geofences_model.py): under 0.1 mm for points within 15 km of
the boundary of zones 30 km across, at any latitude up to ±85°, and a few centimetres at
worst farther out, where it no longer changes any decision. The result is always the
exact distance to some point of the boundary, so (up to the sub-millimetre error of
geodesy.distance_m) it can only err by being too long.
Cost: about 1.3 M points/s against a 20-edge polygon on one core here, growing linearly
with the number of edges. Zones must span less than 180° of longitude;
geometries split at the antimeridian (RFC 7946 §3.1.9) are joined back for the purpose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final, TypeAlias

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely import LineString, MultiLineString, MultiPolygon, Polygon

from geofences.geodesy import (
    MIN_RADIUS_M,
    WGS84_A,
    WGS84_E2,
    FloatArray,
    circle_bounds,
    distance_m,
    metres_per_degree,
    wrap_longitude,
)

__all__ = [
    "Area",
    "BoolArray",
    "Circle",
    "Corridor",
    "Shape",
    "bounds",
    "margin_m",
    "margins_m",
    "segment_crosses",
    "segment_depth_m",
    "segment_leaves",
]

BoolArray = NDArray[np.bool_]

# Cells of the points × edges matrix handled at once: small enough for the temporaries to
# stay in cache, large enough that Python's per-slice overhead does not dominate.
_CELLS: Final = 65_536
_MIN_ROWS: Final = 64
_MAX_ROWS: Final = 16_384

# A round Earth radius, for error bounds only.
_R: Final = 6_371_000.0


def _finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Circle:
    """The points within ``radius_m`` metres (geodesic) of (lon, lat): a home radius."""

    lon: float
    lat: float
    radius_m: float

    def __post_init__(self) -> None:
        lon = _finite(self.lon, "lon")
        lat = _finite(self.lat, "lat")
        radius = _finite(self.radius_m, "radius_m")
        if not -180.0 <= lon <= 180.0 or not -90.0 <= lat <= 90.0:
            raise ValueError(f"centre ({lon}, {lat}) is not a WGS 84 [lon, lat] position")
        if radius <= 0.0:
            raise ValueError(f"radius_m must be positive, not {radius}")


@dataclass(frozen=True, slots=True)
class _Outline:
    """Edges and interior of an Area or Corridor, prepared once for vectorised queries.

    Coordinates are in a continuous longitude frame centred on ``centre_lon`` (they may
    exceed 180 for a zone on the antimeridian); points are wrapped into the same frame.
    """

    centre_lon: float
    ax: FloatArray
    ay: FloatArray
    dx: FloatArray
    dy: FloatArray
    geometry: Any  # the shape's geometry in this frame, prepared for shapely predicates


def _continuous(geometry: Any) -> tuple[Any, float]:
    """The geometry in the longitude frame where it is narrowest, and that frame's centre."""
    lons = shapely.get_coordinates(geometry)[:, 0]
    west, east = float(lons.min()), float(lons.max())
    if east - west > 180.0:
        shifted_lons = np.where(lons < 0.0, lons + 360.0, lons)
        s_west, s_east = float(shifted_lons.min()), float(shifted_lons.max())
        if s_east - s_west < east - west:

            def shift(xy: FloatArray) -> FloatArray:
                out = xy.copy()
                out[:, 0] = np.where(xy[:, 0] < 0.0, xy[:, 0] + 360.0, xy[:, 0])
                return out

            geometry = shapely.transform(geometry, shift)
            if isinstance(geometry, MultiPolygon):
                # Parts split at ±180 now share an edge at 180; joining them removes that
                # edge, which is not a boundary anyone can cross.
                geometry = shapely.union_all(shapely.get_parts(geometry))
            west, east = s_west, s_east
    return geometry, 0.5 * (west + east)


def _prepare_outline(geometry: Any, polygonal: bool) -> _Outline:
    geometry, centre = _continuous(geometry)
    parts = shapely.get_parts(geometry)
    paths = shapely.get_rings(parts) if polygonal else parts
    coords, which = shapely.get_coordinates(paths, return_index=True)
    same_path = which[:-1] == which[1:]
    a = coords[:-1][same_path]
    b = coords[1:][same_path]
    # Repeated vertices make zero-length edges, which have no direction to project onto.
    proper = np.any(a != b, axis=1)
    a, b = a[proper], b[proper]
    if a.shape[0] == 0:
        raise ValueError("the geometry has no edge of non-zero length")
    shapely.prepare(geometry)
    return _Outline(
        centre_lon=centre,
        ax=np.ascontiguousarray(a[:, 0]),
        ay=np.ascontiguousarray(a[:, 1]),
        dx=np.ascontiguousarray(b[:, 0] - a[:, 0]),
        dy=np.ascontiguousarray(b[:, 1] - a[:, 1]),
        geometry=geometry,
    )


@dataclass(frozen=True, slots=True)
class Area:
    """A Polygon or MultiPolygon in WGS 84 lon/lat, holes allowed (valid, not empty)."""

    geometry: Polygon | MultiPolygon
    _outline: _Outline | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, Polygon | MultiPolygon):
            raise TypeError(f"an Area needs a Polygon or MultiPolygon, not {self.geometry!r}")
        if self.geometry.is_empty:
            raise ValueError("an Area cannot be empty")
        if not shapely.is_valid(self.geometry):
            raise ValueError(f"invalid geometry: {shapely.is_valid_reason(self.geometry)}")

    @property
    def outline(self) -> _Outline:
        """Edges and prepared interior, built on first use (indexes hold thousands of zones
        of which most are never near a fix) and kept."""
        outline = self._outline
        if outline is None:
            outline = _prepare_outline(self.geometry, polygonal=True)
            object.__setattr__(self, "_outline", outline)
        return outline


@dataclass(frozen=True, slots=True)
class Corridor:
    """An allowed route: the points within ``width_m`` metres of a LineString (or
    MultiLineString) in WGS 84 lon/lat, on either side, with round ends."""

    line: LineString | MultiLineString
    width_m: float
    _outline: _Outline | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.line, LineString | MultiLineString):
            raise TypeError(f"a Corridor needs a LineString, not {self.line!r}")
        if self.line.is_empty:
            raise ValueError("a Corridor cannot be empty")
        width = _finite(self.width_m, "width_m")
        if width <= 0.0:
            raise ValueError(f"width_m must be positive, not {width}")

    @property
    def outline(self) -> _Outline:
        """Edges of the line, built on first use and kept."""
        outline = self._outline
        if outline is None:
            outline = _prepare_outline(self.line, polygonal=False)
            object.__setattr__(self, "_outline", outline)
        return outline


Shape: TypeAlias = Circle | Area | Corridor


def _refine(
    plon: FloatArray,
    plat: FloatArray,
    alon: FloatArray,
    alat: FloatArray,
    dlon: FloatArray,
    dlat: FloatArray,
    t: FloatArray,
) -> FloatArray:
    """One Newton step for the foot of P on the segment A + t·D (step 3 of the module
    docstring), elementwise: returns the improved t, clamped to [0, 1]."""
    qlon = alon + t * dlon
    qlat = alat + t * dlat
    mid = np.radians(0.5 * (plat + qlat))
    sm = np.sin(mid)
    cm = np.cos(mid)
    w2 = 1.0 - WGS84_E2 * sm * sm
    n_mid = WGS84_A / np.sqrt(w2)  # prime-vertical radius
    m_mid = n_mid * (1.0 - WGS84_E2) / w2  # meridional radius
    wlon = np.radians(plon - qlon)
    # Q→P in the metric of the mid latitude gives the geodesic's direction at the midpoint;
    # turning it by half the meridian convergence gives its direction at Q.
    wx = wlon * n_mid * cm
    wy = np.radians(plat - qlat) * m_mid
    gamma = 0.5 * wlon * sm
    cos_g = 1.0 - 0.5 * gamma * gamma
    ex = wx * cos_g - wy * gamma
    ey = wx * gamma + wy * cos_g
    # The edge's direction at Q. cos φ_Q from the mid latitude by the angle-sum formula:
    # within tens of kilometres, where accuracy matters, the half difference is a few
    # milliradians and two series terms are exact to 1e-9. M and N change by under 1e-4
    # over that span, which moves the foot by centimetres and the distance by far less.
    half = np.radians(0.5 * (qlat - plat))
    cos_q = cm * (1.0 - 0.5 * half * half) - sm * half
    tx = np.radians(dlon) * n_mid * cos_q
    ty = np.radians(dlat) * m_mid
    tt = tx * tx + ty * ty
    step = np.divide(tx * ex + ty * ey, tt, out=np.zeros_like(tt), where=tt > 0.0)
    return np.asarray(np.clip(t + step, 0.0, 1.0), dtype=np.float64)


def _foot_distance(
    plon: FloatArray,
    plat: FloatArray,
    alon: FloatArray,
    alat: FloatArray,
    dlon: FloatArray,
    dlat: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Distance in metres from P to the lon/lat-straight segment A + t·D, t in [0, 1],
    elementwise, and the t of the foot (steps 1, 3 and 4 of the module docstring for a
    single segment)."""
    kx, ky = metres_per_degree(plat)
    t = _project(alon - plon, alat - plat, dlon, dlat, kx, ky)
    t = _refine(plon, plat, alon, alat, dlon, dlat, t)
    return distance_m(plon, plat, alon + t * dlon, alat + t * dlat), t


def _project(
    ux: FloatArray, uy: FloatArray, dlon: FloatArray, dlat: FloatArray, kx: Any, ky: Any
) -> FloatArray:
    """t in [0, 1] of the foot of P on A + t·D in a flat metric; u = A - P in degrees."""
    vx = dlon * kx
    vy = dlat * ky
    vv = vx * vx + vy * vy
    num = -(ux * kx * vx + uy * ky * vy)
    t = np.divide(num, vv, out=np.zeros_like(vv), where=vv > 0.0)
    return np.asarray(np.clip(t, 0.0, 1.0), dtype=np.float64)


def _nearest_on(
    plon: FloatArray, plat: FloatArray, outline: _Outline, edge: NDArray[np.intp], t: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Steps 3 and 4 for each point and a candidate edge, from the flat-metric foot t."""
    ax, ay, dx, dy = outline.ax[edge], outline.ay[edge], outline.dx[edge], outline.dy[edge]
    t = _refine(plon, plat, ax, ay, dx, dy, t)
    return distance_m(plon, plat, ax + t * dx, ay + t * dy), t


def _outline_distance(outline: _Outline, lon: FloatArray, lat: FloatArray) -> FloatArray:
    """Distance in metres from each point (1-D, already in the outline's frame) to the
    nearest edge of the outline."""
    count = lon.size
    edges = outline.ax.size
    rows = min(_MAX_ROWS, max(_MIN_ROWS, _CELLS // edges))
    out = np.empty(count, dtype=np.float64)
    ax, ay, dx, dy = outline.ax, outline.ay, outline.dx, outline.dy
    for start in range(0, count, rows):
        stop = min(start + rows, count)
        plon = lon[start:stop]
        plat = lat[start:stop]
        kx, ky = metres_per_degree(plat)
        kxc = kx[:, None]
        kyc = ky[:, None]
        ux = ax - plon[:, None]
        uy = ay - plat[:, None]
        t = _project(ux, uy, dx, dy, kxc, kyc)
        ex = (ux + t * dx) * kxc
        ey = (uy + t * dy) * kyc
        d2 = ex * ex + ey * ey
        # The flat metric of P misjudges a distance d by up to about d·(1 + |tan φ|)/R,
        # so any edge that close to the best is measured properly too (twice the bound, to
        # be safe): usually the best alone, or the two edges meeting at its vertex.
        rows_idx = np.arange(stop - start)
        best = np.argmin(d2, axis=1)
        best_d2 = d2[rows_idx, best]
        slack = 1.0 + 2.0 * np.sqrt(best_d2) * (1.0 + np.abs(np.tan(np.radians(plat)))) / _R
        band = d2 <= (best_d2 * slack * slack)[:, None]
        band[rows_idx, best] = True  # a NaN row keeps one (NaN) candidate
        row_c, edge_c = np.nonzero(band)
        dist_c, _ = _nearest_on(plon[row_c], plat[row_c], outline, edge_c, t[row_c, edge_c])
        # np.nonzero walks rows in order, and every row has a candidate.
        firsts = np.flatnonzero(np.r_[True, row_c[1:] != row_c[:-1]])
        dist = np.minimum.reduceat(dist_c, firsts)
        out[start:stop] = dist
    return out


def _flat(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray, tuple[int, ...]]:
    lon_a, lat_a = np.broadcast_arrays(
        np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    )
    return lon_a.ravel(), lat_a.ravel(), lon_a.shape


def margin_m(shape: Shape, lon: ArrayLike, lat: ArrayLike) -> FloatArray:
    """Signed distance in metres from each point to the shape's boundary: negative inside,
    positive outside, zero on it; NaN for a non-finite position. Broadcasts lon and lat.

    Circle: geodesic distance to the centre minus the radius (error under 1 mm up to
    50 km from the centre, exact geodesic beyond). Area and Corridor: see the module
    docstring (a few millimetres within 15 km of zones up to 30 km across).
    """
    lon_f, lat_f, out_shape = _flat(lon, lat)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if isinstance(shape, Circle):
            result = distance_m(shape.lon, shape.lat, lon_f, lat_f) - shape.radius_m
        else:
            outline = shape.outline
            lon_w = wrap_longitude(lon_f, outline.centre_lon)
            dist = _outline_distance(outline, lon_w, lat_f)
            if isinstance(shape, Corridor):
                result = dist - shape.width_m
            else:
                inside = shapely.contains_xy(outline.geometry, lon_w, lat_f)
                result = np.where(inside, -dist, dist)
        bad = ~(np.isfinite(lon_f) & np.isfinite(lat_f))
        if np.any(bad):
            result[bad] = np.nan
    return np.asarray(result, dtype=np.float64).reshape(out_shape)


def margins_m(shapes: Sequence[Shape], lon: ArrayLike, lat: ArrayLike) -> FloatArray:
    """`margin_m` of many (shape, point) pairs at once: element i is the margin of point
    (lon[i], lat[i]) to shapes[i]. All circles are measured in one array pass (a batch of
    fixes from thousands of subjects, each against its own home circle, costs about what
    one subject's does); every other shape once with all of its points."""
    lon_f, lat_f, out_shape = _flat(lon, lat)
    if len(shapes) != lon_f.size:
        raise ValueError(f"{len(shapes)} shapes for {lon_f.size} points")
    out = np.empty(lon_f.size, dtype=np.float64)
    is_circle = [isinstance(s, Circle) for s in shapes]
    circles = [s for s in shapes if isinstance(s, Circle)]
    if circles:
        idx = np.flatnonzero(np.array(is_circle, dtype=bool))
        n = len(circles)
        centre_lon = np.fromiter(map(attrgetter("lon"), circles), dtype=np.float64, count=n)
        centre_lat = np.fromiter(map(attrgetter("lat"), circles), dtype=np.float64, count=n)
        radius = np.fromiter(map(attrgetter("radius_m"), circles), dtype=np.float64, count=n)
        with np.errstate(invalid="ignore", over="ignore"):
            # The same call, with the same argument order, as margin_m for one circle.
            out[idx] = distance_m(centre_lon, centre_lat, lon_f[idx], lat_f[idx]) - radius
    others: dict[int, list[int]] = {}
    if len(circles) < len(shapes):
        for i, s in enumerate(shapes):
            if not is_circle[i]:
                others.setdefault(id(s), []).append(i)
    for group in others.values():
        idx = np.array(group, dtype=np.intp)
        out[idx] = margin_m(shapes[group[0]], lon_f[idx], lat_f[idx])
    out[~(np.isfinite(lon_f) & np.isfinite(lat_f))] = np.nan
    return out.reshape(out_shape)


def _lon_extent(lons: FloatArray) -> tuple[float, float]:
    """(west, east) of the narrowest longitude range holding ``lons``: west > east when it
    crosses the antimeridian (assumes the points span less than half the globe)."""
    west, east = float(lons.min()), float(lons.max())
    if east - west <= 180.0:
        return west, east
    shifted = np.where(lons < 0.0, lons + 360.0, lons)
    s_west, s_east = float(shifted.min()), float(shifted.max())
    if s_east - s_west >= east - west:
        return west, east
    return float(wrap_longitude(s_west)), float(wrap_longitude(s_east))


def _grow(
    box: tuple[float, float, float, float], margin: float
) -> tuple[float, float, float, float]:
    """A lon/lat box grown by ``margin`` metres on every side (over-estimated)."""
    west, south, east, north = box
    delta = math.degrees(margin / MIN_RADIUS_M) * (1 + 1e-9) + 1e-9
    south -= delta
    north += delta
    if south <= -90.0 or north >= 90.0:
        return -180.0, max(south, -90.0), 180.0, min(north, 90.0)
    widest = max(abs(south), abs(north))
    half = delta / math.cos(math.radians(widest))
    span = (east - west) % 360.0
    if span + 2 * half >= 360.0:
        return -180.0, south, 180.0, north
    west = float(wrap_longitude(west - half))
    east = float(wrap_longitude(east + half))
    if east == -180.0:
        east = 180.0
    return west, south, east, north


def bounds(shape: Shape) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` in degrees holding the shape; as in RFC 7946 §5.2,
    ``west > east`` when it crosses the antimeridian. Circles and corridors are padded
    slightly: the box is meant for spatial indexes, where too small would be wrong."""
    if isinstance(shape, Circle):
        return circle_bounds(shape.lon, shape.lat, shape.radius_m)
    geometry = shape.geometry if isinstance(shape, Area) else shape.line
    b_west, south, b_east, north = (float(v) for v in shapely.bounds(geometry))
    if b_east - b_west > 180.0:
        west, east = _lon_extent(shapely.get_coordinates(geometry)[:, 0])
    else:
        west, east = b_west, b_east
    if isinstance(shape, Corridor):
        return _grow((west, south, east, north), shape.width_m)
    return west, south, east, north


def segment_crosses(
    shape: Shape, lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
) -> BoolArray:
    """Whether the straight segment from fix 1 to fix 2 touches the shape anywhere
    (boundary included), for crossings between sparse fixes; broadcast, elementwise.

    "Straight" is in lon/lat, as for zone edges (RFC 7946), taking the shorter way round
    across the antimeridian. A degenerate segment asks whether the point is in the shape.
    NaN positions give False.
    """
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2))
    )
    out_shape = arrays[0].shape
    a_lon, a_lat, b_lon, b_lat = (np.ascontiguousarray(v).ravel() for v in arrays)
    ok = np.isfinite(a_lon) & np.isfinite(a_lat) & np.isfinite(b_lon) & np.isfinite(b_lat)
    result = np.zeros(a_lon.size, dtype=np.bool_)
    if not np.any(ok):
        return result.reshape(out_shape)
    a_lon, a_lat, b_lon, b_lat = a_lon[ok], a_lat[ok], b_lon[ok], b_lat[ok]
    centre = shape.lon if isinstance(shape, Circle) else shape.outline.centre_lon
    a_lon = wrap_longitude(a_lon, centre)
    # The end is taken the short way round from the start.
    b_lon = wrap_longitude(b_lon, a_lon)
    d_lon = b_lon - a_lon
    d_lat = b_lat - a_lat
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if isinstance(shape, Circle):
            plon = np.full(a_lon.shape, shape.lon)
            plat = np.full(a_lon.shape, shape.lat)
            dist, _ = _foot_distance(plon, plat, a_lon, a_lat, d_lon, d_lat)
            hit = dist <= shape.radius_m
        elif isinstance(shape, Area):
            lines = shapely.linestrings(
                np.stack(
                    [np.stack([a_lon, a_lat], axis=1), np.stack([b_lon, b_lat], axis=1)], axis=1
                )
            )
            hit = np.asarray(shapely.intersects(shape.outline.geometry, lines), dtype=np.bool_)
            # A line whose ends coincide is not a proper line for GEOS: ask about the point.
            still = (d_lon == 0.0) & (d_lat == 0.0)
            if np.any(still):
                hit[still] = margin_m(shape, a_lon[still], a_lat[still]) <= 0.0
        else:
            hit = _corridor_crosses(shape, a_lon, a_lat, d_lon, d_lat)
    result[ok] = hit
    return result.reshape(out_shape)


def _corridor_crosses(
    corridor: Corridor, a_lon: FloatArray, a_lat: FloatArray, d_lon: FloatArray, d_lat: FloatArray
) -> BoolArray:
    """The closest approach of two segments that do not cross is at an end of one of them,
    so a fix segment meets the corridor when either fix is in it, or a vertex of the line
    is within the width of the segment, or the segment crosses the line."""
    outline = corridor.outline
    hit = margin_m(corridor, a_lon, a_lat) <= 0.0
    hit |= margin_m(corridor, a_lon + d_lon, a_lat + d_lat) <= 0.0
    # Vertices of the line, each once: the starts and the ends of its edges.
    starts = np.column_stack([outline.ax, outline.ay])
    ends = starts + np.column_stack([outline.dx, outline.dy])
    vertices_xy = np.unique(np.concatenate([starts, ends]), axis=0)
    v_lon = np.ascontiguousarray(vertices_xy[:, 0])
    v_lat = np.ascontiguousarray(vertices_xy[:, 1])
    todo = np.flatnonzero(~hit)
    if todo.size:
        vertices = v_lon.size
        rows = min(_MAX_ROWS, max(_MIN_ROWS, _CELLS // vertices))
        for start in range(0, todo.size, rows):
            sel = todo[start : start + rows]
            alon = a_lon[sel][:, None]
            alat = a_lat[sel][:, None]
            dlon = d_lon[sel][:, None]
            dlat = d_lat[sel][:, None]
            vlon = np.broadcast_to(v_lon, (sel.size, v_lon.size))
            kx, ky = metres_per_degree(v_lat)
            t = _project(alon - vlon, alat - v_lat, dlon, dlat, kx, ky)
            ex = (alon + t * dlon - vlon) * kx
            ey = (alat + t * dlat - v_lat) * ky
            nearest = np.argmin(ex * ex + ey * ey, axis=1)
            rows_idx = np.arange(sel.size)
            dist, _ = _foot_distance(
                vlon[rows_idx, nearest],
                np.broadcast_to(v_lat, vlon.shape)[rows_idx, nearest],
                a_lon[sel],
                a_lat[sel],
                d_lon[sel],
                d_lat[sel],
            )
            hit[sel] = dist <= corridor.width_m
    todo = np.flatnonzero(~hit)
    if todo.size:
        lines = shapely.linestrings(
            np.stack(
                [
                    np.stack([a_lon[todo], a_lat[todo]], axis=1),
                    np.stack([a_lon[todo] + d_lon[todo], a_lat[todo] + d_lat[todo]], axis=1),
                ],
                axis=1,
            )
        )
        hit[todo] = shapely.intersects(outline.geometry, lines)
    return hit


def _segment_frame(
    shape: Shape, lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
) -> tuple[tuple[int, ...], FloatArray, FloatArray, FloatArray, FloatArray, BoolArray]:
    """Flattened segments in the shape's longitude frame, the end taken the short way
    round from the start: (shape, a_lon, a_lat, d_lon, d_lat, finite)."""
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2))
    )
    out_shape = arrays[0].shape
    a_lon, a_lat, b_lon, b_lat = (np.ascontiguousarray(v).ravel() for v in arrays)
    ok = np.isfinite(a_lon) & np.isfinite(a_lat) & np.isfinite(b_lon) & np.isfinite(b_lat)
    centre = shape.lon if isinstance(shape, Circle) else shape.outline.centre_lon
    with np.errstate(invalid="ignore"):
        a_lon = wrap_longitude(a_lon, centre)
        b_lon = wrap_longitude(b_lon, a_lon)
    return out_shape, a_lon, a_lat, b_lon - a_lon, b_lat - a_lat, ok


# Samples along a segment in the first pass of segment_depth_m, and around each promising
# sample in the second: the result is within about L / ((_COARSE - 1)(_FINE - 1)) of the
# true extreme for a segment of length L (2.5 m for a 5 km segment).
_COARSE: Final = 65
_FINE: Final = 33


def segment_depth_m(
    shape: Shape,
    lon1: ArrayLike,
    lat1: ArrayLike,
    lon2: ArrayLike,
    lat2: ArrayLike,
    *,
    inside: bool,
) -> FloatArray:
    """How far the straight segment from point 1 to point 2 reaches into the shape
    (``inside=True``: the greatest ``-margin`` along it) or out of it (``inside=False``:
    the greatest ``margin``), in metres; broadcast, elementwise, NaN for a NaN position.
    A negative result means the segment never gets there, by that much at least.

    "Straight" is in lon/lat, the short way round, as in ``segment_crosses``.

    Circle: exact (into it: the radius minus the least distance from the centre to the
    segment; out of it: the larger margin of the two ends, a circle of a few kilometres
    being convex to well under a centimetre in lon/lat). Area and Corridor: sampled, so a
    lower bound: the margin is exact at 65 points along the segment and at 33 points
    around every sample that could hide the extreme (the margin changes by at most the
    distance moved), which leaves an error under L/2000 for a segment of length L.
    """
    out_shape, a_lon, a_lat, d_lon, d_lat, ok = _segment_frame(shape, lon1, lat1, lon2, lat2)
    result = np.full(a_lon.size, np.nan)
    if not np.any(ok):
        return result.reshape(out_shape)
    a_lon, a_lat, d_lon, d_lat = a_lon[ok], a_lat[ok], d_lon[ok], d_lat[ok]
    sign = -1.0 if inside else 1.0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if isinstance(shape, Circle):
            if inside:
                plon = np.full(a_lon.shape, shape.lon)
                plat = np.full(a_lon.shape, shape.lat)
                dist, _ = _foot_distance(plon, plat, a_lon, a_lat, d_lon, d_lat)
                depth = shape.radius_m - dist
            else:
                depth = np.maximum(
                    margin_m(shape, a_lon, a_lat), margin_m(shape, a_lon + d_lon, a_lat + d_lat)
                )
        else:
            depth = _sampled_extreme(shape, a_lon, a_lat, d_lon, d_lat, sign)
    result[ok] = depth
    return result.reshape(out_shape)


def _sampled_extreme(
    shape: Area | Corridor,
    a_lon: FloatArray,
    a_lat: FloatArray,
    d_lon: FloatArray,
    d_lat: FloatArray,
    sign: float,
) -> FloatArray:
    """max over the segment of sign·margin, sampled in two passes (see segment_depth_m)."""
    n = a_lon.size
    # Length of the lon/lat-straight path, over-estimated: a 1 % allowance for the path not
    # being a geodesic, and a centimetre.
    length = distance_m(a_lon, a_lat, a_lon + d_lon, a_lat + d_lat) * 1.01 + 0.01
    s = np.linspace(0.0, 1.0, _COARSE)
    lon = a_lon[:, None] + s[None, :] * d_lon[:, None]
    lat = a_lat[:, None] + s[None, :] * d_lat[:, None]
    values = sign * margin_m(shape, lon, lat)
    best = np.max(values, axis=1)
    step = length / (_COARSE - 1)
    # A sample more than one step below the best cannot have the extreme beside it.
    row, k = np.nonzero(values >= (best - step)[:, None])
    lo = np.clip(k - 1, 0, _COARSE - 1) / (_COARSE - 1)
    hi = np.clip(k + 1, 0, _COARSE - 1) / (_COARSE - 1)
    f = np.linspace(0.0, 1.0, _FINE)
    s2 = lo[:, None] + f[None, :] * (hi - lo)[:, None]
    lon2 = a_lon[row][:, None] + s2 * d_lon[row][:, None]
    lat2 = a_lat[row][:, None] + s2 * d_lat[row][:, None]
    fine = np.max(sign * margin_m(shape, lon2, lat2), axis=1)
    out = best.copy()
    np.maximum.at(out, row, fine)
    return np.asarray(out[:n], dtype=np.float64)


def segment_leaves(
    shape: Shape, lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
) -> BoolArray:
    """Whether some point of the straight segment from point 1 to point 2 is outside the
    shape (its boundary counts as inside); broadcast, elementwise; NaN gives False.

    The inclusion-zone counterpart of ``segment_crosses``: two fixes inside a home or an
    allowed area whose straight path leaves it. Area: exact (shapely ``covers`` in lon/lat,
    where the edges are straight too). Circle: whether an end is outside (a circle is
    convex). Corridor: sampled as in ``segment_depth_m``, so an excursion shallower than
    about L/2000 may be missed.
    """
    out_shape, a_lon, a_lat, d_lon, d_lat, ok = _segment_frame(shape, lon1, lat1, lon2, lat2)
    result = np.zeros(a_lon.size, dtype=np.bool_)
    if not np.any(ok):
        return result.reshape(out_shape)
    a_lon, a_lat, d_lon, d_lat = a_lon[ok], a_lat[ok], d_lon[ok], d_lat[ok]
    b_lon, b_lat = a_lon + d_lon, a_lat + d_lat
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ends_out = (margin_m(shape, a_lon, a_lat) > 0.0) | (margin_m(shape, b_lon, b_lat) > 0.0)
        if isinstance(shape, Circle):
            hit = ends_out
        elif isinstance(shape, Area):
            hit = ends_out.copy()
            todo = np.flatnonzero(~ends_out & ((d_lon != 0.0) | (d_lat != 0.0)))
            if todo.size:
                lines = shapely.linestrings(
                    np.stack(
                        [
                            np.stack([a_lon[todo], a_lat[todo]], axis=1),
                            np.stack([b_lon[todo], b_lat[todo]], axis=1),
                        ],
                        axis=1,
                    )
                )
                hit[todo] = ~np.asarray(
                    shapely.covers(shape.outline.geometry, lines), dtype=np.bool_
                )
        else:
            hit = ends_out | (_sampled_extreme(shape, a_lon, a_lat, d_lon, d_lat, 1.0) > 0.0)
    result[ok] = hit
    return result.reshape(out_shape)
