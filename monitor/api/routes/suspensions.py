"""Planned suspensions: a window, a reason and who set it. Alerts raised in it are
recorded (and listed) but not pushed to the live feed, and are not escalated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.api.deps import AccessReason, CurrentUser, RuntimeDep, require_roles, visible_subject
from monitor.domain import iso
from monitor.store import audit
from monitor.store import subjects as subject_store

router = APIRouter(prefix="/api/v1/subjects/{subject_id}/suspensions", tags=["suspensions"])


class SuspensionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    starts_at: datetime
    ends_at: datetime
    reason: str = Field(min_length=3, max_length=1000)

    @model_validator(mode="after")
    def _window(self) -> SuspensionCreate:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("times need a UTC offset or Z")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


def _json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(r["id"]),
        "subject_id": str(r["subject_id"]),
        "starts_at": iso(r["starts_at"]),
        "ends_at": iso(r["ends_at"]),
        "reason": r["reason"],
        "set_by": r["set_by"],
        "set_at": iso(r["set_at"]),
        "cancelled_by": r["cancelled_by"],
        "cancelled_at": iso(r["cancelled_at"]),
    }


@router.post("", status_code=status.HTTP_201_CREATED)
async def create(
    subject_id: str, body: SuspensionCreate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        row = await subject_store.add_suspension(
            conn, subject_id, body.starts_at, body.ends_at, body.reason, user.username
        )
        await audit.record(
            conn,
            user.username,
            "suspend",
            "subject",
            subject_id,
            subject_id=subject_id,
            after=_json(row),
        )
    return _json(row)


@router.get("")
async def list_suspensions(
    subject_id: str, user: CurrentUser, runtime: RuntimeDep, reason: AccessReason
) -> dict[str, Any]:
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(conn, user.username, reason, subject_id, "suspensions")
        rows = await subject_store.suspensions(conn, subject_id)
    return {"items": [_json(r) for r in rows]}


@router.delete("/{suspension_id}")
async def cancel(
    subject_id: str, suspension_id: int, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        row = await subject_store.cancel_suspension(conn, subject_id, suspension_id, user.username)
        if row is None:
            raise HTTPException(404, f"no active suspension {suspension_id}")
        await audit.record(
            conn,
            user.username,
            "cancel_suspension",
            "subject",
            subject_id,
            subject_id=subject_id,
            after=_json(row),
        )
    return _json(row)
