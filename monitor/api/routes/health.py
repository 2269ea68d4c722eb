"""Liveness for load balancers and the local run."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from monitor.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    database = False
    try:
        async with runtime.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
        database = True
    except Exception:  # any failure to reach the database means "not healthy"
        database = False
    broker = bool(runtime.subscribed.is_set())
    ok = database and broker
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "database": database, "broker": broker},
        status_code=200 if ok else 503,
    )
