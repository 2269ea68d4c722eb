"""Which process owns which partitions of the device stream (cluster mode)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from monitor.api.deps import CurrentUser, RuntimeDep, require_roles
from monitor.domain import iso
from monitor.store import claims

router = APIRouter(tags=["cluster"])


@router.get(
    "/api/v1/cluster",
    responses={
        401: {"description": "No valid token"},
        403: {"description": "Not an administrator"},
    },
)
async def cluster_view(runtime: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    """The live processes and the partitions each owns now. Without cluster mode, the
    ingesting process owns every partition."""
    require_roles(user, "administrator")
    settings = runtime.settings
    partitions = settings.cluster.partitions
    if runtime.cluster is None:
        processes = (
            [
                {
                    "instance": settings.instance,
                    "partitions": list(range(partitions)),
                    "since": iso(runtime.started_at),
                    "bridge": False,
                }
            ]
            if settings.ingest
            else []
        )
        return {"partitions": partitions, "mode": "single", "processes": processes}
    async with runtime.pool.connection() as conn:
        rows = await claims.view(conn)
    return {
        "partitions": partitions,
        "mode": "cluster",
        "processes": [
            {
                "instance": r["instance"],
                "partitions": r["partitions"],
                "since": iso(r["since"]),
                "bridge": r["bridge"],  # this process forwards the broker into the stream
            }
            for r in rows
        ],
    }
