"""Subjects, their status orders, planned suspensions and the consultation log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from monitor.store import audit

__all__ = [
    "add_status",
    "add_suspension",
    "announce_change",
    "announce_rules",
    "cancel_suspension",
    "create",
    "get",
    "get_by_external_id",
    "ids_for_officer",
    "log_consultation",
    "officer_of",
    "officers",
    "statuses",
    "suspensions",
    "suspensions_covering",
    "update",
]

Conn = AsyncConnection[DictRow]

_COLUMNS = "id, name, external_id, timezone, officer, created_at, updated_at"
_SUSPENSION_COLUMNS = (
    "id, subject_id, starts_at, ends_at, reason, set_by, set_at, cancelled_by, cancelled_at"
)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def create(
    conn: Conn, name: str, external_id: str, timezone: str, officer: str | None
) -> dict[str, Any] | None:
    """None when the external_id is already taken."""
    cur = await conn.execute(
        "INSERT INTO subjects (id, name, external_id, timezone, officer)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (external_id) DO NOTHING"
        f" RETURNING {_COLUMNS}",
        (uuid.uuid4(), name, external_id, timezone, officer),
    )
    return await cur.fetchone()


async def get(conn: Conn, subject_id: str, for_update: bool = False) -> dict[str, Any] | None:
    key = _uuid(subject_id)
    if key is None:
        return None
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM subjects WHERE id = %s{lock}", (key,))
    return await cur.fetchone()


async def get_by_external_id(conn: Conn, external_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM subjects WHERE external_id = %s", (external_id,)
    )
    return await cur.fetchone()


async def update(conn: Conn, subject_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
    allowed = {"name", "timezone", "officer"}
    sets = [f"{k} = %({k})s" for k in changes if k in allowed]
    if not sets:
        return await get(conn, subject_id)
    cur = await conn.execute(
        f"UPDATE subjects SET {', '.join(sets)}, updated_at = now() WHERE id = %(id)s"
        f" RETURNING {_COLUMNS}",
        {**{k: v for k, v in changes.items() if k in allowed}, "id": subject_id},
    )
    return await cur.fetchone()


async def ids_for_officer(conn: Conn, officer: str) -> list[str]:
    cur = await conn.execute("SELECT id FROM subjects WHERE officer = %s", (officer,))
    return [str(r["id"]) for r in await cur.fetchall()]


async def add_status(
    conn: Conn,
    subject_id: str,
    status: str,
    home: tuple[float, float] | None,
    radius_m: float | None,
    zone_id: str | None,
    effective_at: datetime,
    set_by: str,
) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO subject_statuses (subject_id, status, home_lon, home_lat, radius_m, zone_id,"
        " effective_at, set_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id, subject_id, status, home_lon, home_lat, radius_m, zone_id, effective_at,"
        " recorded_at, set_by",
        (
            subject_id,
            status,
            home[0] if home else None,
            home[1] if home else None,
            radius_m,
            zone_id,
            effective_at,
            set_by,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def statuses(conn: Conn, subject_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, subject_id, status, home_lon, home_lat, radius_m, zone_id, effective_at,"
        " recorded_at, set_by FROM subject_statuses WHERE subject_id = %s ORDER BY recorded_at",
        (subject_id,),
    )
    return await cur.fetchall()


async def log_consultation(
    conn: Conn,
    username: str,
    reason: str,
    subject_id: str | None,
    what: str,
    range_from: datetime | None = None,
    range_until: datetime | None = None,
) -> None:
    """A read of location data, into the hash-chained audit log."""
    await audit.record(
        conn,
        username,
        "read",
        what,
        subject_id=subject_id,
        reason=reason,
        range_from=range_from,
        range_until=range_until,
    )


async def officers(conn: Conn) -> dict[str, str | None]:
    """Every subject's supervising officer (None: unassigned), by subject id: what the
    live feed's caseload filter starts from."""
    cur = await conn.execute("SELECT id, officer FROM subjects")
    return {str(r["id"]): r["officer"] for r in await cur.fetchall()}


async def officer_of(conn: Conn, subject_id: str) -> str | None:
    """The subject's supervising officer; None when it has none or no such subject."""
    cur = await conn.execute("SELECT officer FROM subjects WHERE id = %s", (subject_id,))
    row = await cur.fetchone()
    return row["officer"] if row else None


async def announce_change(conn: Conn, subject_id: str) -> None:
    """Tell every process that the subject's record changed (NOTIFY, delivered when
    `conn`'s transaction commits) on the channel the API's listener rereads the officer
    from: call it inside the transaction that makes the change."""
    await conn.execute("SELECT pg_notify('subjects', %s)", (subject_id,))


async def add_suspension(
    conn: Conn,
    subject_id: str,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    set_by: str,
) -> dict[str, Any]:
    """A planned suspension of the subject's alerts (a court visit, a hospital stay)."""
    cur = await conn.execute(
        "INSERT INTO suspensions (subject_id, starts_at, ends_at, reason, set_by)"
        f" VALUES (%s, %s, %s, %s, %s) RETURNING {_SUSPENSION_COLUMNS}",
        (subject_id, starts_at, ends_at, reason, set_by),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def suspensions(conn: Conn, subject_id: str) -> list[dict[str, Any]]:
    """The subject's suspensions, cancelled ones included, by start."""
    cur = await conn.execute(
        f"SELECT {_SUSPENSION_COLUMNS} FROM suspensions WHERE subject_id = %s ORDER BY starts_at",
        (subject_id,),
    )
    return await cur.fetchall()


async def cancel_suspension(
    conn: Conn, subject_id: str, suspension_id: int, cancelled_by: str
) -> dict[str, Any] | None:
    """The suspension as cancelled; None when the subject has no such suspension still
    active (a suspension is cancelled once)."""
    cur = await conn.execute(
        "UPDATE suspensions SET cancelled_by = %s, cancelled_at = clock_timestamp()"
        " WHERE id = %s AND subject_id = %s AND cancelled_at IS NULL"
        f" RETURNING {_SUSPENSION_COLUMNS}",
        (cancelled_by, suspension_id, subject_id),
    )
    return await cur.fetchone()


async def suspensions_covering(
    conn: Conn, instants: list[tuple[str | None, datetime]]
) -> dict[int, dict[str, Any]]:
    """For each (subject, instant), by its index: the planned suspension covering it
    (its id and reason), in one statement."""
    if not instants:
        return {}
    cur = await conn.execute(
        "SELECT DISTINCT ON (o.i) o.i, s.id, s.reason"
        " FROM unnest(%s::int[], %s::uuid[], %s::timestamptz[]) AS o(i, subject_id, at)"
        " JOIN suspensions s ON s.subject_id = o.subject_id AND s.cancelled_at IS NULL"
        "  AND s.starts_at <= o.at AND s.ends_at > o.at"
        " ORDER BY o.i, s.id",
        (list(range(len(instants))), [s for s, _ in instants], [t for _, t in instants]),
    )
    return {
        int(row["i"]): {"id": int(row["id"]), "reason": row["reason"]}
        for row in await cur.fetchall()
    }


async def announce_rules(conn: Conn, notice: str) -> None:
    """NOTIFY rules, delivered to every process when the transaction commits."""
    await conn.execute("SELECT pg_notify('rules', %s)", (notice,))
