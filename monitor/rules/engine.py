"""Judging a subject's fixes against the rules in force at each fix's own time.

For every fix and every rule in force the engine makes an accuracy-aware decision:
`violation` when the fix's whole uncertainty circle is on the wrong side of the
boundary, `compliant` when it is wholly on the right side, `possible` when it straddles
it (never silently compliant: it neither confirms nor ends an episode). Violating fixes
form an episode per rule, which is confirmed after `confirm_fixes` consecutive violating
fixes or `confirm_s` seconds of fix time in violation, whichever comes first; one
confirmed episode is one alert, updated by later violating fixes and cleared by the
first compliant one.

Crossings between sparse fixes. Two consecutive fixes of one device, both on the
allowed side of a rule (outside an exclusion zone, inside a home or inclusion zone) by
their coordinates and neither a violation, whose straight segment (lon/lat, as zone
edges are) goes into the exclusion zone, or out of the inclusion zone, are a crossing.
Its depth is how far the segment reaches to the wrong side (`geofences.model.
segment_depth_m`). A crossing is confirmed at once, with no debounce (more fixes cannot
tell more about a path already travelled), only when the depth exceeds
`Debounce.crossing_factor` (default 2) times the larger accuracy radius of the two fixes:
moving each fix anywhere within that radius still leaves a straight path that crosses
(an accuracy radius is usually a 68 % radius; twice it is about 95 %). A shallower
crossing is "possible" and, like a possible fix, raises nothing. A confirmed crossing is
an episode of its own (`Episode.crossing`, first fix the one before the crossing, last
the one after, `count` 0, `worst_margin_m` the depth): an OPEN, and at once a CLEAR when
the fix after it is compliant; when that fix is only possible the episode stays open and
the next fix updates (violation) or clears (compliant) it as any episode. Pairs with a
home beacon fix are not segments of a home rule; with `crossing_max_gap_s` set, fixes
further apart than that are not paired.

Shared zone sets (every airport, under a blue status) are not measured one by one: from
`SHARED_INDEX_MIN` zones on, the book's spatial index names the zones a fix is within
its accuracy of, or a segment touches; every other zone is compliant for that fix, which
is what measuring it would have said.

Fixes are judged in fix-time order. A fix older than the last one judged for the
subject (a late upload) is judged in a pass of its own with the rules of its own time,
so a late violation is still raised, and the live episode is left as it was.
`rejudge_window` judges late fixes together with the stored fixes around them instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

import numpy as np

from geofences.geodesy import distance_m
from geofences.model import (
    Circle,
    margin_m,
    segment_crosses,
    segment_depth_m,
    segment_leaves,
)
from monitor.domain import AlertKind, Fix, Severity
from monitor.rules.book import SHARED_INDEX_MIN, ProximityRule, Rule, RuleBook, zone_rule
from monitor.rules.margins import Margins

__all__ = [
    "AlertChange",
    "Change",
    "Debounce",
    "Decision",
    "Episode",
    "ProximityDecision",
    "ProximityState",
    "SubjectState",
    "decide",
    "evaluate",
    "evaluate_proximity",
    "proximity_decision",
    "rejudge",
    "rejudge_window",
    "resume_proximity",
]


class Decision(StrEnum):
    COMPLIANT = "compliant"
    POSSIBLE = "possible"
    VIOLATION = "violation"


class Change(StrEnum):
    OPEN = "open"
    UPDATE = "update"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class Debounce:
    confirm_fixes: int = 3
    confirm_s: float = 120.0
    # A crossing is confirmed when its depth exceeds this many times the larger accuracy
    # radius of its two fixes (see the module docstring).
    crossing_factor: float = 2.0
    # Fixes further apart in time are not paired for crossings; None: no limit.
    crossing_max_gap_s: float | None = None


@dataclass(frozen=True, slots=True)
class Episode:
    """Consecutive violating fixes of one rule, or a crossing between two fixes."""

    rule: Rule
    first: Fix
    last: Fix
    count: int
    confirmed: bool = False
    worst_margin_m: float = 0.0
    # A crossing between `first` and `last` (both on the allowed side); `count` is 0 and
    # `worst_margin_m` the depth of the straight path on the wrong side.
    crossing: bool = False
    # rejudge_window only: the window began inside this episode, so `first` is not its
    # real first fix and `key` does not name its alert: match the subject's open alert of
    # this rule instead (changes for it are never OPEN).
    partial: bool = False
    # rejudge_window only: the key of the episode (already alerted) that late fixes
    # extended backwards into this one; its alert is this episode's alert.
    supersedes: str | None = None

    @property
    def key(self) -> str:
        """Identifies the episode: its rule and its first violating fix (for a crossing,
        the fix before it, and a `|crossing` suffix)."""
        f = self.first
        base = f"{self.rule.key}|{f.device_id}|{f.seq}|{f.t.isoformat()}"
        return f"{base}|crossing" if self.crossing else base


@dataclass(frozen=True, slots=True)
class SubjectState:
    last_t: datetime | None = None
    episodes: Mapping[str, Episode] = field(default_factory=dict)
    # The last fix judged live of each device: the start of the next crossing segment.
    last_fixes: Mapping[str, Fix] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertChange:
    change: Change
    subject_id: str
    episode: Episode
    fix: Fix  # the fix that caused the change
    late: bool = False
    reason: str = ""

    @property
    def crossing(self) -> bool:
        """A crossing between two fixes rather than violating fixes (for `detail`)."""
        return self.episode.crossing


def decide(wrong_m: float, acc: float) -> Decision:
    """The decision for a fix `wrong_m` metres on the wrong side of a boundary (negative:
    on the right side) with accuracy radius `acc`."""
    if wrong_m > acc:
        return Decision.VIOLATION
    if wrong_m <= -acc:
        return Decision.COMPLIANT
    return Decision.POSSIBLE


def _decide(
    rule: Rule, fixes: Sequence[Fix], margins: Margins | None = None
) -> tuple[list[Decision], np.ndarray]:
    acc = np.fromiter((f.acc for f in fixes), dtype=np.float64, count=len(fixes))
    margin = margins.margins(rule.shape, fixes) if margins is not None else None
    if margin is None:
        lon = np.fromiter((f.lon for f in fixes), dtype=np.float64, count=len(fixes))
        lat = np.fromiter((f.lat for f in fixes), dtype=np.float64, count=len(fixes))
        margin = np.asarray(margin_m(rule.shape, lon, lat), dtype=np.float64)
    if rule.home:
        beacon = np.fromiter((f.src == "beacon" for f in fixes), dtype=bool, count=len(fixes))
        margin = np.where(beacon, -np.inf, margin)
    # margin: metres to the boundary, negative inside. Seen from the rule: how far the fix
    # is on the wrong side.
    wrong = margin if rule.must_be_inside else -margin
    decisions = [decide(w, a) for w, a in zip(wrong.tolist(), acc.tolist(), strict=True)]
    return decisions, wrong


def _active(book: RuleBook, rule: Rule, t: datetime) -> bool:
    return rule.schedule is None or rule.schedule.active(t, book.timezone)


def _own_in_force(book: RuleBook, t: datetime, keys: frozenset[str] | None) -> list[Rule]:
    return [
        r for r in book.own_rules_at(t) if (keys is None or r.key in keys) and _active(book, r, t)
    ]


def _shared_rules(
    book: RuleBook,
    fixes: Sequence[Fix],
    prev: Sequence[Fix | None],
    episodes: Mapping[str, Episode],
    keys: frozenset[str] | None,
) -> list[list[Rule]]:
    """For each fix, the shared-zone rules to judge it by: every one in force when there
    are few; else those the index finds near the fix or its segment, those with an open
    episode, and any that is not an exclusion (far from which is not compliant)."""
    out: list[list[Rule]] = [[] for _ in fixes]
    blue = [book.shared_at(f.t) for f in fixes]
    if not any(blue):
        return out
    shared = book.shared_set
    tagged = shared.tagged
    if len(tagged) < SHARED_INDEX_MIN:
        chosen: Iterable[int] = range(len(tagged))
    else:
        positions: set[int] = set(shared.not_exclusion)
        for key in episodes:
            if key.startswith("zone:"):
                positions.update(shared.positions(key.removeprefix("zone:")))
        index = shared.spatial_index()
        which = [i for i, b in enumerate(blue) if b]
        lon = np.array([fixes[i].lon for i in which])
        lat = np.array([fixes[i].lat for i in which])
        acc = np.array([fixes[i].acc for i in which])
        near = index.query(lon, lat, within_m=float(np.max(acc)) if acc.size else 0.0)
        keep = near.margin_m <= acc[near.point_index]
        positions.update(int(z) for z in near.zone_index[keep].tolist())
        paired = [i for i in which if prev[i] is not None]
        if paired:
            starts = [prev[i] for i in paired]
            crossed = index.crossed(
                np.array([p.lon for p in starts if p is not None]),
                np.array([p.lat for p in starts if p is not None]),
                np.array([fixes[i].lon for i in paired]),
                np.array([fixes[i].lat for i in paired]),
            )
            positions.update(int(z) for z in crossed.zone_index.tolist())
        chosen = sorted(positions)
    candidates = [tagged[i] for i in chosen]
    for i, f in enumerate(fixes):
        if blue[i]:
            for z in candidates:
                if z.in_force(f.t):
                    r = zone_rule(z)
                    if (keys is None or r.key in keys) and _active(book, r, f.t):
                        out[i].append(r)
    return out


def _rule_in_force(book: RuleBook, rule: Rule, t: datetime) -> bool:
    """Whether exactly `rule` (same key, same shape) binds the subject at `t`."""
    if not _active(book, rule, t):
        return False
    if any(r == rule for r in book.own_rules_at(t)):
        return True
    if rule.zone_id is None or not book.shared_at(t):
        return False
    shared = book.shared_set
    return any(
        shared.tagged[i].in_force(t) and zone_rule(shared.tagged[i]) == rule
        for i in shared.positions(rule.zone_id)
    )


@dataclass(frozen=True, slots=True)
class _Judged:
    decision: Decision  # exact
    wrong_m: float
    rule: Rule
    # A bound on the error of wrong_m (the batch path's flat-metric margins; 0 here). The
    # decision is exact whatever it is, and so is the sign of wrong_m where it matters.
    error_m: float = 0.0


def _crossing(
    book: RuleBook,
    rule: Rule,
    prev: Fix,
    fix: Fix,
    here: _Judged,
    before: _Judged | None,
    length_m: float,
    debounce: Debounce,
) -> float | None:
    """The depth of a confirmed crossing of `rule` between `prev` and `fix`, or None."""
    if here.decision is Decision.VIOLATION or not here.wrong_m <= 0.0:
        return None
    if rule.home and (fix.src == "beacon" or prev.src == "beacon"):
        return None
    gap = (fix.t - prev.t).total_seconds()
    if gap < 0 or (debounce.crossing_max_gap_s is not None and gap > debounce.crossing_max_gap_s):
        return None
    # Along a path of length L the margin changes by at most L: one end that far from the
    # boundary already settles it.
    reach = length_m * 1.01 + 0.01
    if -here.wrong_m > reach + here.error_m:
        return None
    if before is None:
        if not _rule_in_force(book, rule, prev.t):
            return None
        (decision,), wrong = _decide(rule, [prev])
        before = _Judged(decision, float(wrong[0]), rule)
    elif before.rule != rule:
        return None
    if before.decision is Decision.VIOLATION or not before.wrong_m <= 0.0:
        return None
    if -here.wrong_m - before.wrong_m > reach + here.error_m + before.error_m:
        return None
    ends = (prev.lon, prev.lat, fix.lon, fix.lat)
    touches = (
        segment_leaves(rule.shape, *ends)
        if rule.must_be_inside
        else segment_crosses(rule.shape, *ends)
    )
    if not bool(touches):
        return None
    depth = float(segment_depth_m(rule.shape, *ends, inside=not rule.must_be_inside))
    if depth > debounce.crossing_factor * max(prev.acc, fix.acc):
        return depth
    return None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the episode walk needs: for each fix (in judged order) the rules to judge it
    by, in order, each rule's decision, and the fix before it from the same device."""

    in_force: list[list[Rule]]
    decided: dict[tuple[int, str], _Judged]
    prev: list[Fix | None]
    prev_index: list[int | None]  # its position in the fixes, if it is one of them
    lengths: np.ndarray  # metres from the previous fix (NaN: none)


