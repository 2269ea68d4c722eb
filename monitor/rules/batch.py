"""Judging the fixes of many subjects at once: the engine's batch path.

`RuleTable` compiles every subject's rules into flat numpy arrays, one row per zone
version or status order of every subject with the interval it is in force, built once
and rebuilt when books change. `judge_batch` then takes a batch of fixes as columns
(`FixColumns`) and:

1. screens every (fix, rule in force) pair with vectorised margins: circles all at once
   with `geodesy.distance_m` (exact), polygons edge by edge over all pairs at once (the
   distance in the flat metric of the fix, with a bound on its error, and even-odd
   containment on the same lon/lat-straight edges shapely uses), shared zones through
   their spatial index; schedules with `Schedule.active_many`;
2. marks a subject eventful when one of its fixes is late, it has an open episode, a
   pair could be a violation (within the error bound), or a crossing could have
   happened since the device's last fix (the margin changes by at most the distance
   moved, so a segment shorter than its two ends' distances to a boundary cannot cross
   it);
3. judges each eventful subject with `engine.evaluate`, the reference engine, so both
   paths decide alike by construction; every other subject had nothing to say, and its
   last fix time and last fix per device move forward in arrays, as evaluate would have
   moved them.

Violations are rare, so almost every subject stays in numpy. The state (`BatchState`)
is arrays per subject and per device plus the few open episodes; `BatchState.
subject_state` and `with_subject_state` convert to and from `engine.SubjectState`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import shapely
from numpy.typing import NDArray

from geofences.geodesy import FloatArray, distance_m, metres_per_degree, wrap_longitude
from geofences.model import Area, Circle, Shape, margin_m
from monitor.domain import FIX_SOURCES, Fix, Status
from monitor.rules.book import Rule, RuleBook, StatusOrder, ZoneEntry, order_rule, zone_rule
from monitor.rules.engine import (
    AlertChange,
    Debounce,
    Episode,
    SubjectState,
    _Judged,
    _Plan,
    _walk,
    decide,
    evaluate,
)
from monitor.rules.schedule import Schedule, epoch_us

__all__ = [
    "SOURCES",
    "BatchState",
    "BatchStats",
    "FixColumns",
    "RuleTable",
    "judge_batch",
    "with_subject_state",
]

IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]

SOURCES: Final = tuple(sorted(FIX_SOURCES))
_BEACON: Final = SOURCES.index("beacon")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER: Final = np.iinfo(np.int64).max  # an open end, in microseconds
_NONE: Final = np.iinfo(np.int64).min  # no time yet
_R: Final = 6_371_000.0

_CIRCLE, _AREA, _OTHER = 0, 1, 2
_DEBOUNCE: Final = Debounce()

# (pair, edge) cells handled at once in the polygon screen.
_CELLS: Final = 1 << 20


def _us(t: datetime | None) -> int:
    return _NEVER if t is None else epoch_us(t)


def _instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _flat_error(d: FloatArray, lat: FloatArray) -> FloatArray:
    """A bound on the error of a distance d measured in the flat metric at lat (four
    times the estimate of geofences.model, plus a centimetre)."""
    tan = np.abs(np.tan(np.radians(np.clip(lat, -89.0, 89.0))))
    return np.asarray(4.0 * d * d * (1.0 + tan) / _R + 0.01, dtype=np.float64)


@dataclass(frozen=True, slots=True, eq=False)
class _Edges:
    """Every edge of every polygon of the table, grouped by polygon (CSR)."""

    start: IntArray  # per polygon: first edge; start[-1] is the edge count
    ax: FloatArray
    ay: FloatArray
    dx: FloatArray
    dy: FloatArray
    centre: FloatArray  # per polygon: the longitude its frame is centred on


def _edges(areas: Sequence[Area]) -> _Edges:
    if not areas:
        empty = np.empty(0)
        return _Edges(np.zeros(1, dtype=np.intp), empty, empty, empty, empty, empty)
    geoms = np.array([a.geometry for a in areas], dtype=object)
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    coords, coord_of = shapely.get_coordinates(rings, return_index=True)
    same = coord_of[:-1] == coord_of[1:]
    a = coords[:-1][same]
    b = coords[1:][same]
    owner = part_of[ring_of[coord_of[:-1][same]]]
    proper = np.any(a != b, axis=1)
    a, b, owner = a[proper], b[proper], owner[proper]
    order = np.argsort(owner, kind="stable")
    a, b, owner = a[order], b[order], owner[order]
    start = np.searchsorted(owner, np.arange(len(areas) + 1)).astype(np.intp)
    bounds = shapely.bounds(geoms)
    return _Edges(
        start=start,
        ax=np.ascontiguousarray(a[:, 0]),
        ay=np.ascontiguousarray(a[:, 1]),
        dx=np.ascontiguousarray(b[:, 0] - a[:, 0]),
        dy=np.ascontiguousarray(b[:, 1] - a[:, 1]),
        centre=0.5 * (bounds[:, 0] + bounds[:, 2]),
    )


class RuleTable:
    """Every subject's rules as flat arrays; immutable once built.

    `subjects[i]` is the subject of row block i, `books[i]` its book; `devices` names the
    device indices that `FixColumns.device` refers to. Build: `RuleTable(books, devices)`
    (about 10 µs per rule in Python, once; rebuild when a book changes).
    """

    def __init__(self, books: Sequence[RuleBook], devices: Sequence[str]) -> None:
        self.books = tuple(books)
        self.subjects = tuple(b.subject_id for b in books)
        self.subject_index = {s: i for i, s in enumerate(self.subjects)}
        self.devices = tuple(devices)
        self.device_index = {d: i for i, d in enumerate(self.devices)}
        subject: list[int] = []
        valid_from: list[int] = []
        valid_until: list[int] = []
        kind: list[int] = []
        circle: list[tuple[float, float, float]] = []
        area_of: list[int] = []
        inside: list[bool] = []
        home: list[bool] = []
        schedule_of: list[int] = []
        schedules: dict[tuple[Schedule, str], int] = {}
        areas: dict[int, int] = {}
        area_list: list[Area] = []
        exact: dict[int, int] = {}
        exact_list: list[Shape] = []
        blue_subject: list[int] = []
        blue_from: list[int] = []
        blue_until: list[int] = []
        sources: list[ZoneEntry | StatusOrder] = []

        def add(
            source: ZoneEntry | StatusOrder,
            s: int,
            shape: Shape,
            lo: int,
            hi: int,
            must_in: bool,
            is_home: bool,
            sched: Schedule | None,
            tz: str,
        ) -> None:
            sources.append(source)
            subject.append(s)
            valid_from.append(lo)
            valid_until.append(hi)
            inside.append(must_in)
            home.append(is_home)
            schedule_of.append(
                -1 if sched is None else schedules.setdefault((sched, tz), len(schedules))
            )
            if isinstance(shape, Circle):
                kind.append(_CIRCLE)
                circle.append((shape.lon, shape.lat, shape.radius_m))
                area_of.append(-1)
                return
            circle.append((math.nan, math.nan, math.nan))
            west, _, east, _ = shapely.bounds(
                shape.geometry if isinstance(shape, Area) else shape.line
            )
            if isinstance(shape, Area) and east - west <= 180.0:
                kind.append(_AREA)
                area_of.append(areas.setdefault(id(shape), len(areas)))
                if len(area_list) < len(areas):
                    area_list.append(shape)
            else:  # corridors and zones across the antimeridian: measured exactly
                kind.append(_OTHER)
                area_of.append(exact.setdefault(id(shape), len(exact)))
                if len(exact_list) < len(exact):
                    exact_list.append(shape)

        for s, book in enumerate(self.books):
            for z in book.zones:
                r = zone_rule(z)
                lo, hi = _us(z.valid_from), _us(z.valid_until)
                add(z, s, r.shape, lo, hi, r.must_be_inside, r.home, r.schedule, book.timezone)
            segments = book.segments
            for k, order in enumerate(segments):
                lo = _us(order.effective_at)
                hi = _us(segments[k + 1].effective_at) if k + 1 < len(segments) else _NEVER
                rule = order_rule(order)
                if rule is not None:
                    add(order, s, rule.shape, lo, hi, True, True, None, book.timezone)
                elif order.status == Status.BLUE:
                    blue_subject.append(s)
                    blue_from.append(lo)
                    blue_until.append(hi)

        # Rows are already by subject, each subject's in its book's order (zones, then
        # status orders), which is the order evaluate judges them in.
        order_rows = np.arange(len(subject))
        n = len(self.books)
        self._sources = sources
        self._rules: dict[int, Rule] = {}
        self._shared_rules: dict[int, Rule] = {}

        def col(values: list[float] | list[int] | list[bool], dtype: type) -> NDArray[Any]:
            return np.asarray(np.array(values, dtype=dtype)[order_rows])

        self.row_subject: IntArray = col(subject, np.intp)
        self.row_from: NDArray[np.int64] = col(valid_from, np.int64)
        self.row_until: NDArray[np.int64] = col(valid_until, np.int64)
        self.row_kind: NDArray[np.int8] = col(kind, np.int8)
        cir = np.array(circle, dtype=np.float64).reshape(-1, 3)[order_rows]
        self.row_lon, self.row_lat, self.row_radius = (
            cir[:, 0].copy(),
            cir[:, 1].copy(),
            cir[:, 2].copy(),
        )
        self.row_shape: IntArray = col(area_of, np.intp)
        self.row_inside: BoolArray = col(inside, np.bool_)
        self.row_home: BoolArray = col(home, np.bool_)
        self.row_schedule: IntArray = col(schedule_of, np.intp)
        self.subject_start = np.searchsorted(self.row_subject, np.arange(n + 1)).astype(np.intp)
        self.schedules = tuple(schedules)
        self.areas = tuple(area_list)
        self.exact_shapes = tuple(exact_list)
        self.edges = _edges(self.areas)
        blue = np.argsort(np.array(blue_subject, dtype=np.intp), kind="stable")
        self.blue_subject = np.array(blue_subject, dtype=np.intp)[blue]
        self.blue_from = np.array(blue_from, dtype=np.int64)[blue]
        self.blue_until = np.array(blue_until, dtype=np.int64)[blue]
        self.blue_start = np.searchsorted(self.blue_subject, np.arange(n + 1)).astype(np.intp)
        # One shared set for the table: the first book's (pass the same SharedZones to
        # every book); books whose shared zones differ are judged on their own.
        self.shared = self.books[0].shared_set if self.books else None
        self.own_shared = np.array(
            [b.shared_set is not self.shared for b in self.books], dtype=np.bool_
        )
        tagged = self.shared.tagged if self.shared is not None else ()
        self.shared_not_exclusion = any(z.kind != "exclusion" for z in tagged)

    @property
    def rows(self) -> int:
        return int(self.row_subject.size)

    def shared_rule(self, position: int) -> Rule:
        """The rule of a shared zone, by position in `shared.tagged` (made once)."""
        rule = self._shared_rules.get(position)
        if rule is None:
            assert self.shared is not None
            rule = self._shared_rules[position] = zone_rule(self.shared.tagged[position])
        return rule

    def rule(self, row: int) -> Rule:
        """The rule of a row (made on first use and kept: few rows ever need one)."""
        rule = self._rules.get(row)
        if rule is None:
            source = self._sources[row]
            made = zone_rule(source) if isinstance(source, ZoneEntry) else order_rule(source)
            assert made is not None
            rule = self._rules[row] = made
        return rule

    def nbytes(self) -> int:
        """Bytes held in the table's arrays (not the books and shapes it refers to)."""
        arrays = [v for v in vars(self).values() if isinstance(v, np.ndarray)]
        e = self.edges
        arrays += [e.start, e.ax, e.ay, e.dx, e.dy, e.centre]
        return sum(a.nbytes for a in arrays)


