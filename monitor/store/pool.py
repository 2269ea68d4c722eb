"""Connections: one async pool per process, opened at start-up and passed down."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

__all__ = ["Pool", "open_pool"]

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


async def _configure(conn: AsyncConnection[DictRow]) -> None:
    # Everything the service writes and reads is UTC; answers format times themselves.
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()


async def open_pool(database_url: str, min_size: int = 2, max_size: int = 10) -> Pool:
    pool: Pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        configure=_configure,
        open=False,
        connection_class=AsyncConnection[DictRow],
    )
    await pool.open(wait=True, timeout=30)
    return pool
