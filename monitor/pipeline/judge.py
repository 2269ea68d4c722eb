"""Stage 8: every new fix judged by the rules in force at its own fix time.

Per subject, in fix-time order: zones, curfews and the status order (`engine.evaluate`,
with the batch's geometry measured first for all its subjects, `rules.margins`); a late
fix is judged with the stored fixes around it (`engine.rejudge_window`), so a backlog
arriving in small uploads still confirms its violation; zone transitions are recorded.
A subject this process has not met yet has its rule book and state read first, for the
whole batch in a few queries (after a restart with 100,000 subjects, a few round trips
per subject would leave the service minutes behind); the state is rebuilt from the
subject's last stored fixes, so a restart neither forgets a violation nor raises it
twice."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from monitor.domain import Fix
from monitor.pipeline.batch import Batch, Conn, Key
from monitor.rules.book import RuleBook
from monitor.rules.engine import SubjectState, evaluate, rejudge_window
from monitor.rules.margins import Margins, Measured
from monitor.rules.transitions import transitions
from monitor.store import positions
from monitor.store import zones as zone_store

__all__ = ["REJUDGE_LIMIT", "WARM_FIXES", "fix_from_row", "run", "window"]

# How many stored fixes warm a subject's rule state when the process first meets it.
WARM_FIXES = 20
REJUDGE_LIMIT = 20_000


async def run(b: Batch) -> None:
    state = b.state
    by_subject: dict[str, list[Fix]] = defaultdict(list)
    judged: set[Key] = set()
    for f, subject in b.fixes:
        key = (f.device_id, f.seq, f.t)
        if subject is not None and key in b.new_fixes and key not in judged:
            judged.add(key)  # the same record twice in one batch is judged once
            by_subject[subject].append(f)
    b.fixes_by_subject = dict(by_subject)
    b.warm = await _warm(b)
    # The batch's geometry in a few array calls for all its subjects, rather than a few
    # per subject (late fixes, judged with stored ones, measure their own).
    margins = Margins.measure(
        Measured(
            state.books[s],
            fixes,
            (b.warm[s] if s in b.warm else state.states[s]).last_fixes,
        )
        for s, fixes in b.fixes_by_subject.items()
        if s in state.books
    )
    debounce = b.config.debounce
    for subject, fixes in b.fixes_by_subject.items():
        book = state.books.get(subject)
        if book is None:
            continue  # no such subject any more
        current = b.warm[subject] if subject in b.warm else state.states[subject]
        late = [f for f in fixes if current.last_t is not None and f.t < current.last_t]
        if late:
            stored, from_start = await window(
                b.conn, debounce.confirm_fixes, debounce.confirm_s, subject, late
            )
            windowed, found = rejudge_window(
                book, stored, late, debounce, current, from_start=from_start
            )
            current = windowed or current
            b.changes += found
        live = [f for f in fixes if current.last_t is None or f.t >= current.last_t]
        b.states[subject], found = evaluate(book, current, live, debounce, margins)
        b.changes += found
        b.inside[subject], moved = transitions(book, state.inside.get(subject, {}), live, margins)
        b.moves += [(subject, tr) for tr in moved]
    await positions.insert_transitions(b.conn, b.moves)


async def _warm(b: Batch) -> dict[str, SubjectState]:
    state = b.state
    cold_books = [s for s in b.fixes_by_subject if s not in state.books]
    if cold_books:
        if state.shared is None:
            state.shared = await zone_store.load_shared(b.conn)
        state.books.update(await zone_store.load_rulebooks(b.conn, cold_books, state.shared))
    cold = {
        s: min(f.t for f in fixes)
        for s, fixes in b.fixes_by_subject.items()
        if s in state.books and s not in state.states
    }
    rows = await positions.recent_fixes_many(b.conn, cold, WARM_FIXES)
    return {
        s: evaluate(
            state.books[s], SubjectState(), [fix_from_row(r) for r in found], b.config.debounce
        )[0]
        for s, found in rows.items()
    }


async def book(b: Batch, subject_id: str) -> RuleBook | None:
    """The subject's rule book, read on first need."""
    state = b.state
    found = state.books.get(subject_id)
    if found is None:
        if state.shared is None:
            state.shared = await zone_store.load_shared(b.conn)
        # Every book holds the same shared set, so its index is built once.
        found = await zone_store.load_rulebook(b.conn, subject_id, state.shared)
        if found is not None:
            state.books[subject_id] = found
    return found


async def window(
    conn: Conn, confirm_fixes: int, confirm_s: float, subject_id: str, late: list[Fix]
) -> tuple[list[Fix], bool]:
    """The stored fixes around late ones, as rejudge_window asks: from 2·confirm_fixes
    fixes (or confirm_s) before the earliest to the subject's latest; and whether the
    window starts with the subject's first fix."""
    earliest = min(f.t for f in late)
    before = await positions.recent_fixes(conn, subject_id, earliest, 2 * confirm_fixes)
    lower = earliest - timedelta(seconds=confirm_s)
    if before:
        lower = min(lower, before[0]["t"])
    stored = [
        fix_from_row(r) for r in await positions.fixes_from(conn, subject_id, lower, REJUDGE_LIMIT)
    ]
    return stored, await positions.none_before(conn, subject_id, lower)


def fix_from_row(r: dict[str, Any]) -> Fix:
    return Fix(
        device_id=r["device_id"],
        seq=r["seq"],
        t=r["t"],
        lat=r["lat"],
        lon=r["lon"],
        acc=float(r["acc"]),
        src=r["src"],
        received_at=r["received_at"],
        spd=float(r["spd"]) if r["spd"] is not None else None,
        batt=r["batt"],
    )