def _prevs(
    fixes: Sequence[Fix], last_fixes: Mapping[str, Fix], margins: Margins | None = None
) -> tuple[list[Fix | None], list[int | None], np.ndarray]:
    """The fix before each one from the same device: the start of its crossing segment."""
    prev: list[Fix | None] = []
    prev_index: list[int | None] = []
    seen: dict[str, int] = {}
    for i, f in enumerate(fixes):
        j = seen.get(f.device_id)
        prev_index.append(j)
        prev.append(fixes[j] if j is not None else last_fixes.get(f.device_id))
        seen[f.device_id] = i
    paired = [i for i, p in enumerate(prev) if p is not None]
    lengths = np.full(len(fixes), np.nan)
    if paired:
        starts = [p for p in prev if p is not None]
        measured = (
            margins.lengths(starts, [fixes[i] for i in paired]) if margins is not None else None
        )
        lengths[paired] = (
            measured
            if measured is not None
            else distance_m(
                np.array([p.lon for p in starts]),
                np.array([p.lat for p in starts]),
                np.array([fixes[i].lon for i in paired]),
                np.array([fixes[i].lat for i in paired]),
            )
        )
    return prev, prev_index, lengths


def _plan(
    book: RuleBook,
    fixes: Sequence[Fix],
    episodes: Mapping[str, Episode],
    last_fixes: Mapping[str, Fix],
    keys: frozenset[str] | None,
    margins: Margins | None = None,
) -> _Plan:
    prev, prev_index, lengths = _prevs(fixes, last_fixes, margins)
    # Decisions for every (fix, rule in force at its time), computed rule by rule over
    # arrays of fixes rather than one geometry call per fix.
    shared = _shared_rules(book, fixes, prev, episodes, keys)
    in_force = [_own_in_force(book, f.t, keys) + shared[i] for i, f in enumerate(fixes)]
    # Grouped by the rule itself, not its key: a zone edited (same key, new shape)
    # within the batch judges each fix by the shape in force at its own time.
    by_rule: dict[Rule, list[int]] = {}
    for i, rules in enumerate(in_force):
        for r in rules:
            by_rule.setdefault(r, []).append(i)
    decided: dict[tuple[int, str], _Judged] = {}
    for rule, idx in by_rule.items():
        decisions, wrong = _decide(rule, [fixes[i] for i in idx], margins)
        for j, i in enumerate(idx):
            decided[(i, rule.key)] = _Judged(decisions[j], float(wrong[j]), rule)
    return _Plan(in_force, decided, prev, prev_index, lengths)


