"""Alerts and their event history.

Every change of an alert writes the alert row and an alert event whose `event_id` is
taken under a transaction-scoped advisory lock, held until commit: a transaction that
takes a larger id therefore commits after every smaller one, so `event_id` grows in
commit order, and a reader that has seen N and asks for `> N` misses nothing. The
change is announced with NOTIFY, which PostgreSQL delivers at commit, in commit order.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from monitor.domain import iso

__all__ = [
    "CHANNEL",
    "NewAlert",
    "alert_json",
    "events_after",
    "get",
    "insert",
    "latest_event_id",
    "list_page",
    "open_alerts",
    "record_change",
]

Conn = AsyncConnection[DictRow]

CHANNEL = "alert_events"
_EVENT_LOCK = 0x616C6572  # "aler"

_COLUMNS = (
    "id, alert_no, subject_id, device_id, kind, severity, state, rule_key, zone_id, fix_time,"
    " received_at, lat, lon, detail, event_id, created_at, updated_at, cleared_at,"
    " acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution_note"
)


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    """An alert as the API and the websocket show it (operator-api.md)."""
    detail = dict(row["detail"] or {})
    for name in ("cleared_at", "acknowledged_at", "resolved_at"):
        if row.get(name) is not None:
            detail.setdefault(name, iso(row[name]))
    if row.get("acknowledged_by"):
        detail.setdefault("acknowledged_by", row["acknowledged_by"])
    if row.get("resolved_by"):
        detail.setdefault("resolved_by", row["resolved_by"])
    if row.get("resolution_note"):
        detail.setdefault("resolution_note", row["resolution_note"])
    return {
        "id": str(row["id"]),
        "event_id": int(row["event_id"]),
        "subject_id": str(row["subject_id"]) if row["subject_id"] is not None else None,
        "device_id": row["device_id"],
        "kind": row["kind"],
        "severity": row["severity"],
        "state": row["state"],
        "fix_time": iso(row["fix_time"]),
        "received_at": iso(row["received_at"]),
        "lat": row["lat"],
        "lon": row["lon"],
        "zone_id": str(row["zone_id"]) if row["zone_id"] is not None else None,
        "detail": detail,
    }


@dataclass(frozen=True, slots=True)
class NewAlert:
    subject_id: str | None
    device_id: str | None
    kind: str
    severity: str
    rule_key: str | None
    zone_id: str | None
    fix_time: datetime | None
    received_at: datetime
    lat: float | None
    lon: float | None
    detail: dict[str, Any]


async def _next_event_id(conn: Conn) -> int:
    # One round trip: nextval is computed for the row the lock's CTE yields, so only
    # once the lock is held (event ids are then committed in the order they are drawn).
    cur = await conn.execute(
        "WITH held AS (SELECT pg_advisory_xact_lock(%s))"
        " SELECT nextval('alert_event_ids') AS id FROM held",
        (_EVENT_LOCK,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def _log_event(conn: Conn, row: dict[str, Any], change: str, actor: str | None) -> None:
    # The event and its notification (delivered at commit) in one round trip.
    await conn.execute(
        "WITH logged AS (INSERT INTO alert_events (event_id, alert_id, at, change, actor, alert)"
        " VALUES (%s, %s, clock_timestamp(), %s, %s, %s) RETURNING event_id)"
        " SELECT pg_notify(%s, event_id::text) FROM logged",
        (row["event_id"], row["id"], change, actor, json.dumps(alert_json(row)), CHANNEL),
    )


async def insert(conn: Conn, alert: NewAlert, actor: str | None = None) -> dict[str, Any]:
    """Open a new alert; the caller's transaction commits it."""
    event_id = await _next_event_id(conn)
    cur = await conn.execute(
        "INSERT INTO alerts (id, subject_id, device_id, kind, severity, state, rule_key,"
        " zone_id, fix_time, received_at, lat, lon, detail, event_id)"
        " VALUES (%s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_COLUMNS}",
        (
            uuid.uuid4(),
            alert.subject_id,
            alert.device_id,
            alert.kind,
            alert.severity,
            alert.rule_key,
            alert.zone_id,
            alert.fix_time,
            alert.received_at,
            alert.lat,
            alert.lon,
            json.dumps(alert.detail),
            event_id,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    await _log_event(conn, row, "opened", actor)
    return row


async def record_change(
    conn: Conn,
    alert_id: str,
    change: str,
    actor: str | None,
    *,
    state: str | None = None,
    detail_patch: dict[str, Any] | None = None,
    cleared_at: datetime | None = None,
    resolution_note: str | None = None,
) -> dict[str, Any] | None:
    """Apply one change to an alert and log it as an alert event; None if no such alert."""
    event_id = await _next_event_id(conn)
    sets = ["event_id = %(event_id)s", "updated_at = clock_timestamp()"]
    params: dict[str, Any] = {"id": alert_id, "event_id": event_id}
    if state is not None:
        sets.append("state = %(state)s")
        params["state"] = state
        if state == "acknowledged":
            sets += ["acknowledged_at = clock_timestamp()", "acknowledged_by = %(actor)s"]
        if state == "resolved":
            sets += [
                "resolved_at = clock_timestamp()",
                "resolved_by = %(actor)s",
                "resolution_note = %(note)s",
            ]
            params["note"] = resolution_note
        params["actor"] = actor
    if detail_patch:
        sets.append("detail = detail || %(patch)s::jsonb")
        params["patch"] = json.dumps(detail_patch)
    if cleared_at is not None:
        sets.append("cleared_at = coalesce(cleared_at, %(cleared)s)")
        params["cleared"] = cleared_at
    cur = await conn.execute(
        f"UPDATE alerts SET {', '.join(sets)} WHERE id = %(id)s RETURNING {_COLUMNS}", params
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await _log_event(conn, row, change, actor)
    return row


async def get(conn: Conn, alert_id: str, for_update: bool = False) -> dict[str, Any] | None:
    try:
        uuid.UUID(alert_id)
    except ValueError:
        return None
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = %s{lock}", (alert_id,))
    return await cur.fetchone()


async def open_alerts(conn: Conn, subject_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Alerts not yet resolved, newest first; only these subjects' when given."""
    if subject_ids is None:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE state <> 'resolved' ORDER BY alert_no DESC"
        )
    else:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE state <> 'resolved' AND subject_id = ANY(%s)"
            " ORDER BY alert_no DESC",
            (subject_ids,),
        )
    return await cur.fetchall()


async def latest_event_id(conn: Conn) -> int:
    cur = await conn.execute("SELECT coalesce(max(event_id), 0) AS n FROM alert_events")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def events_after(conn: Conn, after: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Alert events with event_id > after, oldest first (the alert as of each change)."""
    cur = await conn.execute(
        "SELECT event_id, alert_id, change, actor, alert FROM alert_events"
        " WHERE event_id > %s ORDER BY event_id LIMIT %s",
        (after, limit),
    )
    return await cur.fetchall()


async def list_page(
    conn: Conn,
    *,
    subject_id: str | None,
    state: str | None,
    visible_subjects: list[str] | None,
    before_no: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paged on alert_no."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if subject_id is not None:
        where.append("subject_id = %(subject)s")
        params["subject"] = subject_id
    if state is not None:
        if state == "unresolved":
            where.append("state <> 'resolved'")
        else:
            where.append("state = %(state)s")
            params["state"] = state
    if visible_subjects is not None:
        where.append("subject_id = ANY(%(visible)s)")
        params["visible"] = visible_subjects
    if before_no is not None:
        where.append("alert_no < %(before)s")
        params["before"] = before_no
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM alerts {clause} ORDER BY alert_no DESC LIMIT %(limit)s", params
    )
    return await cur.fetchall()
