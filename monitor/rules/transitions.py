"""Enter and exit events: the zones a subject's previous fix was surely in, compared with
the current fix's. Apart from the state rules (which decide violations), a transition is
a fact for the record and the officer's review ("left home 08:12, entered the market
08:31"), whatever the schedules say.

A fix counts as surely inside a zone when its whole accuracy circle is inside, surely
outside when wholly outside; a fix that straddles the boundary changes nothing. The
first sure position of a zone is recorded without a transition (nothing is known from
before it). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geofences.model import margin_m
from monitor.domain import Fix
from monitor.rules.book import Rule, RuleBook
from monitor.rules.margins import Margins

__all__ = ["Transition", "transitions"]


@dataclass(frozen=True, slots=True)
class Transition:
    fix: Fix
    rule_key: str
    zone_id: str | None
    entered: bool


def _zone_rules(book: RuleBook, fix: Fix) -> list[Rule]:
    return [r for r in book.own_rules_at(fix.t) if r.zone_id is not None]


def transitions(
    book: RuleBook,
    inside: Mapping[str, bool],
    fixes: Sequence[Fix],
    margins: Margins | None = None,
) -> tuple[dict[str, bool], list[Transition]]:
    """The new sure-inside state per rule key, and the transitions in fix-time order."""
    ordered = sorted(fixes, key=lambda f: (f.t, f.seq or 0))
    in_force = [_zone_rules(book, f) for f in ordered]
    where = _looked_up(ordered, in_force, margins) if margins is not None else None
    if where is None:
        where = _measured(ordered, in_force, margins)
    state = dict(inside)
    found: list[Transition] = []
    for i, fix in enumerate(ordered):
        for rule in in_force[i]:
            now_inside = where[(i, rule.key)]
            if now_inside is None:
                continue
            before = state.get(rule.key)
            state[rule.key] = now_inside
            if before is not None and before != now_inside:
                found.append(Transition(fix, rule.key, rule.zone_id, now_inside))
    return state, found


def _sure(rule: Rule, fix: Fix, margin: float, acc: float) -> bool | None:
    """Surely inside (True), surely outside (False), or neither (None)."""
    if (rule.home and fix.src == "beacon") or margin <= -acc:
        return True
    if margin > acc:
        return False
    return None


def _looked_up(
    ordered: Sequence[Fix], in_force: Sequence[Sequence[Rule]], margins: Margins
) -> dict[tuple[int, str], bool | None] | None:
    """Where each fix stands, from the batch's measured margins; None when one is
    missing. A handful of fixes per subject: plain lookups cost less than arrays."""
    where: dict[tuple[int, str], bool | None] = {}
    for i, fix in enumerate(ordered):
        for rule in in_force[i]:
            margin = margins.margin(rule.shape, fix)
            if margin is None:
                return None
            where[(i, rule.key)] = _sure(rule, fix, margin, fix.acc)
    return where


def _measured(
    ordered: Sequence[Fix], in_force: Sequence[Sequence[Rule]], margins: Margins | None
) -> dict[tuple[int, str], bool | None]:
    """Where each fix stands against each zone in force at its time, one array call per
    zone rather than one geometry call per fix."""
    by_rule: dict[Rule, list[int]] = {}
    for i, rules in enumerate(in_force):
        for rule in rules:
            by_rule.setdefault(rule, []).append(i)
    where: dict[tuple[int, str], bool | None] = {}
    for rule, idx in by_rule.items():
        acc = np.fromiter((ordered[i].acc for i in idx), dtype=np.float64, count=len(idx))
        margin = margins.margins(rule.shape, [ordered[i] for i in idx]) if margins else None
        if margin is None:
            lon = np.fromiter((ordered[i].lon for i in idx), dtype=np.float64, count=len(idx))
            lat = np.fromiter((ordered[i].lat for i in idx), dtype=np.float64, count=len(idx))
            margin = np.asarray(margin_m(rule.shape, lon, lat), dtype=np.float64)
        for j, i in enumerate(idx):
            where[(i, rule.key)] = _sure(rule, ordered[i], float(margin[j]), float(acc[j]))
    return where