def _run(
    book: RuleBook,
    episodes: dict[str, Episode],
    last_fixes: dict[str, Fix],
    fixes: Sequence[Fix],
    debounce: Debounce,
    late: bool,
    keys: frozenset[str] | None = None,
    margins: Margins | None = None,
) -> list[AlertChange]:
    if not fixes:
        return []
    plan = _plan(book, fixes, episodes, last_fixes, keys, margins)
    return _walk(book, episodes, last_fixes, fixes, plan, debounce, late)


def _walk(
    book: RuleBook,
    episodes: dict[str, Episode],
    last_fixes: dict[str, Fix],
    fixes: Sequence[Fix],
    plan: _Plan,
    debounce: Debounce,
    late: bool,
) -> list[AlertChange]:
    """The episodes, fix by fix in judged order: the one place debounce, clears and
    crossings are decided (for evaluate and the batch path alike)."""
    changes: list[AlertChange] = []
    in_force, decided, prev, prev_index = plan.in_force, plan.decided, plan.prev, plan.prev_index
    lengths = plan.lengths
    for i, fix in enumerate(fixes):
        keys_now = {r.key for r in in_force[i]}
        # An episode whose rule is no longer in force (status lifted, schedule over) ends.
        for key in [k for k in episodes if k not in keys_now]:
            ended = episodes.pop(key)
            if ended.confirmed:
                changes.append(
                    AlertChange(
                        Change.CLEAR, book.subject_id, ended, fix, late, "rule no longer in force"
                    )
                )
        for rule in in_force[i]:
            judged = decided[(i, rule.key)]
            decision, wrong_m = judged.decision, judged.wrong_m
            current = episodes.get(rule.key)
            if decision is Decision.VIOLATION:
                if current is None:
                    current = Episode(rule, fix, fix, 1, worst_margin_m=wrong_m)
                else:
                    current = replace(
                        current,
                        rule=rule,
                        last=fix,
                        count=current.count + 1,
                        worst_margin_m=max(current.worst_margin_m, wrong_m),
                    )
                if current.confirmed:
                    changes.append(AlertChange(Change.UPDATE, book.subject_id, current, fix, late))
                elif (
                    current.count >= debounce.confirm_fixes
                    or (current.last.t - current.first.t).total_seconds() >= debounce.confirm_s
                ):
                    current = replace(current, confirmed=True)
                    changes.append(AlertChange(Change.OPEN, book.subject_id, current, fix, late))
                episodes[rule.key] = current
            elif decision is Decision.COMPLIANT and current is not None:
                del episodes[rule.key]
                if current.confirmed:
                    changes.append(
                        AlertChange(
                            Change.CLEAR, book.subject_id, current, fix, late, "complied again"
                        )
                    )
            elif current is None and prev[i] is not None:
                start = prev[i]
                assert start is not None
                j = prev_index[i]
                before = decided.get((j, rule.key)) if j is not None else None
                if j is not None and before is None:
                    continue  # the rule did not bind the previous fix
                depth = _crossing(
                    book, rule, start, fix, judged, before, float(lengths[i]), debounce
                )
                if depth is None:
                    continue
                crossed = Episode(
                    rule, start, fix, 0, confirmed=True, worst_margin_m=depth, crossing=True
                )
                side = "out of" if rule.must_be_inside else "through"
                changes.append(
                    AlertChange(
                        Change.OPEN,
                        book.subject_id,
                        crossed,
                        fix,
                        late,
                        f"crossing: the straight path between two fixes went {side} the zone"
                        f" by {depth:.0f} m",
                    )
                )
                if decision is Decision.COMPLIANT:
                    changes.append(
                        AlertChange(
                            Change.CLEAR,
                            book.subject_id,
                            crossed,
                            fix,
                            late,
                            "crossing: back on the allowed side at the next fix",
                        )
                    )
                else:
                    episodes[rule.key] = crossed
            # POSSIBLE: the uncertainty circle straddles the boundary; the episode neither
            # grows nor ends.
        last_fixes[fix.device_id] = fix
    return changes


