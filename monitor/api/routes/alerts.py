"""Alerts: the list, acknowledge, resolve, and the live websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, WebSocket, WebSocketDisconnect
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from monitor.alerts.hub import AlertEvent
from monitor.api import cursor as cursor_codec
from monitor.api.deps import (
    AccessReason,
    CurrentUser,
    Runtime,
    RuntimeDep,
    User,
    authenticate,
    require_roles,
    visible_subject,
)
from monitor.api.schemas import AlertResolve
from monitor.store import alerts as alert_store
from monitor.store import audit
from monitor.store import pool as pool_store
from monitor.store import subjects as subject_store

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

# How often a live websocket checks that its session is still alive (idle 30 min,
# 12 h in all, or ended by a lockout or logout).
SESSION_CHECK_S = 30.0
log = logging.getLogger(__name__)

Conn = AsyncConnection[DictRow]


async def _visible_ids(conn: Conn, user: User) -> list[str] | None:
    """None: every subject; otherwise the officer's caseload."""
    if user.sees_everyone:
        return None
    return await subject_store.ids_for_officer(conn, user.username)


@router.get("")
async def list_alerts(
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    subject_id: str | None = None,
    state: Literal["open", "acknowledged", "resolved", "unresolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    if subject_id is not None:
        await visible_subject(runtime, user, subject_id)
    before = None
    if cursor is not None:
        raw = cursor_codec.decode(cursor)
        if len(raw) != 1 or not isinstance(raw[0], int):
            raise HTTPException(422, "cursor: not a cursor this API gave out")
        before = raw[0]
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(conn, user.username, reason, subject_id, "alerts")
        visible = await _visible_ids(conn, user)
        rows = await alert_store.list_page(
            conn,
            subject_id=subject_id,
            state=state,
            visible_subjects=visible,
            before_no=before,
            limit=limit + 1,
        )
    page, more = rows[:limit], len(rows) > limit
    return {
        "items": [alert_store.alert_json(r) for r in page],
        "next": cursor_codec.encode([int(page[-1]["alert_no"])]) if more else None,
    }


def _subject(row: dict[str, Any]) -> str | None:
    return str(row["subject_id"]) if row["subject_id"] is not None else None


async def _visible_alert(
    conn: Conn, user: User, alert_id: str, for_change: bool = True
) -> dict[str, Any]:
    if for_change:
        # The event lock before the row's, as every writer of alerts takes them: an
        # ingest batch amending this alert at the same moment would otherwise deadlock
        # with this acknowledgement, and PostgreSQL would refuse one of the two.
        await alert_store.hold_event_lock(conn)
    row = await alert_store.get(conn, alert_id, for_update=for_change)
    if row is None:
        raise HTTPException(404, f"no alert {alert_id}")
    if not user.sees_everyone:
        visible = await subject_store.ids_for_officer(conn, user.username)
        if row["subject_id"] is None or str(row["subject_id"]) not in visible:
            raise HTTPException(404, f"no alert {alert_id}")
    return row


@router.get("/{alert_id}")
async def get_alert(
    alert_id: str, user: CurrentUser, runtime: RuntimeDep, reason: AccessReason
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    async with runtime.pool.connection() as conn:
        row = await _visible_alert(conn, user, alert_id, for_change=False)
        await subject_store.log_consultation(
            conn,
            user.username,
            reason,
            str(row["subject_id"]) if row["subject_id"] else None,
            f"alert {alert_id}",
        )
    return alert_store.alert_json(row)


@router.post("/{alert_id}/acknowledge")
async def acknowledge(alert_id: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    async with runtime.pool.connection() as conn, conn.transaction():
        row = await _visible_alert(conn, user, alert_id)
        if row["state"] == "resolved":
            raise HTTPException(409, "the alert is already resolved")
        if row["state"] == "acknowledged":
            return alert_store.alert_json(row)
        changed = await alert_store.record_change(
            conn, alert_id, "acknowledged", user.username, state="acknowledged"
        )
        await audit.record(
            conn,
            user.username,
            "acknowledge",
            "alert",
            alert_id,
            subject_id=_subject(row),
            before={"state": row["state"]},
            after={"state": "acknowledged"},
        )
    assert changed is not None
    return alert_store.alert_json(changed)


@router.post("/{alert_id}/resolve")
async def resolve(
    alert_id: str, body: AlertResolve, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    async with runtime.pool.connection() as conn, conn.transaction():
        row = await _visible_alert(conn, user, alert_id)
        if row["state"] == "resolved":
            raise HTTPException(409, "the alert is already resolved")
        if row["kind"] == "tamper" and row["cleared_at"] is None:
            raise HTTPException(
                409, "a tamper alert is resolved only after the device reports the strap closed"
            )
        changed = await alert_store.record_change(
            conn,
            alert_id,
            "resolved",
            user.username,
            state="resolved",
            resolution_note=body.note,
        )
        await audit.record(
            conn,
            user.username,
            "resolve",
            "alert",
            alert_id,
            subject_id=_subject(row),
            before={"state": row["state"]},
            after={"state": "resolved", "note": body.note},
        )
    assert changed is not None
    return alert_store.alert_json(changed)


# the live websocket


async def _may_see(runtime: Runtime, user: User) -> Any:
    """A predicate on alert events for this user, kept current for officers."""
    # Alerts raised during a planned suspension are recorded, not pushed live.
    if user.sees_everyone:
        return lambda e: not _suspended(e.alert)
    officers = runtime.officers
    return lambda e: (
        e.subject_id is not None
        and officers.get(e.subject_id) == user.username
        and not _suspended(e.alert)
    )


def _suspended(alert: dict[str, Any]) -> bool:
    return bool((alert.get("detail") or {}).get("suspended"))


@router.websocket("/live")
async def live(
    websocket: WebSocket,
    token: str | None = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> None:
    runtime: Runtime = websocket.app.state.runtime
    user = await authenticate(runtime, token)
    if user is None:
        await websocket.close(code=4401, reason="missing, invalid or expired token")
        return
    if user.role not in ("administrator", "operator", "officer"):
        await websocket.close(code=4403, reason=f"the {user.role} role may not watch alerts")
        return
    await websocket.accept()
    visible = await _may_see(runtime, user)
    sub = runtime.hub.subscribe(visible)
    try:
        async with runtime.pool.connection() as conn:
            await subject_store.log_consultation(
                conn, user.username, "supervision: live alert feed", None, "alerts/live"
            )
            await conn.commit()
            if after is None:
                async with conn.transaction():
                    await pool_store.read_one_snapshot(conn)
                    last = await alert_store.latest_event_id(conn)
                    caseload = await _visible_ids(conn, user)
                    rows = await alert_store.open_alerts(conn, caseload)
                await websocket.send_json(
                    {
                        "type": "snapshot",
                        "alerts": [
                            a for a in map(alert_store.alert_json, rows) if not _suspended(a)
                        ],
                        "event_id": last,
                    }
                )
            else:
                last = after
                while True:
                    rows = await alert_store.events_after(conn, last, 1000)
                    for r in rows:
                        last = int(r["event_id"])
                        event = AlertEvent.of(last, r["alert"])
                        if visible(event):
                            await websocket.send_text(event.text)
                    if len(rows) < 1000:
                        break
        await _relay(websocket, sub, last, lambda: authenticate(runtime, token))
    except WebSocketDisconnect:
        pass
    finally:
        runtime.hub.unsubscribe(sub)


async def _session_ends(check: Callable[[], Awaitable[User | None]]) -> None:
    """Returns when the session behind the websocket has expired or been ended."""
    while True:
        await asyncio.sleep(SESSION_CHECK_S)
        if await check() is None:
            return


async def _relay(
    websocket: WebSocket, sub: Any, last: int, check: Callable[[], Awaitable[User | None]]
) -> None:
    receiver = asyncio.create_task(_drain_client(websocket))
    overflow = asyncio.create_task(sub.overflowed.wait())
    expiry = asyncio.create_task(_session_ends(check))
    try:
        while True:
            getter = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait(
                {getter, receiver, overflow, expiry}, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
            if receiver in done:
                return
            if expiry in done:
                await websocket.close(code=4401, reason="session expired; log in again")
                return
            if overflow in done:
                await websocket.close(
                    code=4008,
                    reason=f"too slow to keep up; reconnect with after={last}",
                )
                return
            # Send what is queued already without a wait per event: in a burst (many
            # alerts at once, many clients) that is most of the work.
            batch: list[AlertEvent] = [getter.result()]
            while True:
                try:
                    batch.append(sub.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            for event in batch:
                if event.event_id <= last:
                    continue  # already sent in the snapshot or the catch-up
                last = event.event_id
                await websocket.send_text(event.text)
    finally:
        for task in (receiver, overflow, expiry):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _drain_client(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
