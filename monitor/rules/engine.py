"""Judging a subject's fixes against the rules in force at each fix's own time.

For every fix and every rule in force the engine makes an accuracy-aware decision:
`violation` when the fix's whole uncertainty circle is on the wrong side of the
boundary, `compliant` when it is wholly on the right side, `possible` when it straddles
it (never silently compliant: it neither confirms nor ends an episode). Violating fixes
form an episode per rule, which is confirmed after `confirm_fixes` consecutive violating
fixes or `confirm_s` seconds of fix time in violation, whichever comes first; one
confirmed episode is one alert, updated by later violating fixes and cleared by the
first compliant one.

Fixes are judged in fix-time order. A fix older than the last one judged for the
subject (a late upload) is judged in a pass of its own with the rules of its own time,
so a late violation is still raised, and the live episode is left as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

import numpy as np

from geofences.model import margin_m
from monitor.domain import Fix
from monitor.rules.book import Rule, RuleBook

__all__ = [
    "AlertChange",
    "Change",
    "Debounce",
    "Decision",
    "Episode",
    "SubjectState",
    "evaluate",
    "rejudge",
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


@dataclass(frozen=True, slots=True)
class Episode:
    """Consecutive violating fixes of one rule."""

    rule: Rule
    first: Fix
    last: Fix
    count: int
    confirmed: bool = False
    worst_margin_m: float = 0.0

    @property
    def key(self) -> str:
        """Identifies the episode: its rule and its first violating fix."""
        f = self.first
        return f"{self.rule.key}|{f.device_id}|{f.seq}|{f.t.isoformat()}"


@dataclass(frozen=True, slots=True)
class SubjectState:
    last_t: datetime | None = None
    episodes: Mapping[str, Episode] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertChange:
    change: Change
    subject_id: str
    episode: Episode
    fix: Fix  # the fix that caused the change
    late: bool = False
    reason: str = ""


def _decide(rule: Rule, fixes: Sequence[Fix]) -> tuple[list[Decision], np.ndarray]:
    lon = np.fromiter((f.lon for f in fixes), dtype=np.float64, count=len(fixes))
    lat = np.fromiter((f.lat for f in fixes), dtype=np.float64, count=len(fixes))
    acc = np.fromiter((f.acc for f in fixes), dtype=np.float64, count=len(fixes))
    margin = np.asarray(margin_m(rule.shape, lon, lat), dtype=np.float64)
    if rule.home:
        beacon = np.fromiter((f.src == "beacon" for f in fixes), dtype=bool, count=len(fixes))
        margin = np.where(beacon, -np.inf, margin)
    # margin: metres to the boundary, negative inside. Seen from the rule: how far the fix
    # is on the wrong side.
    wrong = margin if rule.must_be_inside else -margin
    decisions = [
        Decision.VIOLATION if w > a else Decision.COMPLIANT if w <= -a else Decision.POSSIBLE
        for w, a in zip(wrong.tolist(), acc.tolist(), strict=True)
    ]
    return decisions, wrong


def _in_force(book: RuleBook, fix: Fix, keys: frozenset[str] | None) -> list[Rule]:
    return [
        r
        for r in book.rules_at(fix.t)
        if (keys is None or r.key in keys)
        and (r.schedule is None or r.schedule.active(fix.t, book.timezone))
    ]


def _run(
    book: RuleBook,
    episodes: dict[str, Episode],
    fixes: Sequence[Fix],
    debounce: Debounce,
    late: bool,
    keys: frozenset[str] | None = None,
) -> list[AlertChange]:
    changes: list[AlertChange] = []
    if not fixes:
        return changes
    # Decisions for every (fix, rule in force at its time), computed rule by rule over
    # arrays of fixes rather than one geometry call per fix.
    in_force = [_in_force(book, f, keys) for f in fixes]
    # Grouped by the rule itself, not its key: a zone edited (same key, new shape)
    # within the batch judges each fix by the shape in force at its own time.
    by_rule: dict[Rule, list[int]] = {}
    for i, rules in enumerate(in_force):
        for r in rules:
            by_rule.setdefault(r, []).append(i)
    decided: dict[tuple[int, str], tuple[Decision, float]] = {}
    for rule, idx in by_rule.items():
        decisions, wrong = _decide(rule, [fixes[i] for i in idx])
        for j, i in enumerate(idx):
            decided[(i, rule.key)] = (decisions[j], float(wrong[j]))

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
            decision, wrong_m = decided[(i, rule.key)]
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
            # POSSIBLE: the uncertainty circle straddles the boundary; the episode neither
            # grows nor ends.
    return changes


def evaluate(
    book: RuleBook,
    state: SubjectState,
    fixes: Sequence[Fix],
    debounce: Debounce = Debounce(),
) -> tuple[SubjectState, list[AlertChange]]:
    """Judge `fixes` (any order) for the subject; return the new state and alert changes."""
    return _evaluate(book, state, fixes, debounce, None)


def rejudge(
    book: RuleBook,
    fixes: Sequence[Fix],
    keys: frozenset[str],
    debounce: Debounce = Debounce(),
) -> tuple[SubjectState, list[AlertChange]]:
    """Judge stored fixes again against the rules named by `keys` only, from a clean
    state: used when an order or zone takes effect from an instant already passed."""
    return _evaluate(book, SubjectState(), fixes, debounce, keys)


def _evaluate(
    book: RuleBook,
    state: SubjectState,
    fixes: Sequence[Fix],
    debounce: Debounce,
    keys: frozenset[str] | None,
) -> tuple[SubjectState, list[AlertChange]]:
    ordered = sorted(fixes, key=lambda f: (f.t, f.seq or 0))
    if state.last_t is None:
        late: list[Fix] = []
        live = ordered
    else:
        late = [f for f in ordered if f.t < state.last_t]
        live = [f for f in ordered if f.t >= state.last_t]
    changes = _run(book, {}, late, debounce, True, keys) if late else []
    episodes = dict(state.episodes)
    changes += _run(book, episodes, live, debounce, False, keys)
    last_t = live[-1].t if live else state.last_t
    return SubjectState(last_t, episodes), changes
