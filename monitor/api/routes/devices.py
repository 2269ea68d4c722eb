"""Device enrolment: the device's MQTT credentials and signing key, shown once."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status

from monitor.api.deps import CurrentUser, RuntimeDep, User, require_roles, visible_subject
from monitor.api.schemas import CommandCreate, DeviceCreate, DeviceCredentials
from monitor.domain import iso
from monitor.ingest.broker import new_password, password_hash
from monitor.ingest.codec import b64url
from monitor.store import audit
from monitor.store import commands as command_store
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
        await device_store.announce_change(conn, body.device_id)
        await audit.record(
            conn,
            user.username,
            "enrol",
            "device",
            body.device_id,
            subject_id=body.subject_id,
            after=device_json(row),
        )
    await runtime.ingest.device_enrolled(row)
    return DeviceCredentials(
        device_id=body.device_id,
        mqtt_username=body.device_id,
        mqtt_password=password,
        signing_key=b64url(key) if key is not None else None,
    )


async def _visible_device(runtime: RuntimeDep, user: User, device_id: str) -> dict[str, Any]:
    """The device if its subject is visible to the user; 404 otherwise."""
    async with runtime.pool.connection() as conn:
        row = await device_store.get(conn, device_id)
    if row is None or row["subject_id"] is None:
        raise HTTPException(404, f"no device {device_id}")
    try:
        await visible_subject(runtime, user, str(row["subject_id"]))
    except HTTPException as exc:
        if exc.status_code == 404:
            raise HTTPException(404, f"no device {device_id}") from None
        raise
    return row


def device_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": row["device_id"],
        "kind": row["kind"],
        "subject_id": str(row["subject_id"]) if row["subject_id"] else None,
        "assigned_at": iso(row["assigned_at"]),
        "owntracks_topic": row["owntracks_topic"],
        "signed": row["signed"],
        "enrolled_at": iso(row["enrolled_at"]),
        "fix_interval_s": row["fix_interval_s"],
        "upload_interval_s": row["upload_interval_s"],
    }


def command_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "device_id": row["device_id"],
        "cmd": row["cmd"],
        "args": row["args"],
        "requested_by": row["requested_by"],
        "requested_at": iso(row["requested_at"]),
        "state": row["state"],
        "unanswered_at": iso(row["unanswered_at"]),
        "answered_at": iso(row["answered_at"]),
        "result": row["result"],
    }


@router.get("/{device_id}")
async def get_device(device_id: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    row = await _visible_device(runtime, user, device_id)
    async with runtime.pool.connection() as conn:
        state = await device_store.last_state(conn, device_id)
    return {
        **device_json(row),
        "online": state["kind"] == "online" if state else None,
        "online_changed_at": iso(state["t"]) if state else None,
    }


@router.post("/{device_id}/commands", status_code=status.HTTP_201_CREATED)
async def send_command(
    device_id: str, body: CommandCreate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    """Publish a command on the device's `cmd` topic; its `cmd_result` answers it. A
    `locate` not answered in time is reported as unanswered (and raises an alert)."""
    require_roles(user, "administrator", "operator", "officer")
    await _visible_device(runtime, user, device_id)
    if body.cmd == "set_interval" and body.args is None:
        raise HTTPException(422, "set_interval needs args {fix_s, upload_s}")
    if body.cmd != "set_interval" and body.args is not None:
        raise HTTPException(422, f"{body.cmd} takes no args")
    command_id = f"c-{secrets.token_hex(6)}"
    args = body.args.model_dump() if body.args is not None else None
    async with runtime.pool.connection() as conn:
        row = await command_store.create(conn, command_id, device_id, body.cmd, args, user.username)
        await audit.record(
            conn, user.username, "command", "device", device_id, after=command_json(row)
        )
    # Published after the commit, so a fast answer always finds its command.
    payload: dict[str, Any] = {"id": command_id, "cmd": body.cmd}
    if args is not None:
        payload["args"] = args
    runtime.ingest.publish_command(device_id, payload)
    return command_json(row)


@router.get("/{device_id}/commands")
async def list_commands(device_id: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    await _visible_device(runtime, user, device_id)
    async with runtime.pool.connection() as conn:
        rows = await command_store.for_device(conn, device_id)
    return {"items": [command_json(r) for r in rows]}
