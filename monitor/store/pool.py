"""Connections: one async pool per process, opened at start-up and passed down."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

__all__ = ["Pool", "open_pool", "ping", "read_one_snapshot"]

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


async def open_pool(
    database_url: str,
    min_size: int = 2,
    max_size: int = 10,
    idle_in_transaction_s: float | None = None,
) -> Pool:
    """`idle_in_transaction_s`: cluster mode ends a transaction left idle this long (a
    process paused mid-batch), so that it cannot hold up a new owner's claim."""

    async def configure(conn: AsyncConnection[DictRow]) -> None:
        # Everything the service writes and reads is UTC; answers format times themselves.
        await conn.execute("SET TIME ZONE 'UTC'")
        if idle_in_transaction_s is not None:
            ms = int(idle_in_transaction_s * 1000)
            await conn.execute(f"SET idle_in_transaction_session_timeout = {ms}")
        await conn.commit()

    pool: Pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        configure=configure,
        open=False,
        connection_class=AsyncConnection[DictRow],
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def ping(conn: AsyncConnection[DictRow]) -> None:
    """A round trip to the database; raises when it does not answer."""
    await conn.execute("SELECT 1")


async def read_one_snapshot(conn: AsyncConnection[DictRow]) -> None:
    """Make the transaction just begun on `conn` see one snapshot of the database
    (REPEATABLE READ), so that what it reads in several statements agrees: call it first
    inside `conn.transaction()`."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
