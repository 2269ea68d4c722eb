"""What the ingest refused, with the raw bytes and the reason, for operators to inspect."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from monitor.api import cursor as cursor_codec
from monitor.api.deps import CurrentUser, RuntimeDep, require_roles
from monitor.domain import iso
from monitor.store import positions

router = APIRouter(tags=["ingest"])

_TEXT_LIMIT = 64 * 1024


def _rejected_json(r: dict[str, Any]) -> dict[str, Any]:
    raw = bytes(r["raw"])
    try:
        text: str | None = raw[:_TEXT_LIMIT].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "id": int(r["id"]),
        "received_at": iso(r["received_at"]),
        "topic": r["topic"],
        "device_id": r["device_id"],
        "seq": r["seq"],
        "reason": r["reason"],
        "raw_base64": base64.b64encode(raw).decode(),
        "raw_text": text,
        "record": r["record"],
    }


@router.get("/api/v1/rejected")
async def list_rejected(
    user: CurrentUser,
    runtime: RuntimeDep,
    device_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator")
    before = None
    if cursor is not None:
        raw = cursor_codec.decode(cursor)
        if len(raw) != 1 or not isinstance(raw[0], int):
            raise HTTPException(422, "cursor: not a cursor this API gave out")
        before = raw[0]
    async with runtime.pool.connection() as conn:
        rows = await positions.rejected_page(conn, device_id, before, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    return {
        "items": [_rejected_json(r) for r in page],
        "next": cursor_codec.encode([int(page[-1]["id"])]) if more else None,
    }


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> str:
    """Prometheus text format; counts only, no personal data."""
    lines = []
    for name, value in sorted(runtime.ingest.counters.items()):
        lines += [f"# TYPE monitor_{name}_total counter", f"monitor_{name}_total {value}"]
    lines += ["# TYPE monitor_live_clients gauge", f"monitor_live_clients {runtime.hub.clients}"]
    return "\n".join(lines) + "\n"
