"""Subjects: their record, status orders, zones and fixes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, status

from geofences.validate import ZoneError, parse_feature
from monitor.api import cursor as cursor_codec
from monitor.api.deps import (
    AccessReason,
    CurrentUser,
    RuntimeDep,
    require_roles,
    visible_subject,
)
from monitor.api.schemas import StatusSet, SubjectCreate, SubjectUpdate
from monitor.domain import Status, iso
from monitor.rules.book import PRESET_RADIUS_M
from monitor.rules.schedule import ScheduleError
from monitor.rules.schedule import parse as parse_schedule
from monitor.service import RulesChanged
from monitor.store import audit, positions
from monitor.store import subjects as subject_store
from monitor.store import users as user_store
from monitor.store import zones as zone_store

router = APIRouter(prefix="/api/v1/subjects", tags=["subjects"])


def subject_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "external_id": row["external_id"],
        "timezone": row["timezone"],
        "officer": row["officer"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def _status_json(row: dict[str, Any]) -> dict[str, Any]:
    home = [row["home_lon"], row["home_lat"]] if row["home_lon"] is not None else None
    return {
        "status": row["status"],
        "home": home,
        "radius_m": row["radius_m"],
        "effective_at": iso(row["effective_at"]),
        "recorded_at": iso(row["recorded_at"]),
        "set_by": row["set_by"],
        "zone_id": str(row["zone_id"]) if row["zone_id"] else None,
    }


async def _check_officer(runtime: RuntimeDep, username: str) -> None:
    async with runtime.pool.connection() as conn:
        officer = await user_store.get(conn, username)
    if officer is None or officer["role"] != "officer":
        raise HTTPException(422, f"officer: {username!r} is not a user with the officer role")


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_subject(
    body: SubjectCreate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    officer = body.officer
    if user.role == "officer":
        if officer not in (None, user.username):
            raise HTTPException(403, "an officer creates subjects for their own caseload")
        officer = user.username
    if officer is not None:
        await _check_officer(runtime, officer)
    async with runtime.pool.connection() as conn:
        row = await subject_store.create(conn, body.name, body.external_id, body.timezone, officer)
        if row is not None:
            await audit.record(
                conn,
                user.username,
                "create",
                "subject",
                str(row["id"]),
                subject_id=str(row["id"]),
                after=subject_json(row),
            )
            await subject_store.announce_change(conn, str(row["id"]))
    if row is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"external_id {body.external_id!r} exists")
    runtime.officers[str(row["id"])] = row["officer"]
    return subject_json(row)


@router.patch("/{subject_id}")
async def update_subject(
    subject_id: str, body: SubjectUpdate, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    before = await visible_subject(runtime, user, subject_id)
    changes = body.model_dump(exclude_unset=True)
    if "officer" in changes:
        if user.role != "administrator":
            raise HTTPException(403, "only an administrator transfers a subject to another officer")
        if changes["officer"] is not None:
            await _check_officer(runtime, changes["officer"])
    if changes.get("name", "") is None or changes.get("timezone", "") is None:
        raise HTTPException(422, "name and timezone cannot be null")
    async with runtime.pool.connection() as conn:
        row = await subject_store.update(conn, subject_id, changes)
        if row is not None:
            await audit.record(
                conn,
                user.username,
                "update",
                "subject",
                subject_id,
                subject_id=subject_id,
                before=subject_json(before),
                after=subject_json(row),
            )
            await subject_store.announce_change(conn, subject_id)
            if "timezone" in changes:
                # Schedules are read in the subject's time zone: every process rereads.
                await runtime.ingest.announce(conn, RulesChanged(subject_id, datetime.now(UTC)))
    if row is None:
        raise HTTPException(404, f"no subject {subject_id}")
    # A transfer takes the subject out of the old officer's live feed at once.
    runtime.officers[subject_id] = row["officer"]
    if "timezone" in changes:
        runtime.ingest.rules_changed(RulesChanged(subject_id, datetime.now(UTC)))
    return subject_json(row)


@router.get("/{subject_id}")
async def get_subject(
    subject_id: str, user: CurrentUser, runtime: RuntimeDep, reason: AccessReason
) -> dict[str, Any]:
    row = await visible_subject(runtime, user, subject_id)
    now = datetime.now(UTC)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(conn, user.username, reason, subject_id, "subject")
        statuses = await subject_store.statuses(conn, subject_id)
        book = await zone_store.load_rulebook(conn, subject_id)
        zones = await zone_store.list_for_subject(conn, subject_id)
    order = book.status_at(now) if book else None
    current = None
    if order is not None:
        match = [s for s in statuses if s["recorded_at"] == order.recorded_at]
        current = _status_json(match[0]) if match else None
    rules = []
    for rule in book.rules_at(now) if book else ():
        active = rule.schedule is None or rule.schedule.active(
            now, book.timezone if book else "UTC"
        )
        rules.append(
            {
                "key": rule.key,
                "zone_id": rule.zone_id,
                "kind": rule.kind.value,
                "must_be_inside": rule.must_be_inside,
                "severity": rule.severity.value,
                "scheduled": rule.schedule is not None,
                "active_now": active,
            }
        )
    return {
        **subject_json(row),
        "status": current["status"] if current else None,
        "status_order": current,
        "status_history": [_status_json(s) for s in statuses],
        "rules": rules,
        "zones": [zone_store.zone_json(z) for z in zones],
    }


@router.put("/{subject_id}/status")
async def set_status(
    subject_id: str, body: StatusSet, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    await visible_subject(runtime, user, subject_id)
    preset = Status(body.status)
    if preset in (Status.RED, Status.YELLOW) and body.home is None:
        raise HTTPException(
            422, f"home: a {preset.value} status needs the isolation address [lon, lat]"
        )
    effective_at = body.effective_at or datetime.now(UTC)
    home = (body.home[0], body.home[1]) if body.home else None
    radius = body.radius_m or PRESET_RADIUS_M.get(preset)
    async with runtime.pool.connection() as conn, conn.transaction():
        zone_id = None
        if home is not None:
            feature = {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [home[0], home[1]]},
                "properties": {"kind": "home", "radius_m": radius, "status": preset.value},
            }
            zone = await zone_store.create(
                conn,
                subject_id=subject_id,
                zone_set=None,
                kind="home",
                name=f"{preset.value} status home",
                feature=feature,
                schedule=None,
                source="status",
                valid_from=effective_at,
                created_by=user.username,
            )
            zone_id = str(zone["id"])
        row = await subject_store.add_status(
            conn,
            subject_id,
            preset.value,
            home,
            radius if home else None,
            zone_id,
            effective_at,
            user.username,
        )
        change = RulesChanged(
            subject_id, effective_at, frozenset({f"status:{zone_id or preset.value}"})
        )
        await runtime.ingest.announce(conn, change)
        await audit.record(
            conn,
            user.username,
            "set_status",
            "subject",
            subject_id,
            subject_id=subject_id,
            after=_status_json(row),
        )
    runtime.ingest.rules_changed(change)
    return {"subject_id": subject_id, **_status_json(row)}


@router.post("/{subject_id}/zones", status_code=status.HTTP_201_CREATED)
async def create_zone(
    subject_id: str,
    feature: Annotated[dict[str, Any], Body()],
    user: CurrentUser,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    await visible_subject(runtime, user, subject_id)
    try:
        spec = parse_feature(feature)
    except ZoneError as exc:
        raise HTTPException(422, f"zone: {exc.reason}") from None
    schedule_raw = (feature.get("properties") or {}).get("schedule")
    if schedule_raw is not None:
        try:
            parse_schedule(schedule_raw)
        except ScheduleError as exc:
            raise HTTPException(422, str(exc)) from None
    props = feature.get("properties") or {}
    valid_from = datetime.now(UTC)
    if props.get("valid_from") is not None:
        try:
            valid_from = datetime.fromisoformat(str(props["valid_from"]).replace("Z", "+00:00"))
            if valid_from.tzinfo is None:
                raise ValueError
        except ValueError:
            raise HTTPException(
                422, "properties.valid_from: expected an ISO 8601 instant with Z"
            ) from None
    async with runtime.pool.connection() as conn, conn.transaction():
        row = await zone_store.create(
            conn,
            subject_id=subject_id,
            zone_set=None,
            kind=spec.kind,
            name=spec.name,
            feature=feature,
            schedule=schedule_raw,
            source="zone",
            valid_from=valid_from,
            created_by=user.username,
        )
        change = RulesChanged(subject_id, valid_from, frozenset({f"zone:{row['id']}"}))
        await runtime.ingest.announce(conn, change)
        await audit.record(
            conn,
            user.username,
            "create",
            "zone",
            str(row["id"]),
            subject_id=subject_id,
            after=zone_store.zone_json(row),
        )
    runtime.ingest.rules_changed(change)
    return zone_store.zone_json(row)


@router.get("/{subject_id}/zones")
async def list_zones(
    subject_id: str, user: CurrentUser, runtime: RuntimeDep, reason: AccessReason
) -> dict[str, Any]:
    await visible_subject(runtime, user, subject_id)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(conn, user.username, reason, subject_id, "zones")
        rows = await zone_store.list_for_subject(conn, subject_id)
    return {"type": "FeatureCollection", "features": [zone_store.zone_json(r) for r in rows]}


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise HTTPException(422, f"{name}: {value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t


def fix_feature(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
        "properties": {
            "device_id": r["device_id"],
            "seq": r["seq"],
            "t": iso(r["t"]),
            "received_at": iso(r["received_at"]),
            "acc": r["acc"],
            "src": r["src"],
            "batt": r["batt"],
            "spd": r["spd"],
        },
    }


@router.get("/{subject_id}/fixes")
async def list_fixes(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: str | None = None,
) -> dict[str, Any]:
    await visible_subject(runtime, user, subject_id)
    t_since, t_until = _parse_time(since, "since"), _parse_time(until, "until")
    after = cursor_codec.decode_position(cursor) if cursor is not None else None
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, "fixes", t_since, t_until
        )
        rows = await positions.subject_fixes(conn, subject_id, t_since, t_until, after, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = cursor_codec.position_after(page[-1]) if more else None
    return {
        "type": "FeatureCollection",
        "features": [fix_feature(r) for r in page],
        "next": next_cursor,
    }


@router.get("/{subject_id}/transitions")
async def list_transitions(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """When the subject surely entered or left each of its zones, oldest first."""
    await visible_subject(runtime, user, subject_id)
    t_since, t_until = _parse_time(since, "since"), _parse_time(until, "until")
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, "transitions", t_since, t_until
        )
        rows = await positions.subject_transitions(conn, subject_id, t_since, t_until, limit)
    return {
        "items": [
            {
                "t": iso(r["t"]),
                "event": "enter" if r["entered"] else "exit",
                "rule": r["rule_key"],
                "zone_id": str(r["zone_id"]) if r["zone_id"] else None,
                "device_id": r["device_id"],
                "seq": r["seq"],
                "lat": r["lat"],
                "lon": r["lon"],
            }
            for r in rows
        ]
    }


@router.get("/{subject_id}/events")
async def list_events(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The subject's device events (tamper, battery, commands' results, ...), oldest
    first, paged like the fixes."""
    await visible_subject(runtime, user, subject_id)
    t_since, t_until = _parse_time(since, "since"), _parse_time(until, "until")
    after = cursor_codec.decode_position(cursor) if cursor is not None else None
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, "events", t_since, t_until
        )
        rows = await positions.subject_events(conn, subject_id, t_since, t_until, after, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = cursor_codec.position_after(page[-1]) if more else None
    return {
        "items": [
            {
                "device_id": r["device_id"],
                "seq": r["seq"],
                "t": iso(r["t"]),
                "received_at": iso(r["received_at"]),
                "kind": r["kind"],
                "detail": r["detail"],
            }
            for r in page
        ],
        "next": next_cursor,
    }