def evaluate(
    book: RuleBook,
    state: SubjectState,
    fixes: Sequence[Fix],
    debounce: Debounce = Debounce(),
    margins: Margins | None = None,
) -> tuple[SubjectState, list[AlertChange]]:
    """Judge `fixes` (any order) for the subject; return the new state and alert changes.
    `margins`: the batch's geometry measured beforehand (see monitor.rules.margins); it
    changes the speed of judging, not its outcome."""
    return _evaluate(book, state, fixes, debounce, None, margins)


def rejudge(
    book: RuleBook,
    fixes: Sequence[Fix],
    keys: frozenset[str],
    debounce: Debounce = Debounce(),
) -> tuple[SubjectState, list[AlertChange]]:
    """Judge stored fixes again against the rules named by `keys` only, from a clean
    state: used when an order or zone takes effect from an instant already passed."""
    return _evaluate(book, SubjectState(), fixes, debounce, keys)


def _order(fixes: Iterable[Fix]) -> list[Fix]:
    return sorted(fixes, key=lambda f: (f.t, f.seq or 0))


def _evaluate(
    book: RuleBook,
    state: SubjectState,
    fixes: Sequence[Fix],
    debounce: Debounce,
    keys: frozenset[str] | None,
    margins: Margins | None = None,
) -> tuple[SubjectState, list[AlertChange]]:
    ordered = _order(fixes)
    if keys is None and margins is not None and not state.episodes:
        quiet = _quiet(book, state, ordered, margins)
        if quiet is not None:
            return quiet, []
    if state.last_t is None:
        late: list[Fix] = []
        live = ordered
    else:
        late = [f for f in ordered if f.t < state.last_t]
        live = [f for f in ordered if f.t >= state.last_t]
    changes = _run(book, {}, {}, late, debounce, True, keys, margins) if late else []
    episodes = dict(state.episodes)
    last_fixes = dict(state.last_fixes)
    changes += _run(book, episodes, last_fixes, live, debounce, False, keys, margins)
    last_t = live[-1].t if live else state.last_t
    return SubjectState(last_t, episodes, last_fixes), changes


