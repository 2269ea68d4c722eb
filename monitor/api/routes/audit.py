"""The audit and consultation log, for auditors (read only) and administrators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from monitor.api import cursor as cursor_codec
from monitor.api.deps import CurrentUser, RuntimeDep, require_roles
from monitor.domain import iso
from monitor.store import audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(r["id"]),
        "at": iso(r["at"]),
        "actor": r["actor"],
        "action": r["action"],
        "object_type": r["object_type"],
        "object_id": r["object_id"],
        "subject_id": str(r["subject_id"]) if r["subject_id"] else None,
        "source": r["source"],
        "outcome": r["outcome"],
        "reason": r["reason"],
        "range_from": iso(r["range_from"]),
        "range_until": iso(r["range_until"]),
        "before": r["before"],
        "after": r["after"],
        "hash": r["hash"],
    }


@router.get("")
async def list_audit(
    user: CurrentUser,
    runtime: RuntimeDep,
    actor: str | None = None,
    subject_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    require_roles(user, "auditor", "administrator")
    before = None
    if cursor is not None:
        raw = cursor_codec.decode(cursor)
        if len(raw) != 1 or not isinstance(raw[0], int):
            raise HTTPException(422, "cursor: not a cursor this API gave out")
        before = raw[0]
    async with runtime.pool.connection() as conn:
        rows = await audit.page(
            conn, actor=actor, subject_id=subject_id, before_id=before, limit=limit + 1
        )
    page, more = rows[:limit], len(rows) > limit
    return {
        "items": [_entry(r) for r in page],
        "next": cursor_codec.encode([int(page[-1]["id"])]) if more else None,
    }
