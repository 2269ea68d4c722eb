"""Stage 9: mobile exclusion zones, judged whenever either side reports: the subject's
new fix against the protected device's latest, or the protected device's new fix
against the subject's latest. A subject met for the first time since a start or a
takeover has its open proximity episodes read back from their alerts first."""

from __future__ import annotations

from collections import defaultdict

from monitor.domain import Fix
from monitor.pipeline import judge
from monitor.pipeline.batch import Batch
from monitor.rules.engine import ProximityState, evaluate_proximity, resume_proximity
from monitor.store import alerts as alert_store
from monitor.store import positions
from monitor.store import zones as zone_store

__all__ = ["run"]


async def run(b: Batch) -> None:
    state = b.state
    pending: dict[str, tuple[Fix | None, dict[str, Fix]]] = {}
    # The subjects' own new fixes.
    for subject, fixes in b.fixes_by_subject.items():
        book = state.books.get(subject)
        if book is None or not book.proximity:
            continue
        others: dict[str, Fix] = {}
        for entry in book.proximity:
            other = await _latest(b, device_id=entry.other_device_id)
            if other is not None:
                others[entry.other_device_id] = other
        pending[subject] = (max(fixes, key=lambda f: f.t), others)
    # The protected devices' new fixes.
    for f, _ in b.fixes:
        if (f.device_id, f.seq, f.t) not in b.new_fixes:
            continue
        if state.watchers is None:
            state.watchers = await zone_store.all_watchers(b.conn)
        for subject in state.watchers.get(f.device_id, []):
            if await judge.book(b, subject) is None:
                continue
            own, others = pending.get(subject, (None, {}))
            if own is None:
                own = await _latest(b, subject_id=subject)
            if f.device_id not in others or others[f.device_id].t <= f.t:
                others = {**others, f.device_id: f}
            pending[subject] = (own, others)
    resumed = await _resume(b, [s for s in pending if s not in state.prox])
    for subject, (own, others) in pending.items():
        current = (
            b.proximity.get(subject)
            or state.prox.get(subject)
            or resumed.get(subject, ProximityState())
        )
        b.proximity[subject], found = evaluate_proximity(
            state.books[subject], current, own, others, b.config.debounce
        )
        b.changes += found


async def _latest(
    b: Batch, *, device_id: str | None = None, subject_id: str | None = None
) -> Fix | None:
    if device_id is not None and device_id in b.state.last_fix:
        return b.state.last_fix[device_id]
    row = await positions.latest_fix(b.conn, device_id=device_id, subject_id=subject_id)
    return judge.fix_from_row(row) if row else None


async def _resume(b: Batch, subjects: list[str]) -> dict[str, ProximityState]:
    if not subjects:
        return {}
    found: dict[str, list[tuple[str, Fix, int]]] = defaultdict(list)
    for row in await alert_store.open_proximity(b.conn, subjects):
        first = Fix(
            device_id=row["device_id"],
            seq=None,
            t=row["fix_time"] or row["received_at"],
            lat=float(row["lat"]) if row["lat"] is not None else 0.0,
            lon=float(row["lon"]) if row["lon"] is not None else 0.0,
            acc=0.0,
            src="gnss",
            received_at=row["received_at"],
        )
        count = int((row["detail"] or {}).get("count") or 1)
        found[str(row["subject_id"])].append((row["rule_key"], first, count))
    return {s: resume_proximity(b.state.books[s], eps) for s, eps in found.items()}