def _quiet(
    book: RuleBook, state: SubjectState, ordered: Sequence[Fix], margins: Margins
) -> SubjectState | None:
    """The state after `ordered` when the batch's measured geometry shows that judging
    them cannot change anything, else None (judge them in full).

    Most of a fleet, most of the time: no episode open, no fix late, no shared zone
    binding, every fix compliant with every own rule of its time (schedules aside: a
    rule not active would only be skipped), and every segment from the device's previous
    fix too short to reach a boundary (`_crossing` rules those out by the same bound).
    `_walk` would then record no change and only move the last fixes and `last_t`
    forward. Doing only that took a quiet upload of 10 fixes from about 105 µs to 28 µs
    (measured with the benchmark's rule books)."""
    if not ordered or (state.last_t is not None and ordered[0].t < state.last_t):
        return None
    last_fixes = dict(state.last_fixes)
    for f in ordered:
        if book.shared_at(f.t):
            return None
        prev = last_fixes.get(f.device_id)
        reach: float | None = None
        if prev is not None:
            length = margins.length(prev, f)
            if length is None:
                return None
            reach = length * 1.01 + 0.01
        for rule in book.own_rules_at(f.t):
            if rule.home and f.src == "beacon":
                if not rule.must_be_inside:
                    return None
                continue  # at home by definition, and not the end of a home segment
            margin = margins.margin(rule.shape, f)
            if margin is None:
                return None
            wrong = margin if rule.must_be_inside else -margin
            if decide(wrong, f.acc) is not Decision.COMPLIANT:
                return None
            # A segment from a home beacon fix is not one of a home rule's (_crossing).
            beacon_start = rule.home and prev is not None and prev.src == "beacon"
            if reach is not None and not beacon_start and not -wrong > reach:
                return None  # the segment might cross: let _crossing look
        last_fixes[f.device_id] = f
    return SubjectState(ordered[-1].t, {}, last_fixes)


# --- late fixes judged with their stored neighbours ---------------------------------------


def _identity(f: Fix) -> tuple[str, int | None, datetime]:
    return (f.device_id, f.seq, f.t)


@dataclass(slots=True)
class _History:
    """What one pass over a window said about each confirmed episode."""

    opened: AlertChange | None = None
    last: AlertChange | None = None  # the last OPEN or UPDATE
    cleared: AlertChange | None = None


