"""Fixes, device events and refused records: batched writes (COPY) and reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import DictRow

from monitor.domain import DeviceEvent, Fix, Rejection

__all__ = [
    "accounted_seqs",
    "accounted_seqs_many",
    "fixes_from",
    "insert_events",
    "insert_fixes",
    "insert_rejections",
    "insert_transitions",
    "last_accounted",
    "latest_fix",
    "load_acks",
    "none_before",
    "recent_fixes",
    "recent_fixes_many",
    "rejected_page",
    "save_acks",
    "stored_seqs",
    "subject_events",
    "subject_fixes",
    "subject_transitions",
]

Conn = AsyncConnection[DictRow]

_FIX_COLS = "device_id, seq, t, received_at, subject_id, lat, lon, acc, src, spd, batt"
_EVENT_COLS = "device_id, seq, t, received_at, subject_id, kind, detail"


# Fixes are copied in PostgreSQL's binary format: about a fifth of the client's CPU
# per row of the text format (measured: 7 against 38 ms per 10,000 rows), which at
# 10,000 fixes/s is a few per cent of the whole service. The types are the columns'.
_FIX_TYPES = [
    "text", "int8", "timestamptz", "timestamptz", "uuid",
    "float8", "float8", "float4", "text", "float4", "int2",
]  # fmt: skip


@lru_cache(maxsize=1 << 18)
def _subject_uuid(subject: str) -> uuid.UUID:
    # The binary format wants a UUID; a subject's fixes come ten at a time, every upload.
    return uuid.UUID(subject)


def _fix_row(f: Fix, subject: str | None) -> tuple[Any, ...]:
    return (
        f.device_id,
        f.seq,
        f.t,
        f.received_at,
        _subject_uuid(subject) if subject is not None else None,
        f.lat,
        f.lon,
        f.acc,
        f.src,
        f.spd,
        f.batt,
    )


async def insert_fixes(
    conn: Conn, fixes: Sequence[tuple[Fix, str | None]], fresh: bool = False
) -> set[tuple[str, int | None, datetime]]:
    """Store fixes (each with the subject it belongs to, or None); return the keys of
    those that were new. A record already stored is left as it was.

    `fresh`: the caller knows none of them is stored yet (every seq above its device's
    accounted watermark). They are then copied straight into the table, one pass instead
    of staging, sorting and returning every key. The unique index is still the judge: if
    one is stored after all, that copy is rolled back to its savepoint and the fixes go
    the careful way, so a wrong hint costs time, never a duplicate or a lost fix."""
    if not fixes:
        return set()
    if fresh:
        rows: dict[tuple[str, int | None, datetime], tuple[Any, ...]] = {}
        for f, subject in fixes:
            rows.setdefault((f.device_id, f.seq, f.t), _fix_row(f, subject))
        try:
            async with (
                conn.transaction(),
                conn.cursor().copy(f"COPY fixes ({_FIX_COLS}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(_FIX_TYPES)
                for row in rows.values():
                    await copy.write_row(row)
            return set(rows)
        except UniqueViolation:
            pass
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS fix_stage (LIKE fixes) ON COMMIT DELETE ROWS"
    )
    async with conn.cursor().copy(
        f"COPY fix_stage ({_FIX_COLS}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(_FIX_TYPES)
        for f, subject in fixes:
            await copy.write_row(_fix_row(f, subject))
    cur = await conn.execute(
        f"INSERT INTO fixes ({_FIX_COLS}) SELECT DISTINCT ON (device_id, seq, t) {_FIX_COLS}"
        " FROM fix_stage ON CONFLICT DO NOTHING RETURNING device_id, seq, t"
    )
    new = {(r["device_id"], r["seq"], r["t"]) for r in await cur.fetchall()}
    await conn.execute("TRUNCATE fix_stage")
    return new


async def insert_events(
    conn: Conn, events: Sequence[tuple[DeviceEvent, str | None]]
) -> set[tuple[str, int | None, datetime]]:
    if not events:
        return set()
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS event_stage (LIKE device_events) ON COMMIT DELETE ROWS"
    )
    async with conn.cursor().copy(f"COPY event_stage ({_EVENT_COLS}) FROM STDIN") as copy:
        for e, subject in events:
            detail = json.dumps(e.detail) if e.detail is not None else None
            await copy.write_row((e.device_id, e.seq, e.t, e.received_at, subject, e.kind, detail))
    cur = await conn.execute(
        f"INSERT INTO device_events ({_EVENT_COLS})"
        f" SELECT DISTINCT ON (device_id, seq, t) {_EVENT_COLS} FROM event_stage"
        " ON CONFLICT DO NOTHING RETURNING device_id, seq, t"
    )
    new = {(r["device_id"], r["seq"], r["t"]) for r in await cur.fetchall()}
    await conn.execute("TRUNCATE event_stage")
    return new


async def insert_rejections(conn: Conn, rejections: Sequence[Rejection]) -> None:
    if not rejections:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO rejected_messages"
            " (received_at, topic, device_id, seq, reason, raw, record)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (
                    r.received_at,
                    r.topic,
                    r.device_id,
                    r.seq,
                    r.reason,
                    r.raw,
                    json.dumps(r.record, default=str) if r.record is not None else None,
                )
                for r in rejections
            ],
        )


async def load_acks(conn: Conn, device_ids: Sequence[str]) -> dict[str, int]:
    # Planned each time with the ids in hand (prepare=False), never as a prepared generic
    # plan: one made while the table was nearly empty (a fleet's first minutes) scanned
    # every row against every id of a thousand-id batch, and after a restart of 100,000
    # devices a backend was in that query up to two thirds of the time (measured; warm-up
    # at 6,300 fixes/s instead of 10,000). A plan with the ids as constants uses the index
    # or hashes them.
    cur = await conn.execute(
        "SELECT device_id, upto FROM device_acks WHERE device_id = ANY(%s)",
        (list(device_ids),),
        prepare=False,
    )
    return {r["device_id"]: int(r["upto"]) for r in await cur.fetchall()}


async def accounted_seqs(conn: Conn, device_id: str, above: int) -> set[int]:
    """Every seq above `above` this device has stored or refused."""
    cur = await conn.execute(
        "SELECT seq FROM fixes WHERE device_id = %(d)s AND seq > %(s)s"
        " UNION SELECT seq FROM device_events WHERE device_id = %(d)s AND seq > %(s)s"
        " UNION SELECT seq FROM rejected_messages WHERE device_id = %(d)s AND seq > %(s)s",
        {"d": device_id, "s": above},
    )
    return {int(r["seq"]) for r in await cur.fetchall()}


async def accounted_seqs_many(conn: Conn, above: dict[str, int]) -> dict[str, set[int]]:
    """`accounted_seqs` for many devices in one statement (each above its own seq)."""
    if not above:
        return {}
    cur = await conn.execute(
        "WITH w (device_id, upto) AS (SELECT * FROM unnest(%(d)s::text[], %(s)s::bigint[]))"
        " SELECT x.device_id, x.seq FROM w JOIN fixes x"
        "   ON x.device_id = w.device_id AND x.seq > w.upto"
        " UNION SELECT x.device_id, x.seq FROM w JOIN device_events x"
        "   ON x.device_id = w.device_id AND x.seq > w.upto"
        " UNION SELECT x.device_id, x.seq FROM w JOIN rejected_messages x"
        "   ON x.device_id = w.device_id AND x.seq > w.upto",
        {"d": list(above), "s": list(above.values())},
    )
    found: dict[str, set[int]] = {d: set() for d in above}
    for r in await cur.fetchall():
        found[r["device_id"]].add(int(r["seq"]))
    return found


async def stored_seqs(conn: Conn, seqs: dict[str, list[int]]) -> set[tuple[str, int]]:
    """Of the given (device, seq) pairs, those already stored or refused, whatever their
    time: a resend of an acknowledged seq with another `t` is the same record."""
    pairs = [(d, s) for d, found in seqs.items() for s in found]
    if not pairs:
        return set()
    cur = await conn.execute(
        "WITH w (device_id, seq) AS (SELECT * FROM unnest(%(d)s::text[], %(s)s::bigint[]))"
        " SELECT x.device_id, x.seq FROM w JOIN fixes x"
        "   ON x.device_id = w.device_id AND x.seq = w.seq"
        " UNION SELECT x.device_id, x.seq FROM w JOIN device_events x"
        "   ON x.device_id = w.device_id AND x.seq = w.seq"
        " UNION SELECT x.device_id, x.seq FROM w JOIN rejected_messages x"
        "   ON x.device_id = w.device_id AND x.seq = w.seq",
        {"d": [d for d, _ in pairs], "s": [s for _, s in pairs]},
    )
    return {(r["device_id"], int(r["seq"])) for r in await cur.fetchall()}


async def last_accounted(conn: Conn, device_ids: list[str]) -> dict[str, datetime]:
    """When each device last had a record accounted (its ack watermark written): what
    liveness knows of a device it has not heard itself, after a restart or a takeover."""
    if not device_ids:
        return {}
    cur = await conn.execute(
        "SELECT device_id, updated_at FROM device_acks WHERE device_id = ANY(%s)",
        (device_ids,),
        prepare=False,
    )
    return {r["device_id"]: r["updated_at"] for r in await cur.fetchall()}


async def save_acks(conn: Conn, acks: dict[str, int]) -> None:
    if not acks:
        return
    # One statement for the batch (a batch acknowledges hundreds of devices), in a fixed
    # order so two writers lock the same rows in the same order.
    devices = sorted(acks)
    await conn.execute(
        "INSERT INTO device_acks (device_id, upto, updated_at)"
        " SELECT d, u, now() FROM unnest(%s::text[], %s::bigint[]) AS a(d, u)"
        " ON CONFLICT (device_id) DO UPDATE"
        " SET upto = GREATEST(device_acks.upto, EXCLUDED.upto), updated_at = now()",
        (devices, [acks[d] for d in devices]),
    )


async def recent_fixes(
    conn: Conn, subject_id: str, before: datetime, limit: int
) -> list[dict[str, Any]]:
    """The subject's last fixes before an instant, oldest first (to warm rule state)."""
    cur = await conn.execute(
        f"SELECT {_FIX_COLS} FROM fixes WHERE subject_id = %s AND t < %s ORDER BY t DESC LIMIT %s",
        (subject_id, before, limit),
    )
    rows = await cur.fetchall()
    rows.reverse()
    return rows