@dataclass(frozen=True, slots=True, eq=False)
class FixColumns:
    """A batch of fixes as columns. `subject` and `device` index the table's subjects and
    devices; `src` indexes SOURCES; `seq` is -1 for none; times in microseconds since the
    epoch. `fixes`, when given, are the same fixes as objects (kept in the episodes)."""

    subject: IntArray
    device: IntArray
    t_us: NDArray[np.int64]
    lon: FloatArray
    lat: FloatArray
    acc: FloatArray
    src: NDArray[np.int8]
    seq: NDArray[np.int64]
    received_us: NDArray[np.int64]
    fixes: Sequence[Fix] | None = None

    def __len__(self) -> int:
        return int(self.t_us.size)

    @classmethod
    def from_fixes(
        cls, table: RuleTable, fixes: Sequence[Fix], subjects: Sequence[str]
    ) -> FixColumns:
        """Columns of `fixes`, each judged for the subject at the same position."""
        return cls(
            subject=np.array([table.subject_index[s] for s in subjects], dtype=np.intp),
            device=np.array([table.device_index[f.device_id] for f in fixes], dtype=np.intp),
            t_us=np.array([epoch_us(f.t) for f in fixes], dtype=np.int64),
            lon=np.array([f.lon for f in fixes], dtype=np.float64),
            lat=np.array([f.lat for f in fixes], dtype=np.float64),
            acc=np.array([f.acc for f in fixes], dtype=np.float64),
            src=np.array([SOURCES.index(f.src) for f in fixes], dtype=np.int8),
            seq=np.array([-1 if f.seq is None else f.seq for f in fixes], dtype=np.int64),
            received_us=np.array([epoch_us(f.received_at) for f in fixes], dtype=np.int64),
            fixes=tuple(fixes),
        )

    def fix(self, table: RuleTable, i: int) -> Fix:
        if self.fixes is not None:
            return self.fixes[i]
        seq = int(self.seq[i])
        return Fix(
            device_id=table.devices[int(self.device[i])],
            seq=None if seq < 0 else seq,
            t=_instant(int(self.t_us[i])),
            lat=float(self.lat[i]),
            lon=float(self.lon[i]),
            acc=float(self.acc[i]),
            src=SOURCES[int(self.src[i])],
            received_at=_instant(int(self.received_us[i])),
        )


