"""Zone sets shared by many subjects (every airport, every school), indexed once.

The index is a shapely ``STRtree`` over each zone's lon/lat box (``model.bounds``, which
pads circles and corridors on the safe side; a box across the antimeridian goes in as its
two halves). A query turns every fix into a small box grown by ``within_m``, asks the tree
for all overlapping zone boxes in one call, and measures exact margins only for those
candidates, zone by zone, vectorised over that zone's fixes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from geofences.geodesy import MIN_RADIUS_M, FloatArray, distance_m, wrap_longitude
from geofences.model import Circle, Shape, bounds, margin_m, segment_crosses

__all__ = ["Crossings", "Matches", "ZoneIndex"]

# The least a query box is grown (about 1 cm): it makes a fix on a box's edge, or on
# longitude ±180 written either way, meet the zones touching it.
_MIN_GROW_DEG: Final = 1e-7


@dataclass(frozen=True, slots=True, eq=False)
class Matches:
    """Fix-zone pairs from a query, as parallel arrays sorted by fix then margin.

    ``point_index`` is the position of the fix in the (flattened) query arrays,
    ``zone_index`` the position of the zone in the index, ``zone_id`` its id.
    Iterating yields ``(point_index, zone_id, margin_m)`` tuples.
    """

    point_index: NDArray[np.intp]
    zone_index: NDArray[np.intp]
    zone_id: NDArray[np.object_]
    margin_m: FloatArray

    def __len__(self) -> int:
        return int(self.point_index.size)

    def __iter__(self) -> Iterator[tuple[int, str, float]]:
        for p, z, m in zip(
            self.point_index.tolist(), self.zone_id.tolist(), self.margin_m.tolist(), strict=True
        ):
            yield int(p), str(z), float(m)


@dataclass(frozen=True, slots=True, eq=False)
class Crossings:
    """Segment-zone pairs from ``ZoneIndex.crossed``, as parallel arrays sorted by segment
    then zone: ``segment_index`` is the position of the segment in the (flattened) query
    arrays, ``zone_index`` the position of the zone in the index, ``zone_id`` its id."""

    segment_index: NDArray[np.intp]
    zone_index: NDArray[np.intp]
    zone_id: NDArray[np.object_]

    def __len__(self) -> int:
        return int(self.segment_index.size)


class ZoneIndex:
    """An immutable set of ``(zone_id, shape)`` with a spatial index over it.

    Building costs about one bounding box per zone (10,000 zones in a few tens of
    milliseconds); each shape prepares its own edges on its first query.
    """

    __slots__ = (
        "_by_id",
        "_centre_lat",
        "_centre_lon",
        "_ids",
        "_owner",
        "_radius",
        "_shapes",
        "_tree",
    )

    def __init__(self, zones: Iterable[tuple[str, Shape]]) -> None:
        ids: list[str] = []
        shapes: list[Shape] = []
        for zone_id, shape in zones:
            ids.append(zone_id)
            shapes.append(shape)
        self._by_id = dict(zip(ids, shapes, strict=True))
        if len(self._by_id) != len(ids):
            dups = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise ValueError(f"zone ids appear more than once: {dups}")
        self._ids: NDArray[np.object_] = np.array(ids, dtype=object)
        self._shapes = tuple(shapes)
        boxes: list[tuple[float, float, float, float]] = []
        owner: list[int] = []
        for i, shape in enumerate(shapes):
            west, south, east, north = bounds(shape)
            if west <= east:
                boxes.append((west, south, east, north))
                owner.append(i)
            else:
                boxes.extend([(west, south, 180.0, north), (-180.0, south, east, north)])
                owner.extend([i, i])
        corners = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        self._tree: Any = shapely.STRtree(
            shapely.box(corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3])
        )
        self._owner: NDArray[np.intp] = np.array(owner, dtype=np.intp)
        circles = [
            (s.lon, s.lat, s.radius_m) if isinstance(s, Circle) else (0, 0, 0) for s in shapes
        ]
        centres = np.array(circles, dtype=np.float64).reshape(-1, 3)
        self._centre_lon: FloatArray = centres[:, 0]
        self._centre_lat: FloatArray = centres[:, 1]
        self._radius: FloatArray = centres[:, 2]  # 0 for a shape that is not a circle

    def __len__(self) -> int:
        return len(self._shapes)

    @property
    def ids(self) -> tuple[str, ...]:
        """The zone ids, in the order given."""
        return tuple(str(i) for i in self._ids.tolist())

    def shape(self, zone_id: str) -> Shape:
        """The shape indexed under ``zone_id`` (KeyError if none)."""
        return self._by_id[zone_id]

    def query(self, lon: ArrayLike, lat: ArrayLike, within_m: float = 0.0) -> Matches:
        """Every (fix, zone) pair whose margin is at most ``within_m`` metres: the zones
        each fix is in (``within_m = 0``), or is in or near. Fixes are flattened; a
        non-finite fix matches nothing.
        """
        if not math.isfinite(within_m) or within_m < 0.0:
            raise ValueError(f"within_m must be a finite number >= 0, not {within_m}")
        lon_a, lat_a = np.broadcast_arrays(
            np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        )
        lon_f = np.ascontiguousarray(lon_a).ravel()
        lat_f = np.ascontiguousarray(lat_a).ravel()
        point, zone = self._candidates(lon_f, lat_f, within_m)
        if point.size == 0:
            return _empty()
        margins = np.empty(point.size, dtype=np.float64)
        # Circles (homes, schools, venues) are measured all at once, whatever zone they
        # belong to; other shapes zone by zone, each vectorised over its own fixes.
        round_ = self._radius[zone] > 0.0
        if np.any(round_):
            z = zone[round_]
            p = point[round_]
            margins[round_] = (
                distance_m(self._centre_lon[z], self._centre_lat[z], lon_f[p], lat_f[p])
                - self._radius[z]
            )
        rest = np.flatnonzero(~round_)
        rest = rest[np.argsort(zone[rest], kind="stable")]
        for pairs in np.split(rest, np.flatnonzero(np.diff(zone[rest])) + 1):
            if pairs.size:
                pts = point[pairs]
                shape = self._shapes[zone[pairs[0]]]
                margins[pairs] = margin_m(shape, lon_f[pts], lat_f[pts])
        keep = margins <= within_m
        point, zone, margins = point[keep], zone[keep], margins[keep]
        order = np.lexsort((margins, point))
        point, zone, margins = point[order], zone[order], margins[order]
        return Matches(
            point_index=point,
            zone_index=zone,
            zone_id=self._ids[zone],
            margin_m=margins,
        )

    def crossed(
        self, lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
    ) -> Crossings:
        """Every (segment, zone) pair where the straight segment from point 1 to point 2
        touches the zone (``model.segment_crosses``): for crossings between sparse fixes.
        The tree gives the zones whose boxes the segment meets; each candidate is then
        tested exactly, zone by zone, vectorised over that zone's segments."""
        arrays = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2))
        )
        a_lon, a_lat, b_lon, b_lat = (np.ascontiguousarray(v).ravel() for v in arrays)
        seg, zone = self._segment_candidates(a_lon, a_lat, b_lon, b_lat)
        if seg.size == 0:
            empty = np.empty(0, dtype=np.intp)
            return Crossings(empty, empty, np.empty(0, dtype=object))
        hit = np.zeros(seg.size, dtype=np.bool_)
        order = np.argsort(zone, kind="stable")
        for pairs in np.split(order, np.flatnonzero(np.diff(zone[order])) + 1):
            if pairs.size:
                s = seg[pairs]
                shape = self._shapes[zone[pairs[0]]]
                hit[pairs] = segment_crosses(shape, a_lon[s], a_lat[s], b_lon[s], b_lat[s])
        seg, zone = seg[hit], zone[hit]
        order = np.lexsort((zone, seg))
        seg, zone = seg[order], zone[order]
        return Crossings(segment_index=seg, zone_index=zone, zone_id=self._ids[zone])

    def _segment_candidates(
        self, a_lon: FloatArray, a_lat: FloatArray, b_lon: FloatArray, b_lat: FloatArray
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(segment, zone) pairs whose boxes overlap, each pair once."""
        finite = np.flatnonzero(
            np.isfinite(a_lon) & np.isfinite(a_lat) & np.isfinite(b_lon) & np.isfinite(b_lat)
        )
        if finite.size == 0 or len(self._shapes) == 0:
            empty = np.empty(0, dtype=np.intp)
            return empty, empty
        x1 = wrap_longitude(a_lon[finite])
        x2 = wrap_longitude(b_lon[finite], x1)  # the short way round, maybe beyond ±180
        y1, y2 = a_lat[finite], b_lat[finite]
        grow = _MIN_GROW_DEG
        west = np.minimum(x1, x2) - grow
        east = np.maximum(x1, x2) + grow
        south = np.maximum(np.minimum(y1, y2) - grow, -90.0)
        north = np.minimum(np.maximum(y1, y2) + grow, 90.0)
        # The part of a box beyond ±180 is queried again from the other side.
        spill_w = np.flatnonzero(west < -180.0)
        spill_e = np.flatnonzero(east > 180.0)
        boxes = shapely.box(
            np.concatenate(
                [np.maximum(west, -180.0), west[spill_w] + 360.0, np.full(spill_e.size, -180.0)]
            ),
            np.concatenate([south, south[spill_w], south[spill_e]]),
            np.concatenate(
                [np.minimum(east, 180.0), np.full(spill_w.size, 180.0), east[spill_e] - 360.0]
            ),
            np.concatenate([north, north[spill_w], north[spill_e]]),
        )
        source = np.concatenate([finite, finite[spill_w], finite[spill_e]])
        hit = self._tree.query(boxes)
        seg = source[hit[0]]
        zone = self._owner[hit[1]]
        key = np.unique(seg.astype(np.int64) * len(self._shapes) + zone)
        return (key // len(self._shapes)).astype(np.intp), (key % len(self._shapes)).astype(np.intp)

    def _candidates(
        self, lon: FloatArray, lat: FloatArray, within_m: float
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(fix, zone) pairs whose boxes overlap, each pair once."""
        finite = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
        if finite.size == 0 or len(self._shapes) == 0:
            empty = np.empty(0, dtype=np.intp)
            return empty, empty
        x = wrap_longitude(lon[finite])
        y = lat[finite]
        grow = math.degrees(within_m / MIN_RADIUS_M) * (1 + 1e-9) + _MIN_GROW_DEG
        south = np.maximum(y - grow, -90.0)
        north = np.minimum(y + grow, 90.0)
        widest = np.maximum(np.abs(south), np.abs(north))
        with np.errstate(divide="ignore"):
            half = grow / np.cos(np.radians(widest))
        everywhere = (widest >= 90.0) | (half >= 180.0)
        half = np.where(everywhere, 180.0, half)
        west = x - half
        east = x + half
        # The part of a box beyond ±180 is queried again from the other side.
        spill_w = np.flatnonzero(west < -180.0)
        spill_e = np.flatnonzero(east > 180.0)
        boxes = shapely.box(
            np.concatenate(
                [np.maximum(west, -180.0), west[spill_w] + 360.0, np.full(spill_e.size, -180.0)]
            ),
            np.concatenate([south, south[spill_w], south[spill_e]]),
            np.concatenate(
                [np.minimum(east, 180.0), np.full(spill_w.size, 180.0), east[spill_e] - 360.0]
            ),
            np.concatenate([north, north[spill_w], north[spill_e]]),
        )
        source = np.concatenate([finite, finite[spill_w], finite[spill_e]])
        hit = self._tree.query(boxes)
        point = source[hit[0]]
        zone = self._owner[hit[1]]
        # A fix meets a zone twice when either of them was split at the antimeridian.
        key = np.unique(point.astype(np.int64) * len(self._shapes) + zone)
        return (key // len(self._shapes)).astype(np.intp), (key % len(self._shapes)).astype(np.intp)


def _empty() -> Matches:
    return Matches(
        point_index=np.empty(0, dtype=np.intp),
        zone_index=np.empty(0, dtype=np.intp),
        zone_id=np.empty(0, dtype=object),
        margin_m=np.empty(0, dtype=np.float64),
    )
