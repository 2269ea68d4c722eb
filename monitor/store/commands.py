"""Commands sent to devices and what became of them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = ["answer", "create", "expire_locates", "for_device"]

Conn = AsyncConnection[DictRow]

_COLUMNS = (
    "id, device_id, cmd, args, requested_by, requested_at, state, unanswered_at, answered_at,"
    " result"
)


async def create(
    conn: Conn, command_id: str, device_id: str, cmd: str, args: dict[str, Any] | None, by: str
) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO device_commands (id, device_id, cmd, args, requested_by)"
        f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (command_id, device_id, cmd, json.dumps(args) if args is not None else None, by),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def for_device(conn: Conn, device_id: str, limit: int = 100) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM device_commands WHERE device_id = %s"
        " ORDER BY requested_at DESC LIMIT %s",
        (device_id, limit),
    )
    return await cur.fetchall()


async def answer(
    conn: Conn, device_id: str, command_id: str, ok: bool, at: datetime, result: dict[str, Any]
) -> dict[str, Any] | None:
    """Record a cmd_result; a late answer to a locate keeps its `unanswered_at`."""
    cur = await conn.execute(
        "UPDATE device_commands SET state = %s, answered_at = %s, result = %s"
        " WHERE id = %s AND device_id = %s AND answered_at IS NULL"
        f" RETURNING {_COLUMNS}",
        ("ok" if ok else "failed", at, json.dumps(result), command_id, device_id),
    )
    return await cur.fetchone()


async def expire_locates(conn: Conn, within: timedelta) -> list[dict[str, Any]]:
    """Locates not answered `within` become unanswered (once)."""
    cur = await conn.execute(
        "UPDATE device_commands SET state = 'unanswered', unanswered_at = clock_timestamp()"
        " WHERE state = 'sent' AND cmd = 'locate' AND requested_at < clock_timestamp() - %s"
        f" RETURNING {_COLUMNS}",
        (within,),
    )
    return await cur.fetchall()