@dataclass(frozen=True, slots=True, eq=False)
class BatchState:
    """Per subject: the last fix time judged live; per device: its last fix (the start
    of its next crossing segment); and the open episodes of the few subjects with any."""

    last_us: NDArray[np.int64]
    dev_t: NDArray[np.int64]
    dev_lon: FloatArray
    dev_lat: FloatArray
    dev_acc: FloatArray
    dev_src: NDArray[np.int8]
    dev_seq: NDArray[np.int64]
    dev_received: NDArray[np.int64]
    dev_fix: Mapping[int, Fix] = field(default_factory=dict)  # objects, when at hand
    episodes: Mapping[int, Mapping[str, Episode]] = field(default_factory=dict)

    @classmethod
    def initial(cls, table: RuleTable) -> BatchState:
        n, d = len(table.subjects), len(table.devices)
        return cls(
            last_us=np.full(n, _NONE, dtype=np.int64),
            dev_t=np.full(d, _NONE, dtype=np.int64),
            dev_lon=np.full(d, np.nan),
            dev_lat=np.full(d, np.nan),
            dev_acc=np.full(d, np.nan),
            dev_src=np.zeros(d, dtype=np.int8),
            dev_seq=np.full(d, -1, dtype=np.int64),
            dev_received=np.full(d, _NONE, dtype=np.int64),
        )

    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (
                self.last_us,
                self.dev_t,
                self.dev_lon,
                self.dev_lat,
                self.dev_acc,
                self.dev_src,
                self.dev_seq,
                self.dev_received,
            )
        )

    def device_fix(self, table: RuleTable, d: int) -> Fix | None:
        if int(self.dev_t[d]) == _NONE:
            return None
        known = self.dev_fix.get(d)
        if (
            known is not None
            and epoch_us(known.t) == int(self.dev_t[d])
            and (-1 if known.seq is None else known.seq) == int(self.dev_seq[d])
            and known.lon == float(self.dev_lon[d])
            and known.lat == float(self.dev_lat[d])
        ):
            return known
        seq = int(self.dev_seq[d])
        return Fix(
            device_id=table.devices[d],
            seq=None if seq < 0 else seq,
            t=_instant(int(self.dev_t[d])),
            lat=float(self.dev_lat[d]),
            lon=float(self.dev_lon[d]),
            acc=float(self.dev_acc[d]),
            src=SOURCES[int(self.dev_src[d])],
            received_at=_instant(int(self.dev_received[d])),
        )

    def subject_state(self, table: RuleTable, s: int, devices: Sequence[int]) -> SubjectState:
        """The engine's state of subject s, with the last fixes of `devices`."""
        last = int(self.last_us[s])
        fixes = {}
        for d in devices:
            f = self.device_fix(table, d)
            if f is not None:
                fixes[table.devices[d]] = f
        return SubjectState(
            None if last == _NONE else _instant(last), dict(self.episodes.get(s, {})), fixes
        )


