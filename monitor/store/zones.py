"""Zones and the rule books built from them and from status orders."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from geofences.validate import parse_feature
from monitor.domain import Status
from monitor.rules.book import ProximityEntry, RuleBook, SharedZones, StatusOrder, ZoneEntry
from monitor.rules.schedule import parse as parse_schedule

__all__ = [
    "all_watchers",
    "announce_set_change",
    "create",
    "create_proximity_rule",
    "list_for_subject",
    "list_proximity_rules",
    "list_set",
    "load_rulebook",
    "load_rulebooks",
    "load_shared",
    "zone_json",
]

Conn = AsyncConnection[DictRow]

_COLUMNS = (
    "id, subject_id, zone_set, kind, name, feature, schedule, source, valid_from, valid_until,"
    " created_at, created_by"
)
_PROXIMITY_COLUMNS = (
    "id, subject_id, other_device_id, distance_m, valid_from, valid_until, created_by"
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
    return (await load_rulebooks(conn, [subject_id], shared)).get(subject_id)


async def load_rulebooks(
    conn: Conn, subject_ids: Sequence[str], shared: SharedZones | None = None
) -> dict[str, RuleBook]:
    """The rule books of many subjects in four queries, whatever their number: the
    service meets thousands of subjects per second after a restart, and a few round
    trips per subject would keep it behind its devices for minutes. Subjects that do
    not exist are absent from the answer."""
    ids = list(subject_ids)
    if not ids:
        return {}
    cur = await conn.execute("SELECT id, timezone FROM subjects WHERE id = ANY(%s::uuid[])", (ids,))
    timezones = {str(r["id"]): str(r["timezone"]) for r in await cur.fetchall()}
    if not timezones:
        return {}
    known = list(timezones)
    zones: dict[str, list[ZoneEntry]] = defaultdict(list)
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM zones WHERE subject_id = ANY(%s::uuid[]) AND source = 'zone'"
        " ORDER BY created_at, id",
        (known,),
    )
    for r in await cur.fetchall():
        zones[str(r["subject_id"])].append(_entry(r))
    statuses: dict[str, list[StatusOrder]] = defaultdict(list)
    cur = await conn.execute(
        "SELECT subject_id, status, home_lon, home_lat, radius_m, zone_id, effective_at,"
        " recorded_at FROM subject_statuses WHERE subject_id = ANY(%s::uuid[])"
        " ORDER BY recorded_at, id",
        (known,),
    )
    for r in await cur.fetchall():
        statuses[str(r["subject_id"])].append(
            StatusOrder(
                status=Status(r["status"]),
                effective_at=r["effective_at"],
                recorded_at=r["recorded_at"],
                home=(r["home_lon"], r["home_lat"]) if r["home_lon"] is not None else None,
                radius_m=r["radius_m"],
                zone_id=str(r["zone_id"]) if r["zone_id"] is not None else None,
            )
        )
    proximity: dict[str, list[ProximityEntry]] = defaultdict(list)
    cur = await conn.execute(
        "SELECT id, subject_id, other_device_id, distance_m, valid_from, valid_until"
        " FROM proximity_rules WHERE subject_id = ANY(%s::uuid[]) ORDER BY created_at, id",
        (known,),
    )
    for r in await cur.fetchall():
        proximity[str(r["subject_id"])].append(
            ProximityEntry(
                str(r["id"]),
                r["other_device_id"],
                float(r["distance_m"]),
                r["valid_from"],
                r["valid_until"],
            )
        )
    if shared is None:
        shared = await load_shared(conn)
    return {
        sid: RuleBook(
            sid,
            tz,
            tuple(zones.get(sid, ())),
            tuple(statuses.get(sid, ())),
            shared,
            proximity=tuple(proximity.get(sid, ())),
        )
        for sid, tz in timezones.items()
    }


async def all_watchers(conn: Conn) -> dict[str, list[str]]:
    """For every protected device, the subjects that must keep away from it."""
    cur = await conn.execute(
        "SELECT DISTINCT other_device_id, subject_id FROM proximity_rules"
        " ORDER BY other_device_id, subject_id"
    )
    found: dict[str, list[str]] = defaultdict(list)
    for r in await cur.fetchall():
        found[r["other_device_id"]].append(str(r["subject_id"]))
    return dict(found)


async def announce_set_change(conn: Conn, zone_set: str) -> None:
    """Tell every process that a shared zone set changed (NOTIFY, delivered when `conn`'s
    transaction commits), so each reloads the shared zones: call it inside the
    transaction that makes the change."""
    await conn.execute("SELECT pg_notify('zone_sets', %s)", (zone_set,))


async def create_proximity_rule(
    conn: Conn,
    subject_id: str,
    other_device_id: str,
    distance_m: float,
    valid_from: datetime,
    created_by: str,
) -> dict[str, Any]:
    """A mobile exclusion zone: the subject keeps `distance_m` from another device."""
    cur = await conn.execute(
        "INSERT INTO proximity_rules (id, subject_id, other_device_id, distance_m,"
        " valid_from, created_by) VALUES (%s, %s, %s, %s, %s, %s)"
        f" RETURNING {_PROXIMITY_COLUMNS}",
        (uuid.uuid4(), subject_id, other_device_id, distance_m, valid_from, created_by),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def list_proximity_rules(conn: Conn, subject_id: str) -> list[dict[str, Any]]:
    """The subject's proximity rules, oldest first."""
    cur = await conn.execute(
        f"SELECT {_PROXIMITY_COLUMNS} FROM proximity_rules WHERE subject_id = %s"
        " ORDER BY created_at",
        (subject_id,),
    )
    return await cur.fetchall()