async def recent_fixes_many(
    conn: Conn, before: dict[str, datetime], limit: int
) -> dict[str, list[dict[str, Any]]]:
    """`recent_fixes` for many subjects (each before its own instant) in one statement."""
    if not before:
        return {}
    cur = await conn.execute(
        "SELECT f.* FROM unnest(%s::uuid[], %s::timestamptz[]) AS w (subject_id, before)"
        f" CROSS JOIN LATERAL (SELECT {_FIX_COLS} FROM fixes"
        "   WHERE subject_id = w.subject_id AND t < w.before ORDER BY t DESC LIMIT %s) f",
        (list(before), list(before.values()), limit),
    )
    found: dict[str, list[dict[str, Any]]] = {s: [] for s in before}
    for r in await cur.fetchall():
        found[str(r["subject_id"])].append(r)
    for rows in found.values():
        rows.sort(key=lambda r: r["t"])  # oldest first; the join does not promise an order
    return found


async def _time_page(
    conn: Conn,
    table: str,
    columns: str,
    subject_id: str,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    where = ["subject_id = %(s)s"]
    params: dict[str, Any] = {"s": subject_id, "limit": limit}
    if since is not None:
        where.append("t >= %(since)s")
        params["since"] = since
    if until is not None:
        where.append("t < %(until)s")
        params["until"] = until
    if after is not None:
        where.append("(t, device_id, coalesce(seq, 0)) > (%(at)s, %(ad)s, %(aseq)s)")
        params.update(at=after[0], ad=after[1], aseq=after[2])
    cur = await conn.execute(
        f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)}"
        " ORDER BY t, device_id, coalesce(seq, 0) LIMIT %(limit)s",
        params,
    )
    return await cur.fetchall()