def with_subject_state(
    state: BatchState, table: RuleTable, s: int, subject: SubjectState
) -> BatchState:
    """`state` with subject s set from an engine state (e.g. one warmed from stored fixes
    with `evaluate`): its last fix time, open episodes and its devices' last fixes."""
    last_us = state.last_us.copy()
    last_us[s] = _NONE if subject.last_t is None else epoch_us(subject.last_t)
    episodes = dict(state.episodes)
    if subject.episodes:
        episodes[s] = dict(subject.episodes)
    else:
        episodes.pop(s, None)
    cols: list[NDArray[Any]] = [
        state.dev_t.copy(),
        state.dev_lon.copy(),
        state.dev_lat.copy(),
        state.dev_acc.copy(),
        state.dev_src.copy(),
        state.dev_seq.copy(),
        state.dev_received.copy(),
    ]
    dev_fix = dict(state.dev_fix)
    for device_id, f in subject.last_fixes.items():
        d = table.device_index[device_id]
        dev_fix[d] = f
        values = (
            epoch_us(f.t),
            f.lon,
            f.lat,
            f.acc,
            SOURCES.index(f.src),
            -1 if f.seq is None else f.seq,
            epoch_us(f.received_at),
        )
        for column, value in zip(cols, values, strict=True):
            column[d] = value
    return BatchState(
        last_us=last_us,
        dev_t=cols[0],
        dev_lon=cols[1],
        dev_lat=cols[2],
        dev_acc=cols[3],
        dev_src=cols[4],
        dev_seq=cols[5],
        dev_received=cols[6],
        dev_fix=dev_fix,
        episodes=episodes,
    )


@dataclass(frozen=True, slots=True)
class BatchStats:
    fixes: int
    pairs: int  # (fix, own rule in force) decisions, screened in arrays
    shared_pairs: int  # (fix, shared zone in force) decisions, most by the index
    shared_measured: int  # of those, measured (the index's candidates)
    eventful_subjects: int  # judged one by one by engine.evaluate
    eventful_fixes: int


def _expand(starts: IntArray, counts: IntArray) -> tuple[IntArray, IntArray]:
    """For each i, starts[i] .. starts[i] + counts[i] - 1: (owner i, value) pairs."""
    total = int(counts.sum())
    owner = np.repeat(np.arange(counts.size, dtype=np.intp), counts)
    offsets = np.arange(total, dtype=np.intp) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.repeat(starts, counts) + offsets


