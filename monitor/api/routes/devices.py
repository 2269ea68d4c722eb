"""Device enrolment: the device's MQTT credentials and signing key, shown once."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status

from monitor.api.deps import CurrentUser, RuntimeDep, require_roles, visible_subject
from monitor.api.schemas import DeviceCreate, DeviceCredentials
from monitor.ingest.broker import new_password, password_hash
from monitor.ingest.codec import b64url
from monitor.store import devices as device_store

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def enrol(body: DeviceCreate, user: CurrentUser, runtime: RuntimeDep) -> DeviceCredentials:
    require_roles(user, "administrator", "operator", "officer")
    if body.kind == "owntracks" and body.owntracks_topic is None:
        raise HTTPException(422, "an owntracks device needs owntracks_topic")
    if body.kind != "owntracks" and body.owntracks_topic is not None:
        raise HTTPException(422, "owntracks_topic is only for owntracks devices")
    try:
        await visible_subject(runtime, user, body.subject_id)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise HTTPException(422, f"subject_id: no subject {body.subject_id}") from None
        raise
    key = secrets.token_bytes(32) if body.signed else None
    password = new_password()
    async with runtime.pool.connection() as conn:
        row = await device_store.create(
            conn,
            device_id=body.device_id,
            kind=body.kind,
            subject_id=body.subject_id,
            assigned_at=body.assigned_at or datetime.now(UTC),
            owntracks_topic=body.owntracks_topic,
            signing_key=key,
            mqtt_password_hash=password_hash(password),
        )
        if row is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"device {body.device_id!r} (or its OwnTracks topic) is already enrolled",
            )
        await conn.execute("SELECT pg_notify('devices', %s)", (body.device_id,))
    runtime.ingest.device_enrolled(row)
    return DeviceCredentials(
        device_id=body.device_id,
        mqtt_username=body.device_id,
        mqtt_password=password,
        signing_key=b64url(key) if key is not None else None,
    )