def _histories(changes: Sequence[AlertChange]) -> dict[str, _History]:
    out: dict[str, _History] = {}
    for c in changes:
        h = out.setdefault(c.episode.key, _History())
        if c.change is Change.OPEN:
            h.opened = c
            h.last = c
        elif c.change is Change.UPDATE:
            h.last = c
        else:
            h.cleared = c
    return out


def rejudge_window(
    book: RuleBook,
    stored: Sequence[Fix],
    late: Sequence[Fix],
    debounce: Debounce = Debounce(),
    state: SubjectState | None = None,
    *,
    from_start: bool = False,
) -> tuple[SubjectState | None, list[AlertChange]]:
    """Judge late fixes together with the stored fixes around them; return the alert
    changes that the late fixes make to what those stored fixes alone had said.

    Pass as `stored` every stored fix of the subject (all its devices) from before the
    earliest late fix to after the latest one, with no gap: from the 2·confirm_fixes
    stored fixes before the earliest late fix (or those of the confirm_s seconds before
    it, whichever reaches further back) to the subject's latest stored fix when that is
    at hand (then pass `state` too), else to at least 2·confirm_fixes fixes or confirm_s
    seconds after the latest late fix. Late fixes found in `stored` too (already stored
    in the same transaction) are taken once. `late`: the fixes that arrived late (fix
    time before the subject's `state.last_t`). Pass `from_start=True` when `stored` begins
    with the subject's first stored fix: no episode can then have begun before it.

    Both passes judge from a clean state, each fix by the rules of its own time; the
    changes (all `late=True`) are the difference:
    - an episode confirmed only with the late fixes: OPEN (then UPDATE to its latest
      fix, and CLEAR if the window shows it ended), keyed by its first fix: a backlog
      arriving in uploads smaller than the debounce confirms once enough of it is in;
    - an episode already confirmed that grew: UPDATE; that ended earlier or only now
      (a late compliant fix): CLEAR;
    - an episode already confirmed that late fixes extended backwards (its key changed):
      UPDATE of the new episode with `supersedes` the old key (never a second OPEN);
    - an episode already confirmed that late compliant fixes split below the debounce:
      CLEAR ("late fixes show compliance");
    - an episode that the window began inside of (`Episode.partial`): UPDATE or CLEAR
      only, to be matched to the subject's open alert of its rule.
    Crossing episodes that late fixes undo (a late fix between the two ends) are left
    as they were.

    When `state` is given and the window reaches its `last_t`, the returned state holds
    the episodes open at the end of the window (a partial one keeps the identity of the
    live episode of its rule), to replace the subject's live state; otherwise None.
    """
    late_ids = {_identity(f) for f in late}
    late_unique = list({_identity(f): f for f in late}.values())
    old_seq = _order(f for f in stored if _identity(f) not in late_ids)
    new_seq = _order([*old_seq, *late_unique])
    if not late_unique:
        return None, []
    old_eps: dict[str, Episode] = {}
    new_eps: dict[str, Episode] = {}
    old = _histories(_run(book, old_eps, {}, old_seq, debounce, True))
    new_changes = _run(book, new_eps, {}, new_seq, debounce, True)
    new = _histories(new_changes)

    # A window that begins with a stored violating fix may begin inside an episode.
    window_first = new_seq[0] if old_seq and new_seq[0] is old_seq[0] and not from_start else None

    def partial(ep: Episode) -> bool:
        return window_first is not None and not ep.crossing and ep.first is window_first

    def at(f: Fix) -> tuple[datetime, int]:
        return (f.t, f.seq or 0)

    superseded: dict[str, str] = {}  # new key -> old key
    for okey, h in old.items():
        if okey in new or h.last is None or h.last.episode.crossing:
            continue
        ep = h.last.episode
        for nkey, nh in new.items():
            if nh.last is None or nh.last.episode.crossing:
                continue
            nep = nh.last.episode
            if nep.rule.key == ep.rule.key and at(nep.first) <= at(ep.first) <= at(nep.last):
                superseded[nkey] = okey
                break

    out: list[AlertChange] = []
    for nkey, nh in new.items():
        if nh.last is None:
            continue
        final = nh.last.episode
        is_partial = partial(final)
        oh = old.get(nkey)
        if oh is None or oh.last is None:
            gone = superseded.get(nkey)
            if is_partial or gone is not None:
                ep = replace(final, partial=is_partial, supersedes=gone)
                out.append(
                    AlertChange(
                        Change.UPDATE,
                        book.subject_id,
                        ep,
                        final.last,
                        True,
                        "late fixes extend the episode",
                    )
                )
                previous = old[gone].cleared if gone is not None else None
                if nh.cleared is not None and (previous is None or previous.fix != nh.cleared.fix):
                    ep = replace(nh.cleared.episode, partial=is_partial, supersedes=gone)
                    out.append(replace(nh.cleared, episode=ep, late=True))
                continue
            assert nh.opened is not None
            out.append(replace(nh.opened, late=True))
            if nh.last is not nh.opened:
                out.append(replace(nh.last, late=True))
            if nh.cleared is not None:
                out.append(replace(nh.cleared, late=True))
            continue
        before = oh.last.episode
        if (final.count, final.last, final.worst_margin_m) != (
            before.count,
            before.last,
            before.worst_margin_m,
        ):
            ep = replace(final, partial=is_partial)
            out.append(
                AlertChange(
                    Change.UPDATE,
                    book.subject_id,
                    ep,
                    final.last,
                    True,
                    "late fixes added to the episode",
                )
            )
        if nh.cleared is not None and (oh.cleared is None or oh.cleared.fix != nh.cleared.fix):
            ep = replace(nh.cleared.episode, partial=is_partial)
            out.append(replace(nh.cleared, episode=ep, late=True))
    taken = set(superseded.values())
    for okey, oh in old.items():
        if okey in new or okey in taken or oh.last is None or oh.last.episode.crossing:
            continue
        if oh.cleared is not None and oh.cleared.reason == "rule no longer in force":
            continue
        ep = oh.last.episode
        inside = [f for f in late_unique if at(ep.first) <= at(f) <= at(ep.last)]
        cause = min(inside, key=at) if inside else ep.last
        out.append(
            AlertChange(
                Change.CLEAR,
                book.subject_id,
                replace(ep, partial=partial(ep)),
                cause,
                True,
                "late fixes show compliance",
            )
        )
    out.sort(key=lambda c: at(c.fix))

    if state is None or state.last_t is None or new_seq[-1].t < state.last_t:
        return None, out
    episodes: dict[str, Episode] = {}
    for key, judged in new_eps.items():
        live = state.episodes.get(key)
        if partial(judged) and live is not None:
            was = old_eps.get(key)
            grown = judged.count - (was.count if was is not None else 0)
            judged = replace(  # noqa: PLW2901
                live,
                rule=judged.rule,
                last=judged.last,
                count=live.count + grown,
                confirmed=live.confirmed or judged.confirmed,
                worst_margin_m=max(live.worst_margin_m, judged.worst_margin_m),
            )
        episodes[key] = judged
    return replace(state, episodes=episodes), out


