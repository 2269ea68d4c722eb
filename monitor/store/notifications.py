"""LISTEN for the service's channels on a dedicated connection, reconnecting as needed.

After a (re)connection every handler is called once with None, since notifications sent
while the connection was down are lost: handlers then catch up from the tables.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql

__all__ = ["listen"]

log = logging.getLogger(__name__)


async def listen(
    database_url: str,
    handlers: dict[str, Callable[[str | None], None]],
) -> None:
    delay = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                for channel in handlers:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                delay = 0.5
                for handler in handlers.values():
                    handler(None)
                async for note in conn.notifies():
                    found = handlers.get(note.channel)
                    if found is not None:
                        found(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("notification connection lost (%s); reconnecting in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
