"""Enrolled devices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = [
    "all_devices",
    "announce_change",
    "broker_credentials",
    "create",
    "get",
    "last_state",
    "set_intervals",
]

Conn = AsyncConnection[DictRow]

_COLUMNS = (
    "device_id, kind, subject_id, assigned_at, owntracks_topic, signed, signing_key,"
    " mqtt_password_hash, enrolled_at, fix_interval_s, upload_interval_s"
)


async def create(
    conn: Conn,
    *,
    device_id: str,
    kind: str,
    subject_id: str,
    assigned_at: datetime,
    owntracks_topic: str | None,
    signing_key: bytes | None,
    mqtt_password_hash: str,
) -> dict[str, Any] | None:
    """None when the device_id (or the OwnTracks topic) is already enrolled."""
    cur = await conn.execute(
        "INSERT INTO devices (device_id, kind, subject_id, assigned_at, owntracks_topic, signed,"
        " signing_key, mqtt_password_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
        (
            device_id,
            kind,
            subject_id,
            assigned_at,
            owntracks_topic,
            signing_key is not None,
            signing_key,
            mqtt_password_hash,
        ),
    )
    return await cur.fetchone()


async def get(conn: Conn, device_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM devices WHERE device_id = %s", (device_id,))
    return await cur.fetchone()


async def all_devices(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM devices")
    return await cur.fetchall()


async def broker_credentials(conn: Conn) -> list[dict[str, Any]]:
    """Every enrolled device's MQTT username (its device_id), password hash and topic."""
    cur = await conn.execute(
        "SELECT device_id, owntracks_topic, mqtt_password_hash FROM devices ORDER BY device_id"
    )
    return await cur.fetchall()


async def last_state(conn: Conn, device_id: str) -> dict[str, Any] | None:
    """The device's latest online/offline change (from its retained `state` and will)."""
    cur = await conn.execute(
        "SELECT kind, t FROM device_events WHERE device_id = %s AND kind IN ('online', 'offline')"
        " ORDER BY t DESC LIMIT 1",
        (device_id,),
    )
    return await cur.fetchone()


async def announce_change(conn: Conn, device_id: str) -> None:
    """Tell every process that the device's enrolment changed (NOTIFY, delivered when
    `conn`'s transaction commits), so each reloads it: call it inside the transaction
    that makes the change."""
    await conn.execute("SELECT pg_notify('devices', %s)", (device_id,))


async def set_intervals(
    conn: Conn, device_id: str, fix_s: float | None, upload_s: float | None
) -> None:
    """The intervals a device confirmed (`set_interval` answered ok); None keeps one."""
    await conn.execute(
        "UPDATE devices SET fix_interval_s = coalesce(%s, fix_interval_s),"
        " upload_interval_s = coalesce(%s, upload_interval_s) WHERE device_id = %s",
        (fix_s, upload_s, device_id),
    )
