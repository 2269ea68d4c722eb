"""The hash-chained, append-only audit log: consultations and changes.

Rows are chained by a trigger in the database (`0003_audit.sql`), so every process and
every path that inserts gets the same chain; `verify` recomputes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = ["Verification", "page", "record", "verify"]

Conn = AsyncConnection[DictRow]

_COLUMNS = (
    "id, at, actor, action, object_type, object_id, subject_id, source, outcome, reason,"
    " range_from, range_until, before, after, encode(hash, 'hex') AS hash"
)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


async def record(
    conn: Conn,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | None = None,
    *,
    subject_id: str | None = None,
    source: str | None = None,
    outcome: str = "ok",
    reason: str | None = None,
    range_from: datetime | None = None,
    range_until: datetime | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, object_type, object_id, subject_id, source,"
        " outcome, reason, range_from, range_until, before, after, prev_hash, hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', '')",
        (
            actor,
            action,
            object_type,
            object_id,
            subject_id,
            source,
            outcome,
            reason,
            range_from,
            range_until,
            _json(before),
            _json(after),
        ),
    )


async def page(
    conn: Conn,
    *,
    actor: str | None,
    subject_id: str | None,
    before_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if actor is not None:
        where.append("actor = %(actor)s")
        params["actor"] = actor
    if subject_id is not None:
        where.append("subject_id = %(subject)s")
        params["subject"] = subject_id
    if before_id is not None:
        where.append("id < %(before)s")
        params["before"] = before_id
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM audit_log {clause} ORDER BY id DESC LIMIT %(limit)s", params
    )
    return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class Verification:
    checked: int
    broken_at: int | None
    reason: str | None


def verify(database_url: str) -> Verification:
    """Walk the chain in id order; name the first row whose link does not hold."""
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "SELECT id, prev_hash = coalesce(lag(hash) OVER w, '\\x'::bytea) AS linked,"
            " hash = audit_digest(prev_hash, audit_log) AS intact"
            " FROM audit_log WINDOW w AS (ORDER BY id) ORDER BY id"
        )
        checked = 0
        for row_id, linked, intact in cur:
            checked += 1
            if not intact:
                return Verification(checked, int(row_id), "its content does not match its hash")
            if not linked:
                return Verification(
                    checked, int(row_id), "it does not follow the previous row's hash"
                )
    return Verification(checked, None, None)
