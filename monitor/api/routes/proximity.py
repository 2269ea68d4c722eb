"""Mobile exclusion zones: keep at least N metres from another enrolled device (a
victim's phone), judged whenever either side reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitor.api.deps import AccessReason, CurrentUser, RuntimeDep, require_roles, visible_subject
from monitor.domain import iso
from monitor.service import RulesChanged
from monitor.store import audit
from monitor.store import devices as device_store
from monitor.store import subjects as subject_store
from monitor.store import zones as zone_store

router = APIRouter(prefix="/api/v1/subjects/{subject_id}/proximity-rules", tags=["proximity"])


class ProximityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=r"^[A-Za-z0-9_-]{3,64}$")
    distance_m: float = Field(gt=0, le=100_000)
    valid_from: datetime | None = None

    @field_validator("valid_from")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("a time needs a UTC offset or Z")
        return v


def _json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(r["id"]),
        "subject_id": str(r["subject_id"]),
        "device_id": r["other_device_id"],
        "distance_m": r["distance_m"],
        "valid_from": iso(r["valid_from"]),
        "valid_until": iso(r["valid_until"]),
        "created_by": r["created_by"],
    }


@router.post("", status_code=status.HTTP_201_CREATED)
async def create(
    subject_id: str, body: ProximityCreate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    await visible_subject(runtime, user, subject_id)
    valid_from = body.valid_from or datetime.now(UTC)
    async with runtime.pool.connection() as conn:
        other = await device_store.get(conn, body.device_id)
        if other is None:
            raise HTTPException(422, f"device_id: no enrolled device {body.device_id!r}")
        if other["subject_id"] is not None and str(other["subject_id"]) == subject_id:
            raise HTTPException(422, "device_id: that is the subject's own device")
        row = await zone_store.create_proximity_rule(
            conn, subject_id, body.device_id, body.distance_m, valid_from, user.username
        )
        change = RulesChanged(subject_id, valid_from)
        await runtime.ingest.announce(conn, change)
        await audit.record(
            conn,
            user.username,
            "create",
            "proximity_rule",
            str(row["id"]),
            subject_id=subject_id,
            after=_json(row),
        )
    runtime.ingest.rules_changed(change)
    return _json(row)


@router.get("")
async def list_rules(
    subject_id: str, user: CurrentUser, runtime: RuntimeDep, reason: AccessReason
) -> dict[str, Any]:
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, "proximity rules"
        )
        rows = await zone_store.list_proximity_rules(conn, subject_id)
    return {"items": [_json(r) for r in rows]}