async def subject_fixes(
    conn: Conn,
    subject_id: str,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of the subject's fixes, oldest first; `after` is the last row of the
    previous page (t, device_id, seq)."""
    return await _time_page(conn, "fixes", _FIX_COLS, subject_id, since, until, after, limit)


async def rejected_page(
    conn: Conn, device_id: str | None, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """Refused messages and records, newest first, keyset-paged on id."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if device_id is not None:
        where.append("device_id = %(device)s")
        params["device"] = device_id
    if before_id is not None:
        where.append("id < %(before)s")
        params["before"] = before_id
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cur = await conn.execute(
        "SELECT id, received_at, topic, device_id, seq, reason, raw, record"
        f" FROM rejected_messages {clause} ORDER BY id DESC LIMIT %(limit)s",
        params,
    )
    return await cur.fetchall()


async def insert_transitions(conn: Conn, found: Sequence[tuple[str, Any]]) -> None:
    """Enter and exit events (monitor.rules.transitions.Transition), each with its
    subject: a batch's in one pipelined statement."""
    if not found:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO zone_transitions (subject_id, rule_key, zone_id, t, entered, device_id,"
            " seq, lat, lon) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (
                    subject_id,
                    tr.rule_key,
                    tr.zone_id,
                    tr.fix.t,
                    tr.entered,
                    tr.fix.device_id,
                    tr.fix.seq,
                    tr.fix.lat,
                    tr.fix.lon,
                )
                for subject_id, tr in found
            ],
        )


