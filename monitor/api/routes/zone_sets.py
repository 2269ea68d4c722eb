"""Shared zone sets used by many subjects (every airport, every school), indexed once.
Zones tagged `negative_test_required` are those a blue status keeps subjects out of."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, status

from geofences.io import read_zones
from geofences.validate import (
    ZoneCollectionError,
    ZoneError,
    ZoneSpec,
    parse_collection,
    parse_feature,
    to_feature,
)
from monitor.api.deps import CurrentUser, RuntimeDep, require_roles
from monitor.service import RulesChanged
from monitor.store import audit
from monitor.store import zones as zone_store

router = APIRouter(prefix="/api/v1/zone-sets", tags=["zone sets"])

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_IMPORT_BYTES = 64 * 1024 * 1024


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise HTTPException(422, "zone set name: lower-case letters, digits, _ and -")


def _refusal(exc: ZoneError) -> HTTPException:
    if isinstance(exc, ZoneCollectionError):
        problems = [{"feature": e.feature_index, "reason": e.reason} for e in exc.errors]
        return HTTPException(422, problems)
    return HTTPException(422, [{"feature": exc.feature_index, "reason": exc.reason}])


async def _store(
    runtime: RuntimeDep,
    user: CurrentUser,
    name: str,
    specs: list[ZoneSpec],
    features: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    async with runtime.pool.connection() as conn, conn.transaction():
        for spec, feature in zip(specs, features, strict=True):
            row = await zone_store.create(
                conn,
                subject_id=None,
                zone_set=name,
                kind=spec.kind,
                name=spec.name,
                feature=feature,
                schedule=spec.schedule,
                source="zone",
                valid_from=now,
                created_by=user.username,
            )
            rows.append(row)
        await audit.record(
            conn,
            user.username,
            "create",
            "zone_set",
            name,
            after={"zones": len(rows), "repairs": [list(s.repairs) for s in specs]},
        )
        await zone_store.announce_set_change(conn, name)
    runtime.ingest.rules_changed(RulesChanged(name, now, shared=True))
    return [zone_store.zone_json(r) for r in rows]


@router.post("/{name}/zones", status_code=status.HTTP_201_CREATED)
async def add_zones(
    name: str,
    document: Annotated[dict[str, Any], Body()],
    user: CurrentUser,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    """A GeoJSON Feature or FeatureCollection; every feature is checked, and a bad one
    refuses the whole request with the index and reason of each problem."""
    require_roles(user, "administrator", "operator")
    _check_name(name)
    try:
        if document.get("type") == "FeatureCollection":
            specs = parse_collection(document)
            features = list(document["features"])
        else:
            specs = [parse_feature(document)]
            features = [document]
    except ZoneError as exc:
        raise _refusal(exc) from None
    stored = await _store(runtime, user, name, specs, features)
    return {"type": "FeatureCollection", "features": stored}


@router.post("/{name}/import", status_code=status.HTTP_201_CREATED)
async def import_file(
    name: str, request: Request, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    """The raw bytes of a GeoJSON, GeoPackage or zipped Shapefile. A projected CRS is
    refused unless `?reproject=true`; every repair is reported on the zone."""
    require_roles(user, "administrator", "operator")
    _check_name(name)
    data = await request.body()
    if not data:
        raise HTTPException(422, "the request body is empty: send the file's bytes")
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"at most {MAX_IMPORT_BYTES} bytes")
    reproject = request.query_params.get("reproject") == "true"
    try:
        specs = read_zones(data, allow_reproject=reproject)
    except ZoneError as exc:
        raise _refusal(exc) from None
    except (ValueError, OSError) as exc:
        raise HTTPException(
            422, f"not a readable GeoJSON, GeoPackage or Shapefile: {exc}"
        ) from None
    stored = await _store(runtime, user, name, specs, [to_feature(s) for s in specs])
    return {"type": "FeatureCollection", "features": stored}


@router.get("/{name}/zones")
async def list_zones(name: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    _check_name(name)
    async with runtime.pool.connection() as conn:
        rows = await zone_store.list_set(conn, name)
    return {"type": "FeatureCollection", "features": [zone_store.zone_json(r) for r in rows]}