# --- proximity: a mobile exclusion zone around another device ----------------------------


@dataclass(frozen=True, slots=True)
class ProximityDecision:
    """One look at the distance between the subject and the other device.

    `decision` is None when it cannot be told ("unknown"): no fix of one side, or the two
    fixes further apart in time than the allowed age.
    """

    decision: Decision | None
    distance_m: float | None
    age_s: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ProximityState:
    """The proximity episodes of one subject, by rule key, and per rule the last pair of
    fixes judged (a pair is judged once) and the last decision."""

    episodes: Mapping[str, Episode] = field(default_factory=dict)
    seen: Mapping[str, tuple[tuple[str, int | None, datetime], ...]] = field(default_factory=dict)
    last: Mapping[str, ProximityDecision] = field(default_factory=dict)


def proximity_decision(
    rule: ProximityRule, subject_fix: Fix | None, other_fix: Fix | None, max_age_s: float
) -> ProximityDecision:
    """Accuracy-aware, as for zones: a violation when even the farthest positions the two
    accuracy circles allow are closer than the distance, compliant when even the nearest
    are at least that far, possible in between; unknown when a side has no fix or the
    fixes are more than `max_age_s` apart in fix time."""
    if subject_fix is None or other_fix is None:
        side = "the subject" if subject_fix is None else rule.other_device_id
        return ProximityDecision(None, None, None, f"no fix of {side}")
    age = abs((subject_fix.t - other_fix.t).total_seconds())
    if age > max_age_s:
        return ProximityDecision(
            None, None, age, f"the fixes are {age:.0f} s apart (at most {max_age_s:.0f} s)"
        )
    d = float(distance_m(subject_fix.lon, subject_fix.lat, other_fix.lon, other_fix.lat))
    slack = subject_fix.acc + other_fix.acc
    return ProximityDecision(decide(rule.distance_m - d, slack), d, age)


