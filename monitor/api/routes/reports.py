"""Officer review and evidence: violations with their context, exports, court reports,
evidence bundles.

Every call reads a subject's location data, so each needs `X-Access-Reason` and is
written to the consultation log with what was read and the period asked for. The work
of shaping and rendering is `monitor.reports` (pure); this module fetches and answers.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from monitor.api import cursor as cursor_codec
from monitor.api.deps import (
    AccessReason,
    CurrentUser,
    Runtime,
    RuntimeDep,
    User,
    require_roles,
    visible_subject,
)
from monitor.domain import iso
from monitor.reports import bundle, court, export, review
from monitor.rules.book import RuleBook
from monitor.store import alerts as alert_store
from monitor.store import audit, positions
from monitor.store import reports as report_store
from monitor.store import subjects as subject_store
from monitor.store import zones as zone_store
from monitor.store.pool import Pool

router = APIRouter(prefix="/api/v1", tags=["reports"])

Conn = AsyncConnection[DictRow]

# An export holds at most this many fixes; a longer period is refused, to be split.
MAX_EXPORT_FIXES = 500_000

CSV = "text/csv; charset=utf-8"
GEOJSON = "application/geo+json"
PDF = "application/pdf"
ZIP = "application/zip"


def _file(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of a file answer."""
    return {200: {"description": what, "content": {media_type.partition(";")[0]: {}}}}


@functools.cache
def _generator() -> str:
    try:
        return f"em-monitor {metadata.version('em-monitor')}"
    except metadata.PackageNotFoundError:
        return "em-monitor"


def _time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise HTTPException(422, f"{name}: {value!r} is not an ISO 8601 time") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _period(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    t_since, t_until = _time(since, "since"), _time(until, "until")
    if t_since is not None and t_until is not None and t_until <= t_since:
        raise HTTPException(422, "until: must be later than since")
    return t_since, t_until


async def _subject(runtime: Runtime, user: User, subject_id: str) -> dict[str, Any]:
    require_roles(user, "administrator", "operator", "officer")
    return await visible_subject(runtime, user, subject_id)


def _subject_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "external_id": row["external_id"],
        "timezone": row["timezone"],
        "officer": row["officer"],
    }


def _filename(subject: dict[str, Any], what: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(subject["external_id"]))[:64] or "subject"
    return f"{stem}_{what}"


def _download(content: bytes, media_type: str, filename: str, **headers: str) -> Response:
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            **headers,
        },
    )


# gathering


def _zone_ids(rows: Sequence[dict[str, Any]]) -> list[str]:
    ids: set[str] = set()
    for row in rows:
        if row["zone_id"] is not None:
            ids.add(str(row["zone_id"]))
        key = row["rule_key"] or ""
        if ":" in key:
            ids.add(key.split(":", 1)[1])
    return sorted(ids)


async def _reviews(
    conn: Conn, subject_id: str, rows: Sequence[dict[str, Any]], book: RuleBook | None
) -> list[dict[str, Any]]:
    """Each alert row as a violation under review."""
    events = await report_store.alert_events(conn, [str(r["id"]) for r in rows])
    zones = {
        str(z["id"]): zone_store.zone_json(z)
        for z in await report_store.zones(conn, _zone_ids(rows))
    }
    out = []
    for row in rows:
        alert = alert_store.alert_json(row)
        fixes: list[dict[str, Any]] = []
        total = 0
        span = None
        if row["fix_time"] is not None:
            span = review.window(row["fix_time"], alert["detail"], row["cleared_at"])
            fixes, total = await report_store.fixes_around(
                conn, subject_id, span[0], span[1], row["fix_time"], review.MAX_FIXES
            )
        out.append(
            review.violation(
                alert,
                row["rule_key"],
                fixes,
                events.get(str(row["id"]), []),
                book,
                zones,
                span,
                total,
            )
        )
    return out


@dataclass
class _Record:
    """What a court report shows, as read from the store."""

    statuses: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    zones: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    violations: list[dict[str, Any]]
    devices: list[dict[str, Any]]


async def _record(
    conn: Conn, subject_id: str, since: datetime | None, until: datetime | None
) -> _Record:
    rows = await report_store.alerts(conn, subject_id, since, until)
    book = await zone_store.load_rulebook(conn, subject_id)
    breaches = [r for r in rows if r["kind"] in review.VIOLATION_KINDS]
    return _Record(
        statuses=await subject_store.statuses(conn, subject_id),
        orders=await report_store.orders(conn, subject_id),
        zones=[
            zone_store.zone_json(z) for z in await zone_store.list_for_subject(conn, subject_id)
        ],
        alerts=rows,
        violations=await _reviews(conn, subject_id, breaches, book),
        devices=await report_store.devices_seen(conn, subject_id, since, until),
    )


