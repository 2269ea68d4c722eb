"""Reads for officer review and evidence: a subject's alerts over a period, the fixes
around each, the alerts' histories, the zones rules name, devices seen, orders."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = [
    "alert_events",
    "alerts",
    "devices_seen",
    "fixes_around",
    "orders",
    "zones",
]

Conn = AsyncConnection[DictRow]

_ALERT_COLUMNS = (
    "id, alert_no, subject_id, device_id, kind, severity, state, rule_key, zone_id, fix_time,"
    " received_at, lat, lon, detail, event_id, created_at, updated_at, cleared_at,"
    " acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution_note"
)
_FIX_COLUMNS = "device_id, seq, t, received_at, subject_id, lat, lon, acc, src, spd, batt"
_ZONE_COLUMNS = (
    "id, subject_id, zone_set, kind, name, feature, schedule, source, valid_from, valid_until,"
    " created_at, created_by"
)

# An alert's time on the record: that of its first fix, or when it was raised.
_AT = "coalesce(fix_time, received_at)"


async def alerts(
    conn: Conn,
    subject_id: str,
    since: datetime | None,
    until: datetime | None,
    *,
    kinds: Sequence[str] | None = None,
    exclude_kinds: Sequence[str] | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The subject's alerts whose time (fix time, else raised) is in [since, until),
    oldest first; `after` is the (time, alert_no) of the last row of a previous page."""
    where = ["subject_id = %(s)s"]
    params: dict[str, Any] = {"s": subject_id}
    if since is not None:
        where.append(f"{_AT} >= %(since)s")
        params["since"] = since
    if until is not None:
        where.append(f"{_AT} < %(until)s")
        params["until"] = until
    if kinds is not None:
        where.append("kind = ANY(%(kinds)s)")
        params["kinds"] = list(kinds)
    if exclude_kinds is not None:
        where.append("NOT (kind = ANY(%(xkinds)s))")
        params["xkinds"] = list(exclude_kinds)
    if after is not None:
        where.append(f"({_AT}, alert_no) > (%(at)s, %(no)s)")
        params.update(at=after[0], no=after[1])
    clause = " LIMIT %(limit)s" if limit is not None else ""
    if limit is not None:
        params["limit"] = limit
    cur = await conn.execute(
        f"SELECT {_ALERT_COLUMNS}, {_AT} AS at FROM alerts WHERE {' AND '.join(where)}"
        f" ORDER BY {_AT}, alert_no{clause}",
        params,
    )
    return await cur.fetchall()


async def alert_events(conn: Conn, alert_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The history of each alert, oldest first: event_id, at, change, actor, state."""
    if not alert_ids:
        return {}
    cur = await conn.execute(
        "SELECT alert_id, event_id, at, change, actor, alert->>'state' AS state"
        " FROM alert_events WHERE alert_id = ANY(%s) ORDER BY alert_id, event_id",
        ([uuid.UUID(a) for a in alert_ids],),
    )
    out: dict[str, list[dict[str, Any]]] = {a: [] for a in alert_ids}
    for row in await cur.fetchall():
        out.setdefault(str(row["alert_id"]), []).append(row)
    return out


async def fixes_around(
    conn: Conn,
    subject_id: str,
    since: datetime,
    until: datetime,
    keep: datetime | None,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """The subject's fixes in [since, until), oldest first, evenly thinned to about
    `limit` when there are more (the first, the last and any at `keep` kept), and how
    many there are in all."""
    cur = await conn.execute(
        f"SELECT {_FIX_COLUMNS}, n FROM ("
        f" SELECT {_FIX_COLUMNS},"
        "  row_number() OVER (ORDER BY t, device_id, coalesce(seq, 0)) AS rn,"
        "  count(*) OVER () AS n"
        "  FROM fixes WHERE subject_id = %(s)s AND t >= %(since)s AND t < %(until)s"
        ") w WHERE n <= %(limit)s OR rn = n OR t = %(keep)s"
        " OR (rn - 1) %% ceil(n::float8 / %(limit)s)::bigint = 0"
        " ORDER BY rn",
        {"s": subject_id, "since": since, "until": until, "keep": keep, "limit": limit},
    )
    rows = await cur.fetchall()
    total = int(rows[0]["n"]) if rows else 0
    return rows, total


async def zones(conn: Conn, zone_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Stored zones (a subject's or shared) by id."""
    keys = []
    for z in zone_ids:
        try:
            keys.append(uuid.UUID(z))
        except ValueError:
            continue
    if not keys:
        return []
    cur = await conn.execute(f"SELECT {_ZONE_COLUMNS} FROM zones WHERE id = ANY(%s)", (keys,))
    return await cur.fetchall()


async def devices_seen(
    conn: Conn, subject_id: str, since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    """Each device with fixes of the subject in the period: how many, first, last."""
    where = ["subject_id = %(s)s"]
    params: dict[str, Any] = {"s": subject_id}
    if since is not None:
        where.append("t >= %(since)s")
        params["since"] = since
    if until is not None:
        where.append("t < %(until)s")
        params["until"] = until
    cur = await conn.execute(
        "SELECT device_id, count(*) AS fixes, min(t) AS first, max(t) AS last,"
        " max(received_at) AS last_received"
        f" FROM fixes WHERE {' AND '.join(where)} GROUP BY device_id ORDER BY device_id",
        params,
    )
    return await cur.fetchall()


async def orders(conn: Conn, subject_id: str) -> list[dict[str, Any]]:
    """The subject's restraint orders, every version, where the schema has them."""
    cur = await conn.execute("SELECT to_regclass('orders') IS NOT NULL AS present")
    row = await cur.fetchone()
    if row is None or not row["present"]:
        return []
    cur = await conn.execute(
        "SELECT * FROM orders WHERE subject_id = %s ORDER BY starts_at, id, version",
        (subject_id,),
    )
    return await cur.fetchall()