def evaluate_proximity(
    book: RuleBook,
    state: ProximityState,
    subject_fix: Fix | None,
    other_fixes: Mapping[str, Fix],
    debounce: Debounce = Debounce(),
    max_age_s: float = 120.0,
) -> tuple[ProximityState, list[AlertChange]]:
    """Judge the proximity rules of the subject whenever either side reports.

    `subject_fix`: the subject's latest fix (any of its devices); `other_fixes`: the
    latest fix of each other device (by device id) that the service holds. Call it with
    the new fix on its side and the other side's latest. Each rule in force at the later
    of the two fix times is judged once per pair of fixes: a violation grows the rule's
    episode (confirmed as zone episodes are, after `confirm_fixes` looks or `confirm_s`
    seconds), a compliant look ends it (CLEAR "complied again"), a possible or unknown one
    does neither; a rule no longer in force clears its episode. Episodes are keyed by
    the subject's fix; `Episode.rule` is a `Rule` of kind `proximity` whose shape is the
    circle around the other device's fix.
    """
    if subject_fix is None:
        return state, []
    episodes = dict(state.episodes)
    seen = dict(state.seen)
    last = dict(state.last)
    changes: list[AlertChange] = []
    # Each rule is looked at when the later of its two fixes was taken.
    binding: dict[str, tuple[ProximityRule, Fix | None, datetime]] = {}
    for entry in book.proximity:
        key = f"proximity:{entry.rule_id}"
        if key in binding:
            continue
        other = other_fixes.get(entry.other_device_id)
        when = max(subject_fix.t, other.t) if other is not None else subject_fix.t
        for rule in book.proximity_at(when):
            if rule.key == key and rule.other_device_id == entry.other_device_id:
                if rule.schedule is None or rule.schedule.active(when, book.timezone):
                    binding[key] = (rule, other, when)
                break
    for key in [k for k in episodes if k not in binding]:
        ended = episodes.pop(key)
        if ended.confirmed:
            changes.append(
                AlertChange(
                    Change.CLEAR,
                    book.subject_id,
                    ended,
                    subject_fix,
                    False,
                    "rule no longer in force",
                )
            )
    for key, (rule, other, _when) in binding.items():
        pair = (_identity(subject_fix),) + ((_identity(other),) if other is not None else ())
        if seen.get(key) == pair:
            continue
        seen[key] = pair
        look = proximity_decision(rule, subject_fix, other, max_age_s)
        last[key] = look
        current = episodes.get(key)
        if look.decision is Decision.VIOLATION:
            assert other is not None
            assert look.distance_m is not None
            as_rule = Rule(
                key=key,
                zone_id=None,
                shape=Circle(other.lon, other.lat, rule.distance_m),
                must_be_inside=False,
                kind=rule.kind,
                severity=rule.severity,
            )
            wrong = rule.distance_m - look.distance_m
            if current is None:
                current = Episode(as_rule, subject_fix, subject_fix, 1, worst_margin_m=wrong)
            else:
                current = replace(
                    current,
                    rule=as_rule,
                    last=subject_fix,
                    count=current.count + 1,
                    worst_margin_m=max(current.worst_margin_m, wrong),
                )
            if current.confirmed:
                changes.append(AlertChange(Change.UPDATE, book.subject_id, current, subject_fix))
            elif (
                current.count >= debounce.confirm_fixes
                or (current.last.t - current.first.t).total_seconds() >= debounce.confirm_s
            ):
                current = replace(current, confirmed=True)
                changes.append(AlertChange(Change.OPEN, book.subject_id, current, subject_fix))
            episodes[key] = current
        elif look.decision is Decision.COMPLIANT and current is not None:
            del episodes[key]
            if current.confirmed:
                changes.append(
                    AlertChange(
                        Change.CLEAR,
                        book.subject_id,
                        current,
                        subject_fix,
                        False,
                        "complied again",
                    )
                )
    return ProximityState(episodes, seen, last), changes


def resume_proximity(
    book: RuleBook, open_episodes: Sequence[tuple[str, Fix, int]]
) -> ProximityState:
    """The proximity episodes whose alerts are open (rule key, the episode's first fix,
    its count), as a process rebuilds them when it meets the subject after a restart or
    a takeover: each confirmed, so that a compliant look clears its alert and a
    violating one adds to it, never opening a second alert for the same episode. A rule
    that is no longer in the book is left out (its alert was cleared or will be)."""
    entries = {f"proximity:{p.rule_id}": p for p in book.proximity}
    episodes: dict[str, Episode] = {}
    for key, first, count in open_episodes:
        entry = entries.get(key)
        if entry is None or key in episodes:
            continue
        rule = Rule(
            key=key,
            zone_id=None,
            shape=Circle(first.lon, first.lat, entry.distance_m),
            must_be_inside=False,
            kind=AlertKind.PROXIMITY,
            severity=Severity.CRITICAL,
        )
        episodes[key] = Episode(rule, first, first, max(count, 1), confirmed=True)
    return ProximityState(episodes)