def _court_report(
    subject: dict[str, Any],
    since: datetime | None,
    until: datetime | None,
    record: _Record,
    *,
    provenance: list[tuple[str, str]],
    footer: str,
    as_of: datetime | None,
    files: list[dict[str, Any]] | None = None,
) -> court.CourtReport:
    return court.CourtReport(
        subject=_subject_json(subject),
        since=since,
        until=until,
        statuses=record.statuses,
        orders=record.orders,
        zones=record.zones,
        violations=record.violations,
        other_alerts=[
            alert_store.alert_json(r)
            for r in record.alerts
            if r["kind"] not in review.VIOLATION_KINDS
        ],
        devices=record.devices,
        fix_count=sum(int(d["fixes"]) for d in record.devices),
        provenance=provenance,
        files=files or [],
        as_of=as_of,
        generator=_generator(),
        footer=footer,
    )


# the endpoints


@router.get("/subjects/{subject_id}/violations")
async def violations(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
    kind: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The subject's violations in [since, until), oldest first, each with the fixes
    around it, the rule in force at its fix time and the notes of its handling."""
    row = await _subject(runtime, user, subject_id)
    t_since, t_until = _period(since, until)
    after = None
    if cursor is not None:
        raw = cursor_codec.decode(cursor)
        try:
            after = (datetime.fromisoformat(raw[0]), int(raw[1]))
        except (ValueError, IndexError, TypeError):
            raise HTTPException(422, "cursor: not a cursor this API gave out") from None
    kinds = kind or list(review.VIOLATION_KINDS)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, "violations", t_since, t_until
        )
        rows = await report_store.alerts(
            conn, subject_id, t_since, t_until, kinds=kinds, after=after, limit=limit + 1
        )
        page, more = rows[:limit], len(rows) > limit
        book = await zone_store.load_rulebook(conn, subject_id)
        items = await _reviews(conn, subject_id, page, book)
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = cursor_codec.encode([last["at"].isoformat(), int(last["alert_no"])])
    return {
        "subject": _subject_json(row),
        "since": iso(t_since),
        "until": iso(t_until),
        "violations": items,
        "next": next_cursor,
    }


async def _fixes(
    pool: Pool,
    user: User,
    reason: str,
    subject_id: str,
    since: datetime | None,
    until: datetime | None,
    what: str,
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        rows = await positions.subject_fixes(
            conn, subject_id, since, until, None, MAX_EXPORT_FIXES + 1
        )
        if len(rows) > MAX_EXPORT_FIXES:
            raise HTTPException(
                422,
                f"the period holds more than {MAX_EXPORT_FIXES} fixes: export it in parts"
                " with since and until",
            )
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, what, since, until
        )
    return rows


async def _alerts(
    pool: Pool,
    user: User,
    reason: str,
    subject_id: str,
    since: datetime | None,
    until: datetime | None,
    what: str,
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, what, since, until
        )
        rows = await report_store.alerts(conn, subject_id, since, until)
    return [alert_store.alert_json(r) for r in rows]


@router.get(
    "/subjects/{subject_id}/export/fixes.csv",
    response_class=Response,
    responses=_file(CSV, "the fixes as CSV"),
)
async def export_fixes_csv(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """The subject's fixes in [since, until) as CSV, columns as `export.FIX_COLUMNS`."""
    subject = await _subject(runtime, user, subject_id)
    t_since, t_until = _period(since, until)
    rows = await _fixes(
        runtime.pool, user, reason, subject_id, t_since, t_until, "export fixes.csv"
    )
    return _download(export.fixes_csv(rows), CSV, _filename(subject, "fixes.csv"))


@router.get(
    "/subjects/{subject_id}/export/fixes.geojson",
    response_class=Response,
    responses=_file(GEOJSON, "the fixes as a GeoJSON FeatureCollection"),
)
async def export_fixes_geojson(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """The subject's fixes in [since, until) as a GeoJSON FeatureCollection."""
    subject = await _subject(runtime, user, subject_id)
    t_since, t_until = _period(since, until)
    rows = await _fixes(
        runtime.pool, user, reason, subject_id, t_since, t_until, "export fixes.geojson"
    )
    return _download(export.fixes_geojson(rows), GEOJSON, _filename(subject, "fixes.geojson"))


@router.get(
    "/subjects/{subject_id}/export/alerts.csv",
    response_class=Response,
    responses=_file(CSV, "the alerts as CSV"),
)
async def export_alerts_csv(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """The subject's alerts in [since, until) (by fix time, else time raised) as CSV."""
    subject = await _subject(runtime, user, subject_id)
    t_since, t_until = _period(since, until)
    alerts = await _alerts(
        runtime.pool, user, reason, subject_id, t_since, t_until, "export alerts.csv"
    )
    return _download(export.alerts_csv(alerts), CSV, _filename(subject, "alerts.csv"))


@router.get(
    "/subjects/{subject_id}/export/alerts.geojson",
    response_class=Response,
    responses=_file(GEOJSON, "the alerts as a GeoJSON FeatureCollection"),
)
async def export_alerts_geojson(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """The subject's alerts in [since, until) as a GeoJSON FeatureCollection."""
    subject = await _subject(runtime, user, subject_id)
    t_since, t_until = _period(since, until)
    alerts = await _alerts(
        runtime.pool, user, reason, subject_id, t_since, t_until, "export alerts.geojson"
    )
    return _download(export.alerts_geojson(alerts), GEOJSON, _filename(subject, "alerts.geojson"))


@router.get(
    "/subjects/{subject_id}/report.pdf",
    response_class=Response,
    responses=_file(PDF, "the court report"),
)
async def court_report(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """The court report of [since, until) as PDF: subject, orders and status history,
    zones and rules, each violation with a map and its notes, the other alerts."""
    subject = await _subject(runtime, user, subject_id)
    t_since, t_until = _period(since, until)
    now = datetime.now(UTC)
    async with runtime.pool.connection() as conn:
        await subject_store.log_consultation(
            conn, user.username, reason, subject_id, "report report.pdf", t_since, t_until
        )
        record = await _record(conn, subject_id, t_since, t_until)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    report = _court_report(
        subject,
        t_since,
        t_until,
        record,
        provenance=[
            ("Generated", stamp),
            ("Generated by", f"{user.username} ({user.role})"),
            ("Reason given", reason),
            ("Software", _generator()),
        ],
        footer=f"Generated {stamp} by {user.username}; reason: {reason}",
        as_of=now,
    )
    pdf = await asyncio.to_thread(court.render, report)
    return _download(pdf, PDF, _filename(subject, "report.pdf"))


def _latest(record: _Record, fixes: Sequence[dict[str, Any]]) -> datetime | None:
    """The latest time in the record: the bundle's date, instead of the clock's."""
    times: list[datetime] = []
    for f in fixes:
        times += [f["t"], f["received_at"]]
    for a in record.alerts:
        times += [t for t in (a["fix_time"], a["received_at"], a["updated_at"]) if t is not None]
    for v in record.violations:
        times += [t for h in v["notes"]["history"] if (t := review.parse_time(h["at"]))]
    return max(times) if times else None


@router.get(
    "/subjects/{subject_id}/evidence.zip",
    response_class=Response,
    responses=_file(ZIP, "the evidence bundle"),
)
async def evidence_bundle(
    subject_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    reason: AccessReason,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """The evidence bundle of [since, until): fixes and alerts as CSV and GeoJSON, the
    court report, and manifest.json with the SHA-256 of each; the same record gives the
    same bytes. Its SHA-256 is in the `X-Evidence-SHA256` header and the audit log."""
    subject = await _subject(runtime, user, subject_id)
    t_since, t_until = _period(since, until)
    async with runtime.pool.connection() as conn:
        fixes = await positions.subject_fixes(
            conn, subject_id, t_since, t_until, None, MAX_EXPORT_FIXES + 1
        )
        if len(fixes) > MAX_EXPORT_FIXES:
            raise HTTPException(
                422,
                f"the period holds more than {MAX_EXPORT_FIXES} fixes: export it in parts"
                " with since and until",
            )
        record = await _record(conn, subject_id, t_since, t_until)
    data = await asyncio.to_thread(_bundle, subject, t_since, t_until, record, fixes)
    digest = hashlib.sha256(data).hexdigest()
    async with runtime.pool.connection() as conn:
        await audit.record(
            conn,
            user.username,
            "read",
            "export evidence.zip",
            f"sha256:{digest}",
            subject_id=subject_id,
            reason=reason,
            range_from=t_since,
            range_until=t_until,
        )
    return _download(data, ZIP, _filename(subject, "evidence.zip"), **{"X-Evidence-SHA256": digest})


def _bundle(
    subject: dict[str, Any],
    since: datetime | None,
    until: datetime | None,
    record: _Record,
    fixes: list[dict[str, Any]],
) -> bytes:
    alerts = [alert_store.alert_json(r) for r in record.alerts]
    data_files: list[bundle.Member] = [
        ("fixes.csv", export.fixes_csv(fixes), CSV),
        ("fixes.geojson", export.fixes_geojson(fixes), GEOJSON),
        ("alerts.csv", export.alerts_csv(alerts), CSV),
        ("alerts.geojson", export.alerts_geojson(alerts), GEOJSON),
    ]
    as_of = _latest(record, fixes) or until or since
    as_of_text = as_of.strftime("%Y-%m-%d %H:%M:%S UTC") if as_of else "no record"
    report = _court_report(
        subject,
        since,
        until,
        record,
        provenance=[
            ("Record up to", as_of_text),
            ("Software", _generator()),
            (
                "Requested",
                "who asked for this evidence bundle, when and why is in the service's"
                " consultation log",
            ),
        ],
        footer=f"Evidence bundle; record up to {as_of_text}",
        as_of=as_of,
        files=[
            {"name": n, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()}
            for n, c, _ in data_files
        ],
    )
    members = [*data_files, ("report.pdf", court.render(report), PDF)]
    return bundle.build(
        members,
        subject=_subject_json(subject),
        since=since,
        until=until,
        as_of=as_of,
        generated_by=_generator(),
        counts={
            "fixes": len(fixes),
            "alerts": len(alerts),
            "violations": len(record.violations),
        },
    )
