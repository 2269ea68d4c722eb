"""Restraint orders with their history (each change is a new version), and legal holds."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = ["add_version", "create", "current", "history", "hold", "holds", "release"]

Conn = AsyncConnection[DictRow]

_COLUMNS = (
    "id, version, subject_id, authority, reference, starts_at, ends_at, status, home_lon,"
    " home_lat, radius_m, notes, recorded_at, recorded_by"
)
_FIELDS = (
    "authority",
    "reference",
    "starts_at",
    "ends_at",
    "status",
    "home_lon",
    "home_lat",
    "radius_m",
    "notes",
)


async def create(conn: Conn, subject_id: str, fields: dict[str, Any], by: str) -> dict[str, Any]:
    values = [fields.get(f) for f in _FIELDS]
    cur = await conn.execute(
        f"INSERT INTO orders (id, version, subject_id, {', '.join(_FIELDS)}, recorded_by)"
        f" VALUES (%s, 1, %s, {', '.join(['%s'] * len(_FIELDS))}, %s) RETURNING {_COLUMNS}",
        (uuid.uuid4(), subject_id, *values, by),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def current(conn: Conn, order_id: str, for_update: bool = False) -> dict[str, Any] | None:
    try:
        key = uuid.UUID(order_id)
    except ValueError:
        return None
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM orders WHERE id = %s ORDER BY version DESC LIMIT 1{lock}",
        (key,),
    )
    return await cur.fetchone()


async def add_version(
    conn: Conn, previous: dict[str, Any], changes: dict[str, Any], by: str
) -> dict[str, Any]:
    merged = {f: changes.get(f, previous[f]) for f in _FIELDS}
    cur = await conn.execute(
        f"INSERT INTO orders (id, version, subject_id, {', '.join(_FIELDS)}, recorded_by)"
        f" VALUES (%s, %s, %s, {', '.join(['%s'] * len(_FIELDS))}, %s) RETURNING {_COLUMNS}",
        (
            previous["id"],
            previous["version"] + 1,
            previous["subject_id"],
            *[merged[f] for f in _FIELDS],
            by,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def history(conn: Conn, subject_id: str) -> list[dict[str, Any]]:
    """Every version of every order of the subject, oldest first."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM orders WHERE subject_id = %s ORDER BY starts_at, id, version",
        (subject_id,),
    )
    return await cur.fetchall()


async def hold(conn: Conn, subject_id: str, reason: str, by: str) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO legal_holds (subject_id, reason, set_by) VALUES (%s, %s, %s)"
        " RETURNING id, subject_id, reason, set_by, set_at, released_by, released_at",
        (subject_id, reason, by),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def release(conn: Conn, hold_id: int, subject_id: str, by: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "UPDATE legal_holds SET released_by = %s, released_at = clock_timestamp()"
        " WHERE id = %s AND subject_id = %s AND released_at IS NULL"
        " RETURNING id, subject_id, reason, set_by, set_at, released_by, released_at",
        (by, hold_id, subject_id),
    )
    return await cur.fetchone()


async def holds(conn: Conn, subject_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, subject_id, reason, set_by, set_at, released_by, released_at"
        " FROM legal_holds WHERE subject_id = %s ORDER BY id",
        (subject_id,),
    )
    return await cur.fetchall()