async def subject_transitions(
    conn: Conn, subject_id: str, since: datetime | None, until: datetime | None, limit: int
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT rule_key, zone_id, t, entered, device_id, seq, lat, lon FROM zone_transitions"
        " WHERE subject_id = %s AND (%s::timestamptz IS NULL OR t >= %s)"
        " AND (%s::timestamptz IS NULL OR t < %s) ORDER BY t LIMIT %s",
        (subject_id, since, since, until, until, limit),
    )
    return await cur.fetchall()


async def subject_events(
    conn: Conn,
    subject_id: str,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of the subject's device events, oldest first (as subject_fixes pages)."""
    return await _time_page(
        conn, "device_events", _EVENT_COLS, subject_id, since, until, after, limit
    )


async def fixes_from(
    conn: Conn, subject_id: str, since: datetime, limit: int
) -> list[dict[str, Any]]:
    """The subject's stored fixes from `since` on, oldest first, at most `limit`."""
    cur = await conn.execute(
        f"SELECT {_FIX_COLS} FROM fixes WHERE subject_id = %s AND t >= %s ORDER BY t LIMIT %s",
        (subject_id, since, limit),
    )
    return await cur.fetchall()


async def none_before(conn: Conn, subject_id: str, t: datetime) -> bool:
    """Whether the subject has no stored fix before `t` (a window from its start)."""
    cur = await conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM fixes WHERE subject_id = %s AND t < %s) AS first",
        (subject_id, t),
    )
    row = await cur.fetchone()
    return bool(row and row["first"])


async def latest_fix(
    conn: Conn, *, device_id: str | None = None, subject_id: str | None = None
) -> dict[str, Any] | None:
    """The latest stored fix of a device, or of a subject."""
    column, value = ("device_id", device_id) if device_id else ("subject_id", subject_id)
    cur = await conn.execute(
        f"SELECT {_FIX_COLS} FROM fixes WHERE {column} = %s ORDER BY t DESC LIMIT 1",
        (value,),
    )
    return await cur.fetchone()