def _polygon_margins(
    edges: _Edges, poly: IntArray, lon: FloatArray, lat: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Approximate signed margins of points (lon, lat) against polygons `poly`, and a
    bound on their error: flat-metric distance to the nearest edge, even-odd containment."""
    n = poly.size
    margin = np.empty(n)
    error = np.empty(n)
    if n == 0:
        return margin, error
    counts = edges.start[poly + 1] - edges.start[poly]
    ends = np.cumsum(counts)
    lo = 0
    while lo < n:
        # As many pairs as fit in _CELLS (pair, edge) cells, at least one.
        hi = int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + _CELLS, side="right"))
        hi = max(hi, lo + 1)
        sl = slice(lo, hi)
        owner, edge = _expand(edges.start[poly[sl]], counts[sl])
        plat = lat[sl]
        plon = wrap_longitude(lon[sl], edges.centre[poly[sl]])
        kx, ky = metres_per_degree(plat)
        px, py = plon[owner], plat[owner]
        ax, ay, dx, dy = edges.ax[edge], edges.ay[edge], edges.dx[edge], edges.dy[edge]
        kxo, kyo = kx[owner], ky[owner]
        ux = ax - px
        uy = ay - py
        vx = dx * kxo
        vy = dy * kyo
        vv = vx * vx + vy * vy
        num = -(ux * kxo * vx + uy * kyo * vy)
        t = np.clip(np.divide(num, vv, out=np.zeros_like(vv), where=vv > 0.0), 0.0, 1.0)
        ex = (ux + t * dx) * kxo
        ey = (uy + t * dy) * kyo
        d2 = ex * ex + ey * ey
        # Even-odd rule: edges crossing the horizontal ray to the east of the point.
        by = ay + dy
        straddle = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = ax + (py - ay) * dx / dy
        crossing = straddle & (px < x_at)
        firsts = np.concatenate([[0], np.cumsum(counts[sl])[:-1]])
        d = np.sqrt(np.minimum.reduceat(d2, firsts))
        inside = (np.add.reduceat(crossing.astype(np.int32), firsts) % 2) == 1
        margin[sl] = np.where(inside, -d, d)
        error[sl] = _flat_error(d, plat)
        lo = hi
    return margin, error


def _in_blue(table: RuleTable, s: IntArray, t: NDArray[np.int64]) -> BoolArray:
    counts = table.blue_start[s + 1] - table.blue_start[s]
    out = np.zeros(s.size, dtype=np.bool_)
    if not np.any(counts):
        return out
    owner, k = _expand(table.blue_start[s], counts)
    hit = (table.blue_from[k] <= t[owner]) & (t[owner] < table.blue_until[k])
    np.logical_or.at(out, owner[hit], True)
    return out


def judge_batch(
    table: RuleTable,
    state: BatchState,
    fixes: FixColumns,
    debounce: Debounce = _DEBOUNCE,
) -> tuple[BatchState, list[AlertChange], BatchStats]:
    """Judge a batch of fixes of many subjects; the same changes and states as
    `engine.evaluate` subject by subject (see the module docstring)."""
    n = len(fixes)
    subj, dev, t = fixes.subject, fixes.device, fixes.t_us
    if n == 0:
        return state, [], BatchStats(0, 0, 0, 0, 0, 0)
    subjects = len(table.subjects)
    eventful = np.zeros(subjects, dtype=np.bool_)
    # Subjects judged by evaluate itself: late fixes, their own shared zones, a shared
    # zone that may be broken or crossed; eventful ones take the fast lane below.
    full = np.zeros(subjects, dtype=np.bool_)

    # Judged order, as evaluate sorts: (t, seq or 0), stable; subject by subject.
    seq0 = np.where(fixes.seq < 0, 0, fixes.seq)
    order = np.lexsort((np.arange(n), seq0, t, subj))
    rank = np.empty(n, dtype=np.intp)
    rank[order] = np.arange(n)
    full[subj[t < state.last_us[subj]]] = True
    full |= table.own_shared
    for s in state.episodes:
        eventful[s] = True

    # The previous fix of each fix's device: the one before it in the batch, else the
    # device's last fix in the state.
    by_dev = order[np.lexsort((np.arange(n), dev[order]))]
    first_of_dev = np.ones(n, dtype=np.bool_)
    first_of_dev[1:] = dev[by_dev][1:] != dev[by_dev][:-1]
    prev_lon = np.full(n, np.nan)
    prev_lat = np.full(n, np.nan)
    later = by_dev[~first_of_dev]
    earlier = by_dev[np.flatnonzero(~first_of_dev) - 1]
    prev_lon[later] = fixes.lon[earlier]
    prev_lat[later] = fixes.lat[earlier]
    firsts = by_dev[first_of_dev]
    prev_lon[firsts] = state.dev_lon[dev[firsts]]
    prev_lat[firsts] = state.dev_lat[dev[firsts]]
    has_prev = np.isfinite(prev_lon)
    with np.errstate(invalid="ignore"):
        length = distance_m(prev_lon, prev_lat, fixes.lon, fixes.lat)
    reach = np.where(has_prev, length * 1.01 + 0.01, -np.inf)

    # Every (fix, own rule row) pair in force at the fix's time, by subject, fix in
    # judged order, row in the book's order.
    counts = table.subject_start[subj + 1] - table.subject_start[subj]
    pf, row = _expand(table.subject_start[subj], counts)
    live = (table.row_from[row] <= t[pf]) & (t[pf] < table.row_until[row])
    pf, row = pf[live], row[live]
    scheduled = np.flatnonzero(table.row_schedule[row] >= 0)
    if scheduled.size:
        keep = np.ones(pf.size, dtype=np.bool_)
        sid = table.row_schedule[row[scheduled]]
        for k in np.unique(sid).tolist():
            which = scheduled[sid == k]
            schedule, tz = table.schedules[k]
            keep[which] = schedule.active_many(t[pf[which]], tz)
        pf, row = pf[keep], row[keep]
    resort = np.lexsort((row, rank[pf]))
    pf, row = pf[resort], row[resort]
    pairs = int(pf.size)

    margin = np.empty(pf.size)
    error = np.zeros(pf.size)
    kind = table.row_kind[row]
    margin[:], error[:] = _margins(table, kind, row, fixes.lon[pf], fixes.lat[pf])
    inside_rule = table.row_inside[row]
    beacon_home = table.row_home[row] & (fixes.src[pf] == _BEACON)
    wrong = np.where(beacon_home, -np.inf, np.where(inside_rule, margin, -margin))
    acc = fixes.acc[pf]
    with np.errstate(invalid="ignore"):
        flagged = (wrong + error > acc) | np.isnan(wrong)

    # Crossings since the device's last fix. A circle that must be left is convex: two
    # ends inside keep the path inside. Elsewhere the path must be long enough to reach
    # the boundary from this end ...
    with np.errstate(invalid="ignore"):
        cand = has_prev[pf] & ~beacon_home & ~((kind == _CIRCLE) & inside_rule)
        cand &= np.abs(margin) <= reach[pf] + error
    ci = np.flatnonzero(cand)
    if ci.size:
        # ... and from the other end too.
        p_margin, p_error = _margins(table, kind[ci], row[ci], prev_lon[pf[ci]], prev_lat[pf[ci]])
        with np.errstate(invalid="ignore"):
            close = np.abs(margin[ci]) + np.abs(p_margin) <= reach[pf[ci]] + error[ci] + p_error
            close |= np.isnan(p_margin)
        flagged[ci[close]] = True
    eventful[subj[pf[flagged]]] = True

    # Shared zones, for fixes of subjects under a blue status: the index's candidates
    # (zones a fix is within its accuracy of, with exact margins) and the zones a segment
    # touches. Every other shared zone is compliant for that fix.
    shared_pairs = shared_measured = 0
    blue_fix = np.zeros(n, dtype=np.bool_)
    near_zones: dict[int, dict[int, float]] = {}  # fix -> {position in tagged: margin}
    crossed_zones: dict[int, set[int]] = {}  # fix -> positions its segment touches
    if table.shared is not None and table.shared.tagged:
        blue_fix = _in_blue(table, subj, t)
        blue = np.flatnonzero(blue_fix)
        if blue.size:
            shared_pairs = int(blue.size) * len(table.shared.tagged)
            if table.shared_not_exclusion:
                full[subj[blue]] = True
            else:
                index = table.shared.spatial_index()
                b_acc = fixes.acc[blue]
                near = index.query(fixes.lon[blue], fixes.lat[blue], within_m=float(b_acc.max()))
                keep = near.margin_m <= b_acc[near.point_index]
                shared_measured = len(near)
                for p, z, m in zip(
                    blue[near.point_index[keep]].tolist(),
                    near.zone_index[keep].tolist(),
                    near.margin_m[keep].tolist(),
                    strict=True,
                ):
                    near_zones.setdefault(p, {})[z] = m
                hit = -near.margin_m + 1e-6 > b_acc[near.point_index]
                eventful[subj[blue[near.point_index[hit]]]] = True
                moved = blue[has_prev[blue]]
                if moved.size:
                    crossed = index.crossed(
                        prev_lon[moved], prev_lat[moved], fixes.lon[moved], fixes.lat[moved]
                    )
                    for p, z in zip(
                        moved[crossed.segment_index].tolist(),
                        crossed.zone_index.tolist(),
                        strict=True,
                    ):
                        crossed_zones.setdefault(p, set()).add(z)
                    eventful[subj[moved[crossed.segment_index]]] = True
    eventful |= full

    changes: list[AlertChange] = []
    last_us = state.last_us.copy()
    dev_cols: list[NDArray[Any]] = [
        state.dev_t.copy(),
        state.dev_lon.copy(),
        state.dev_lat.copy(),
        state.dev_acc.copy(),
        state.dev_src.copy(),
        state.dev_seq.copy(),
        state.dev_received.copy(),
    ]
    dev_fix = dict(state.dev_fix)
    episodes = dict(state.episodes)

    def keep_state(s: int, after: SubjectState, devices: Sequence[int]) -> None:
        last_us[s] = _NONE if after.last_t is None else epoch_us(after.last_t)
        if after.episodes:
            episodes[s] = dict(after.episodes)
        else:
            episodes.pop(s, None)
        for d in devices:
            f = after.last_fixes.get(table.devices[d])
            if f is None:
                continue
            dev_fix[d] = f
            values = (
                epoch_us(f.t),
                f.lon,
                f.lat,
                f.acc,
                SOURCES.index(f.src),
                -1 if f.seq is None else f.seq,
                epoch_us(f.received_at),
            )
            for column, value in zip(dev_cols, values, strict=True):
                column[d] = value

    busy = eventful[subj[order]]
    busy_order = order[busy]
    busy_subjects = np.unique(subj[busy_order])
    if busy_order.size:
        fix_bounds = np.searchsorted(subj[busy_order], busy_subjects, side="left").tolist()
        fix_bounds.append(busy_order.size)
        pair_subj = subj[pf]
        pair_lo = np.searchsorted(pair_subj, busy_subjects, side="left").tolist()
        pair_hi = np.searchsorted(pair_subj, busy_subjects, side="right").tolist()
        for k, s in enumerate(busy_subjects.tolist()):
            idx = busy_order[fix_bounds[k] : fix_bounds[k + 1]].tolist()
            own = [fixes.fix(table, i) for i in idx]
            devices = sorted({int(dev[i]) for i in idx})
            before = state.subject_state(table, s, devices)
            if full[s]:
                after, found = evaluate(table.books[s], before, own, debounce)
            else:
                block = slice(pair_lo[k], pair_hi[k])
                lane = _Lane(
                    pf[block],
                    row[block],
                    flagged[block],
                    wrong[block],
                    error[block],
                    length[idx],
                    blue_fix[idx],
                    {i: near_zones[i] for i in idx if i in near_zones},
                    {i: crossed_zones[i] for i in idx if i in crossed_zones},
                )
                after, found = _fast_lane(table, s, before, own, idx, lane, debounce)
            changes += found
            keep_state(s, after, devices)

    # Quiet subjects: the last fix time and each device's last fix move forward.
    quiet_order = order[~busy]
    if quiet_order.size:
        np.maximum.at(last_us, subj[quiet_order], t[quiet_order])
        # The last fix of each device in judged order.
        by = quiet_order[np.lexsort((np.arange(quiet_order.size), dev[quiet_order]))]
        bd = dev[by]
        tail = by[np.r_[bd[1:] != bd[:-1], True]]
        tail_dev = dev[tail]
        sources: list[NDArray[Any]] = [
            t,
            fixes.lon,
            fixes.lat,
            fixes.acc,
            fixes.src,
            fixes.seq,
            fixes.received_us,
        ]
        for column, values in zip(dev_cols, sources, strict=True):
            column[tail_dev] = values[tail]
        if fixes.fixes is not None:
            for i, dd in zip(tail.tolist(), tail_dev.tolist(), strict=True):
                dev_fix[dd] = fixes.fixes[i]
        # Otherwise an object left in dev_fix no longer matches the arrays, and
        # BatchState.device_fix makes a new one from them.

    new_state = BatchState(
        last_us=last_us,
        dev_t=dev_cols[0],
        dev_lon=dev_cols[1],
        dev_lat=dev_cols[2],
        dev_acc=dev_cols[3],
        dev_src=dev_cols[4],
        dev_seq=dev_cols[5],
        dev_received=dev_cols[6],
        dev_fix=dev_fix,
        episodes=episodes,
    )
    stats = BatchStats(
        fixes=n,
        pairs=pairs,
        shared_pairs=shared_pairs,
        shared_measured=shared_measured,
        eventful_subjects=int(busy_subjects.size),
        eventful_fixes=int(busy_order.size),
    )
    return new_state, changes, stats


def _margins(
    table: RuleTable, kind: NDArray[np.int8], row: IntArray, lon: FloatArray, lat: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Signed margins of points against rows, and bounds on their errors: circles and
    other shapes exact (as margin_m), polygons in the flat metric."""
    margin = np.empty(row.size)
    error = np.zeros(row.size)
    c = np.flatnonzero(kind == _CIRCLE)
    margin[c] = (
        distance_m(table.row_lon[row[c]], table.row_lat[row[c]], lon[c], lat[c])
        - table.row_radius[row[c]]
    )
    a = np.flatnonzero(kind == _AREA)
    margin[a], error[a] = _polygon_margins(table.edges, table.row_shape[row[a]], lon[a], lat[a])
    o = np.flatnonzero(kind == _OTHER)
    if o.size:
        shape_of = table.row_shape[row[o]]
        for k in np.unique(shape_of).tolist():
            which = o[shape_of == k]
            margin[which] = margin_m(table.exact_shapes[k], lon[which], lat[which])
    return margin, error


@dataclass(frozen=True, slots=True, eq=False)
class _Lane:
    """One subject's (fix, row) pairs in force, from the screen."""

    pf: IntArray
    row: IntArray
    flagged: BoolArray
    wrong: FloatArray
    error: FloatArray
    length: FloatArray  # per fix of the subject, in judged order: metres from its previous
    blue: BoolArray  # per fix: shared zones bind the subject
    near: Mapping[int, Mapping[int, float]]  # fix -> {shared zone position: exact margin}
    crossed: Mapping[int, set[int]]  # fix -> shared zone positions its segment touches


def _shared_lane(
    table: RuleTable,
    book: RuleBook,
    before: SubjectState,
    fixes: Sequence[Fix],
    idx: Sequence[int],
    lane: _Lane,
    in_force: list[list[Rule]],
    decided: dict[tuple[int, str], _Judged],
) -> None:
    """Shared-zone rules for the fast lane, as engine._shared_rules chooses them: every
    zone near one of the subject's fixes, touched by one of its segments, or holding an
    open episode, judged for each of its fixes under blue where the zone is in force."""
    shared = table.shared
    assert shared is not None
    chosen: set[int] = set()
    for i in idx:
        chosen.update(lane.near.get(i, {}))
        chosen.update(lane.crossed.get(i, ()))
    for key in before.episodes:
        if key.startswith("zone:"):
            chosen.update(shared.positions(key.removeprefix("zone:")))
    for pos in sorted(chosen):
        entry = shared.tagged[pos]
        rule = table.shared_rule(pos)
        for j, (i, fix) in enumerate(zip(idx, fixes, strict=True)):
            if not lane.blue[j] or not entry.in_force(fix.t):
                continue
            if rule.schedule is not None and not rule.schedule.active(fix.t, book.timezone):
                continue
            m = lane.near.get(i, {}).get(pos)
            if m is None:
                m = float(margin_m(rule.shape, fix.lon, fix.lat))
            w = m if rule.must_be_inside else -m
            in_force[j].append(rule)
            decided[(j, rule.key)] = _Judged(decide(w, fix.acc), w, rule)


def _fast_lane(
    table: RuleTable,
    s: int,
    before: SubjectState,
    fixes: Sequence[Fix],
    idx: Sequence[int],
    lane: _Lane,
    debounce: Debounce,
) -> tuple[SubjectState, list[AlertChange]]:
    """One eventful subject, its decisions taken from the arrays: the engine's own
    episode walk over the rules that can say something (flagged for one of its fixes, or
    with an open episode); every other rule is compliant or possible with no episode and
    no crossing, where the walk would do nothing. Margins of polygons are measured
    exactly where the flat metric leaves the decision or the side in doubt."""
    book = table.books[s]
    pf, wrong, error = lane.pf, lane.wrong, lane.error
    rows = lane.row.tolist()
    wanted = {r for r, f in zip(rows, lane.flagged.tolist(), strict=True) if f}
    if before.episodes:
        wanted.update(r for r in rows if table.rule(r).key in before.episodes)
    position = {i: j for j, i in enumerate(idx)}
    in_force: list[list[Rule]] = [[] for _ in fixes]
    decided: dict[tuple[int, str], _Judged] = {}
    for k, r in enumerate(rows):
        if r not in wanted:
            continue
        j = position[int(pf[k])]
        rule = table.rule(r)
        fix = fixes[j]
        w, err = float(wrong[k]), float(error[k])
        if err > 0.0 and (
            w + err > fix.acc or abs(w + fix.acc) <= err or abs(w) <= err or math.isnan(w)
        ):
            exact = float(margin_m(rule.shape, fix.lon, fix.lat))
            w, err = (exact if rule.must_be_inside else -exact), 0.0
        in_force[j].append(rule)
        decided[(j, rule.key)] = _Judged(decide(w, fix.acc), w, rule, err)
    if lane.blue.any():
        _shared_lane(table, book, before, fixes, idx, lane, in_force, decided)
    # The fix before each one from its device, and how far it is (from the screen).
    prev: list[Fix | None] = []
    prev_index: list[int | None] = []
    seen: dict[str, int] = {}
    for j, f in enumerate(fixes):
        earlier = seen.get(f.device_id)
        prev_index.append(earlier)
        prev.append(fixes[earlier] if earlier is not None else before.last_fixes.get(f.device_id))
        seen[f.device_id] = j
    lengths = lane.length
    plan = _Plan(in_force, decided, prev, prev_index, lengths)
    episodes = dict(before.episodes)
    last_fixes = dict(before.last_fixes)
    changes = _walk(book, episodes, last_fixes, fixes, plan, debounce, False)
    return SubjectState(fixes[-1].t, episodes, last_fixes), changes
