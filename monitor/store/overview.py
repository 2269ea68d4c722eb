"""Reads for the operator's map: many subjects at once (their last fixes, status orders,
zones in force, unresolved alerts) and one subject's recent track."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = [
    "alert_summary",
    "last_fixes",
    "shared_zones",
    "status_orders",
    "subjects",
    "track",
    "zones_in_force",
]

Conn = AsyncConnection[DictRow]

_ZONE_COLUMNS = (
    "id, subject_id, zone_set, kind, name, feature, schedule, source, valid_from, valid_until,"
    " created_at, created_by"
)


def _keys(subject_ids: Sequence[str]) -> list[uuid.UUID]:
    return [uuid.UUID(s) for s in subject_ids]


async def subjects(conn: Conn, officer: str | None) -> list[dict[str, Any]]:
    """Every subject, or only an officer's caseload, by name."""
    columns = "id, name, external_id, timezone, officer"
    if officer is None:
        cur = await conn.execute(f"SELECT {columns} FROM subjects ORDER BY name, id")
    else:
        cur = await conn.execute(
            f"SELECT {columns} FROM subjects WHERE officer = %s ORDER BY name, id", (officer,)
        )
    return await cur.fetchall()


async def last_fixes(conn: Conn, subject_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Each subject's latest fix by fix time (subjects without one are left out)."""
    if not subject_ids:
        return []
    cur = await conn.execute(
        "SELECT s.id AS subject_id, f.device_id, f.seq, f.t, f.received_at, f.lat, f.lon,"
        " f.acc, f.src, f.batt"
        " FROM unnest(%s::uuid[]) AS s(id)"
        " CROSS JOIN LATERAL ("
        "   SELECT device_id, seq, t, received_at, lat, lon, acc, src, batt FROM fixes"
        "   WHERE subject_id = s.id ORDER BY t DESC LIMIT 1"
        " ) AS f",
        (_keys(subject_ids),),
    )
    return await cur.fetchall()


async def status_orders(conn: Conn, subject_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every status order of these subjects, in the order they were recorded."""
    if not subject_ids:
        return []
    cur = await conn.execute(
        "SELECT subject_id, status, home_lon, home_lat, radius_m, zone_id, effective_at,"
        " recorded_at, set_by FROM subject_statuses WHERE subject_id = ANY(%s)"
        " ORDER BY subject_id, recorded_at",
        (_keys(subject_ids),),
    )
    return await cur.fetchall()


async def zones_in_force(
    conn: Conn, subject_ids: Sequence[str], at: datetime
) -> list[dict[str, Any]]:
    """These subjects' zones whose period of validity includes `at` (status homes too)."""
    if not subject_ids:
        return []
    cur = await conn.execute(
        f"SELECT {_ZONE_COLUMNS} FROM zones WHERE subject_id = ANY(%s)"
        " AND valid_from <= %s AND (valid_until IS NULL OR valid_until > %s)"
        " ORDER BY subject_id, created_at",
        (_keys(subject_ids), at, at),
    )
    return await cur.fetchall()


async def shared_zones(conn: Conn, at: datetime) -> list[dict[str, Any]]:
    """The zones of shared sets (airports and the like) in force at `at`."""
    cur = await conn.execute(
        f"SELECT {_ZONE_COLUMNS} FROM zones WHERE zone_set IS NOT NULL"
        " AND valid_from <= %s AND (valid_until IS NULL OR valid_until > %s)"
        " ORDER BY zone_set, created_at",
        (at, at),
    )
    return await cur.fetchall()


async def alert_summary(conn: Conn, subject_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Unresolved alerts of these subjects, counted by subject, severity and state."""
    if not subject_ids:
        return []
    cur = await conn.execute(
        "SELECT subject_id, severity, state, count(*) AS n, max(alert_no) AS latest_no"
        " FROM alerts WHERE state <> 'resolved' AND subject_id = ANY(%s)"
        " GROUP BY subject_id, severity, state",
        (_keys(subject_ids),),
    )
    return await cur.fetchall()


async def track(
    conn: Conn, subject_id: str, since: datetime, until: datetime, limit: int
) -> list[dict[str, Any]]:
    """The subject's latest `limit` fixes in [since, until), oldest first."""
    cur = await conn.execute(
        "SELECT device_id, seq, t, received_at, lat, lon, acc, src, spd, batt FROM fixes"
        " WHERE subject_id = %s AND t >= %s AND t < %s"
        " ORDER BY t DESC, device_id DESC, coalesce(seq, 0) DESC LIMIT %s",
        (uuid.UUID(subject_id), since, until, limit),
    )
    rows = await cur.fetchall()
    rows.reverse()
    return rows
