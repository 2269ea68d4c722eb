"""Restraint orders (with their history) and legal holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.api.deps import AccessReason, CurrentUser, RuntimeDep, require_roles, visible_subject
from monitor.domain import PRESET_NEEDS_HOME, iso
from monitor.service import RulesChanged
from monitor.store import audit, orders, zones
from monitor.store import subjects as subject_store

router = APIRouter(prefix="/api/v1", tags=["orders"])


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    authority: str = Field(min_length=1, max_length=200)
    reference: str = Field(min_length=1, max_length=200)
    starts_at: datetime
    ends_at: datetime | None = None
    status: Literal["red", "yellow", "blue", "green"] | None = None
    home: list[float] | None = None
    radius_m: float | None = Field(default=None, gt=0, le=100_000)
    notes: str | None = Field(default=None, max_length=4000)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("a time needs a UTC offset or Z")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> OrderCreate:
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.status in PRESET_NEEDS_HOME and self.home is None:
            raise ValueError(f"a {self.status} order needs home [lon, lat]")
        if self.home is not None and (
            len(self.home) != 2 or not -180 <= self.home[0] <= 180 or not -90 <= self.home[1] <= 90
        ):
            raise ValueError("home is [lon, lat] within range")
        return self


class OrderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ends_at: datetime | None = None
    authority: str | None = Field(default=None, min_length=1, max_length=200)
    reference: str | None = Field(default=None, min_length=1, max_length=200)
    notes: str | None = Field(default=None, max_length=4000)


class HoldCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=1000)


def order_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(r["id"]),
        "version": r["version"],
        "subject_id": str(r["subject_id"]),
        "authority": r["authority"],
        "reference": r["reference"],
        "starts_at": iso(r["starts_at"]),
        "ends_at": iso(r["ends_at"]),
        "status": r["status"],
        "home": [r["home_lon"], r["home_lat"]] if r["home_lon"] is not None else None,
        "radius_m": r["radius_m"],
        "notes": r["notes"],
        "recorded_at": iso(r["recorded_at"]),
        "recorded_by": r["recorded_by"],
    }


def _hold_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(r["id"]),
        "subject_id": str(r["subject_id"]),
        "reason": r["reason"],
        "set_by": r["set_by"],
        "set_at": iso(r["set_at"]),
        "released_by": r["released_by"],
        "released_at": iso(r["released_at"]),
    }


@router.post("/subjects/{subject_id}/orders", status_code=status.HTTP_201_CREATED)
async def create_order(
    subject_id: str, body: OrderCreate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    """Record an order; one that imposes a status sets it from `starts_at` (and green
    from `ends_at`), exactly as `PUT /subjects/{id}/status` would."""
    require_roles(user, "administrator", "operator", "officer")
    await visible_subject(runtime, user, subject_id)
    fields = body.model_dump()
    home = body.home
    fields.pop("home")
    fields["home_lon"], fields["home_lat"] = (home[0], home[1]) if home else (None, None)
    keys: set[str] = set()
    change: RulesChanged | None = None
    async with runtime.pool.connection() as conn, conn.transaction():
        row = await orders.create(conn, subject_id, fields, user.username)
        if body.status is not None:
            for preset, at in ((body.status, body.starts_at), ("green", body.ends_at)):
                if at is None:
                    continue
                zone_id = None
                radius = body.radius_m
                if home is not None and preset in PRESET_NEEDS_HOME:
                    radius = radius or (50.0 if preset == "red" else 500.0)
                    zone = await zones.create(
                        conn,
                        subject_id=subject_id,
                        zone_set=None,
                        kind="home",
                        name=f"{preset} status home (order {body.reference})",
                        feature={
                            "type": "Feature",
                            "geometry": {"type": "Point", "coordinates": home},
                            "properties": {"kind": "home", "radius_m": radius},
                        },
                        schedule=None,
                        source="status",
                        valid_from=at,
                        created_by=user.username,
                    )
                    zone_id = str(zone["id"])
                await subject_store.add_status(
                    conn,
                    subject_id,
                    preset,
                    (home[0], home[1]) if home and preset in PRESET_NEEDS_HOME else None,
                    radius if preset in PRESET_NEEDS_HOME else None,
                    zone_id,
                    at,
                    user.username,
                )
                keys.add(f"status:{zone_id or preset}")
            change = RulesChanged(subject_id, body.starts_at, frozenset(keys))
            await runtime.ingest.announce(conn, change)
        await audit.record(
            conn,
            user.username,
            "create",
            "order",
            str(row["id"]),
            subject_id=subject_id,
            after=order_json(row),
        )
    if change is not None:
        runtime.ingest.rules_changed(change)
    return order_json(row)


@router.get("/subjects/{subject_id}/orders")
async def list_orders(
    subject_id: str, user: CurrentUser, runtime: RuntimeDep, reason: AccessReason
) -> dict[str, Any]:
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(conn, user.username, reason, subject_id, "orders")
        rows = await orders.history(conn, subject_id)
        held = await orders.holds(conn, subject_id)
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        latest[str(r["id"])] = r
    return {
        "orders": [order_json(r) for r in latest.values()],
        "history": [order_json(r) for r in rows],
        "legal_holds": [_hold_json(h) for h in held],
    }


@router.patch("/orders/{order_id}")
async def update_order(
    order_id: str, body: OrderUpdate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    """A change is a new version; the earlier ones stay in the history."""
    require_roles(user, "administrator", "operator", "officer")
    async with runtime.pool.connection() as conn, conn.transaction():
        previous = await orders.current(conn, order_id, for_update=True)
        if previous is None:
            raise HTTPException(404, f"no order {order_id}")
        await visible_subject(runtime, user, str(previous["subject_id"]))
        changes = body.model_dump(exclude_unset=True)
        if "ends_at" in changes and changes["ends_at"] is not None:
            if changes["ends_at"].tzinfo is None:
                raise HTTPException(422, "ends_at needs a UTC offset or Z")
            if changes["ends_at"] <= previous["starts_at"]:
                raise HTTPException(422, "ends_at must be after starts_at")
        row = await orders.add_version(conn, previous, changes, user.username)
        await audit.record(
            conn,
            user.username,
            "update",
            "order",
            order_id,
            subject_id=str(previous["subject_id"]),
            before=order_json(previous),
            after=order_json(row),
        )
    return order_json(row)


@router.post("/subjects/{subject_id}/legal-holds", status_code=status.HTTP_201_CREATED)
async def create_hold(
    subject_id: str, body: HoldCreate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    """While a hold is active the subject's data is exempt from retention deletes."""
    require_roles(user, "administrator", "officer")
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        row = await orders.hold(conn, subject_id, body.reason, user.username)
        await audit.record(
            conn,
            user.username,
            "legal_hold",
            "subject",
            subject_id,
            subject_id=subject_id,
            after=_hold_json(row),
        )
    return _hold_json(row)


@router.delete("/subjects/{subject_id}/legal-holds/{hold_id}")
async def release_hold(
    subject_id: str, hold_id: int, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "officer")
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        row = await orders.release(conn, hold_id, subject_id, user.username)
        if row is None:
            raise HTTPException(404, f"no active legal hold {hold_id}")
        await audit.record(
            conn,
            user.username,
            "release_hold",
            "subject",
            subject_id,
            subject_id=subject_id,
            after=_hold_json(row),
        )
    return _hold_json(row)
