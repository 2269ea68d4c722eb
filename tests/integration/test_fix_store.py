"""Storing fixes: the straight copy for fixes known to be new, and what happens when
that knowledge is wrong (the unique index decides; nothing is doubled or lost)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from monitor.domain import Fix
from monitor.store import migrate, positions

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _fix(device: str, seq: int | None, lat: float = 51.1) -> Fix:
    t = T0 + timedelta(seconds=10 * (seq or 0))
    return Fix(device, seq, t, lat, 71.4, 8.0, "gnss", t + timedelta(seconds=1), 0.0, 80)


async def _insert(url: str, fixes: list[Fix], fresh: bool) -> set[tuple[str, int | None, datetime]]:
    conn = await psycopg.AsyncConnection.connect(url, row_factory=dict_row)
    async with conn, conn.transaction():
        return await positions.insert_fixes(conn, [(f, None) for f in fixes], fresh=fresh)


def _stored(url: str) -> list[tuple[str, int, float]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT device_id, seq, lat FROM fixes ORDER BY device_id, seq")
        return [(r[0], r[1], r[2]) for r in rows]


def test_fresh_fixes_are_copied_once_each_even_when_given_twice(database_url: str) -> None:
    migrate.apply(database_url)
    fixes = [_fix("dev-a", s) for s in (1, 2, 3)]
    new = asyncio.run(_insert(database_url, [*fixes, fixes[1]], fresh=True))
    assert new == {(f.device_id, f.seq, f.t) for f in fixes}
    assert _stored(database_url) == [("dev-a", 1, 51.1), ("dev-a", 2, 51.1), ("dev-a", 3, 51.1)]


def test_a_wrong_fresh_hint_falls_back_and_neither_doubles_nor_loses(database_url: str) -> None:
    migrate.apply(database_url)
    asyncio.run(_insert(database_url, [_fix("dev-a", 1), _fix("dev-a", 2)], fresh=False))
    # seq 2 is stored already, with another latitude: the hint is wrong.
    again = [_fix("dev-a", 2, lat=52.0), _fix("dev-a", 3), _fix("dev-b", 1)]
    new = asyncio.run(_insert(database_url, again, fresh=True))
    assert new == {(f.device_id, f.seq, f.t) for f in again[1:]}
    assert _stored(database_url) == [
        ("dev-a", 1, 51.1),
        ("dev-a", 2, 51.1),  # the record first stored stands
        ("dev-a", 3, 51.1),
        ("dev-b", 1, 51.1),
    ]


def test_fixes_without_seq_are_matched_by_time(database_url: str) -> None:
    migrate.apply(database_url)
    first = asyncio.run(_insert(database_url, [_fix("phone", None)], fresh=True))
    again = asyncio.run(_insert(database_url, [_fix("phone", None)], fresh=True))
    assert len(first) == 1
    assert again == set()
    assert len(_stored(database_url)) == 1
