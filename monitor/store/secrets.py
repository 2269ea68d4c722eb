"""Keys generated once by whichever process starts first, then shared through the database."""

from __future__ import annotations

import secrets as random

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = ["get_or_create"]

Conn = AsyncConnection[DictRow]


async def get_or_create(conn: Conn, name: str, size: int = 32) -> bytes:
    await conn.execute(
        "INSERT INTO service_secrets (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (name, random.token_bytes(size)),
    )
    cur = await conn.execute("SELECT value FROM service_secrets WHERE name = %s", (name,))
    row = await cur.fetchone()
    assert row is not None
    return bytes(row["value"])
