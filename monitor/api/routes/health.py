"""Liveness for load balancers and the local run."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from monitor.api.deps import RuntimeDep
from monitor.store import pool as pool_store

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    database = False
    try:
        async with runtime.pool.connection(timeout=2) as conn:
            await pool_store.ping(conn)
        database = True
    except Exception:  # any failure to reach the database means "not healthy"
        database = False
    broker = bool(runtime.subscribed.is_set())
    body: dict[str, object] = {"database": database, "broker": broker}
    ok = database and broker
    if runtime.cluster is not None and runtime.stream is not None:
        # Cluster mode: once this process can take its share of the partitions.
        nats = runtime.stream.connected and runtime.stream.ready.is_set()
        claims = runtime.cluster.ready.is_set()
        body.update({"nats": nats, "claims": claims})
        ok = ok and nats and claims
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", **body},
        status_code=200 if ok else 503,
    )
