"""The venue check: a status colour by ID number, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException

from monitor.api.deps import CurrentUser, RuntimeDep, require_roles
from monitor.domain import iso
from monitor.store import subjects as subject_store
from monitor.store import zones as zone_store

router = APIRouter(prefix="/api/v1/status", tags=["venue"])


@router.get("/{external_id}")
async def venue_check(external_id: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    require_roles(user, "venue", "administrator")
    now = datetime.now(UTC)
    async with runtime.pool.connection() as conn:
        subject = await subject_store.get_by_external_id(conn, external_id)
        book = await zone_store.load_rulebook(conn, str(subject["id"])) if subject else None
        order = book.status_at(now) if book else None
        await subject_store.log_consultation(
            conn,
            user.username,
            "venue check",
            str(subject["id"]) if subject else None,
            "status",
            now,
            now,
        )
    if order is None:
        raise HTTPException(404, "no status on record for this ID")
    return {"status": order.status.value, "valid_at": iso(now)}
