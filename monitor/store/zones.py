"""Zones and the rule books built from them and from status orders."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from geofences.validate import parse_feature
from monitor.domain import Status
from monitor.rules.book import ProximityEntry, RuleBook, SharedZones, StatusOrder, ZoneEntry
from monitor.rules.schedule import parse as parse_schedule

__all__ = [
    "create",
    "list_for_subject",
    "list_set",
    "load_rulebook",
    "load_shared",
    "watchers",
    "zone_json",
]

Conn = AsyncConnection[DictRow]

_COLUMNS = (
    "id, subject_id, zone_set, kind, name, feature, schedule, source, valid_from, valid_until,"
    " created_at, created_by"
)


async def create(
    conn: Conn,
    *,
    subject_id: str | None,
    zone_set: str | None,
    kind: str,
    name: str | None,
    feature: dict[str, Any],
    schedule: dict[str, Any] | None,
    source: str,
    valid_from: datetime,
    created_by: str,
) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO zones (id, subject_id, zone_set, kind, name, feature, schedule, source,"
        " valid_from, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_COLUMNS}",
        (
            uuid.uuid4(),
            subject_id,
            zone_set,
            kind,
            name,
            json.dumps(feature),
            json.dumps(schedule) if schedule is not None else None,
            source,
            valid_from,
            created_by,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


def zone_json(row: dict[str, Any]) -> dict[str, Any]:
    """A zone as a GeoJSON Feature with its id and period in force."""
    feature = dict(row["feature"])
    props = dict(feature.get("properties") or {})
    props.update(
        kind=row["kind"],
        source=row["source"],
        valid_from=row["valid_from"].isoformat().replace("+00:00", "Z"),
        valid_until=(
            row["valid_until"].isoformat().replace("+00:00", "Z") if row["valid_until"] else None
        ),
    )
    feature["properties"] = props
    feature["id"] = str(row["id"])
    return feature


async def list_for_subject(conn: Conn, subject_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM zones WHERE subject_id = %s ORDER BY created_at", (subject_id,)
    )
    return await cur.fetchall()


def _entry(row: dict[str, Any]) -> ZoneEntry:
    spec = parse_feature(row["feature"])
    schedule = parse_schedule(row["schedule"]) if row["schedule"] else None
    tags = (row["feature"].get("properties") or {}).get("tags") or []
    return ZoneEntry(
        zone_id=str(row["id"]),
        kind=row["kind"],
        shape=spec.shape,
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        schedule=schedule,
        name=row["name"],
        tags=frozenset(str(t) for t in tags),
    )


async def load_shared(conn: Conn) -> SharedZones:
    """Every shared zone (all sets), once, for every rule book to hold."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM zones WHERE zone_set IS NOT NULL")
    return SharedZones([_entry(r) for r in await cur.fetchall()])


async def list_set(conn: Conn, zone_set: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM zones WHERE zone_set = %s ORDER BY created_at", (zone_set,)
    )
    return await cur.fetchall()


async def load_rulebook(
    conn: Conn, subject_id: str, shared: SharedZones | None = None
) -> RuleBook | None:
    cur = await conn.execute("SELECT timezone FROM subjects WHERE id = %s", (subject_id,))
    subject = await cur.fetchone()
    if subject is None:
        return None
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM zones WHERE subject_id = %s AND source = 'zone'", (subject_id,)
    )
    zones = tuple(_entry(r) for r in await cur.fetchall())
    cur = await conn.execute(
        "SELECT status, home_lon, home_lat, radius_m, zone_id, effective_at, recorded_at"
        " FROM subject_statuses WHERE subject_id = %s ORDER BY recorded_at",
        (subject_id,),
    )
    statuses = tuple(
        StatusOrder(
            status=Status(r["status"]),
            effective_at=r["effective_at"],
            recorded_at=r["recorded_at"],
            home=(r["home_lon"], r["home_lat"]) if r["home_lon"] is not None else None,
            radius_m=r["radius_m"],
            zone_id=str(r["zone_id"]) if r["zone_id"] is not None else None,
        )
        for r in await cur.fetchall()
    )
    if shared is None:
        shared = await load_shared(conn)
    cur = await conn.execute(
        "SELECT id, other_device_id, distance_m, valid_from, valid_until FROM proximity_rules"
        " WHERE subject_id = %s ORDER BY created_at",
        (subject_id,),
    )
    proximity = tuple(
        ProximityEntry(
            str(r["id"]),
            r["other_device_id"],
            float(r["distance_m"]),
            r["valid_from"],
            r["valid_until"],
        )
        for r in await cur.fetchall()
    )
    return RuleBook(subject_id, subject["timezone"], zones, statuses, shared, proximity=proximity)


async def watchers(conn: Conn, device_id: str) -> list[str]:
    """Subjects that must keep away from this device (it is someone's protected phone)."""
    cur = await conn.execute(
        "SELECT DISTINCT subject_id FROM proximity_rules WHERE other_device_id = %s",
        (device_id,),
    )
    return [str(r["subject_id"]) for r in await cur.fetchall()]
