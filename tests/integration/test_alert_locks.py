"""Writers of alerts take the event lock before any alert row, so an escalation (or an
operator's acknowledgement) and an ingest batch amending the same alert wait for each
other in turn instead of deadlocking (PostgreSQL would abort one of them after a
second: the batch redone, or the acknowledgement refused)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import psycopg
from psycopg.rows import DictRow, dict_row

from monitor.store import alerts as alert_store
from monitor.store import migrate
from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor

NOW = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)


async def _connect(url: str) -> psycopg.AsyncConnection[DictRow]:
    return await psycopg.AsyncConnection.connect(url, row_factory=dict_row)


async def _waiting_on_a_lock(url: str, pid: int | None, timeout_s: float) -> bool:
    """Whether the backend `pid` (None: any other backend on the database) is waiting
    for a lock within `timeout_s` (polled)."""
    async with await _connect(url) as conn:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND (pid = %s OR %s::int IS NULL)",
                (pid, pid),
            )
            row = await cur.fetchone()
            if row is not None and int(row["n"]) > 0:
                return True
            await asyncio.sleep(0.02)
    return False


async def _open_alert(conn: psycopg.AsyncConnection[DictRow]) -> str:
    """A critical alert opened an hour ago, of no subject (administrators see it)."""
    async with conn.transaction():
        opened = await alert_store.insert(
            conn,
            alert_store.NewAlert(
                None,
                "BR-0001",
                "zone_exit",
                "critical",
                "home",
                None,
                NOW,
                NOW,
                51.13,
                71.43,
                {"count": 5},
            ),
        )
        alert_id = str(opened["id"])
        await conn.execute(
            "UPDATE alerts SET created_at = now() - interval '1 hour' WHERE id = %s",
            (alert_id,),
        )
    return alert_id


async def _changes(conn: psycopg.AsyncConnection[DictRow], alert_id: str) -> list[tuple[str, int]]:
    cur = await conn.execute(
        "SELECT change, (alert->'detail'->>'count')::int AS n FROM alert_events"
        " WHERE alert_id = %s ORDER BY event_id",
        (alert_id,),
    )
    return [(str(r["change"]), int(r["n"])) for r in await cur.fetchall()]


async def _escalation_meets_a_batch(url: str) -> list[tuple[str, int]]:
    ingest = await _connect(url)
    ticker = await _connect(url)
    async with ingest, ticker:
        alert_id = await _open_alert(ingest)

        async def escalate() -> list[dict[str, object]]:
            async with ticker.transaction():
                return await alert_store.escalate_due(ticker, 300, NOW)

        # An ingest batch holds the event lock (its amendments took it) when the ticker
        # escalates; the batch then amends the very alert that is due.
        async with ingest.transaction():
            await alert_store.hold_event_lock(ingest)
            escalation = asyncio.create_task(escalate())
            assert await _waiting_on_a_lock(url, ticker.info.backend_pid, 10)
            # Waits at most 5 s for a row lock rather than for ever.
            await ingest.execute("SET LOCAL lock_timeout = '5s'")
            await alert_store.amend_many(
                ingest, [alert_store.Amendment(alert_id, "updated", {"count": 6})]
            )
        escalated = await asyncio.wait_for(escalation, 10)
        assert [str(row["id"]) for row in escalated] == [alert_id]
        return await _changes(ingest, alert_id)


def test_an_escalation_waits_for_a_batch_amending_the_same_alert(database_url: str) -> None:
    migrate.apply(database_url)
    events = asyncio.run(_escalation_meets_a_batch(database_url))
    # Both changes, in commit order; the escalation is applied over the batch's count.
    assert events == [("opened", 5), ("updated", 6), ("escalated", 6)]


async def _acknowledgement_meets_a_batch(url: str, api: Api) -> tuple[int, list[tuple[str, int]]]:
    async with await _connect(url) as ingest:
        alert_id = await _open_alert(ingest)
        async with ingest.transaction():
            await alert_store.hold_event_lock(ingest)
            answer = asyncio.create_task(
                asyncio.to_thread(api.http.post, f"/api/v1/alerts/{alert_id}/acknowledge")
            )
            assert await _waiting_on_a_lock(url, None, 10)
            await ingest.execute("SET LOCAL lock_timeout = '5s'")
            await alert_store.amend_many(
                ingest, [alert_store.Amendment(alert_id, "updated", {"count": 6})]
            )
        response = await asyncio.wait_for(answer, 30)
        return response.status_code, await _changes(ingest, alert_id)


def test_an_acknowledgement_waits_for_a_batch_amending_the_same_alert(
    monitor: Monitor, database_url: str
) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    try:
        status, events = asyncio.run(_acknowledgement_meets_a_batch(database_url, api))
    finally:
        api.http.close()
    assert status == 200
    assert events == [("opened", 5), ("updated", 6), ("acknowledged", 6)]
