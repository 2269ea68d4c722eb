"""Alerts and their event history.

Every change of an alert writes the alert row and an alert event whose `event_id` is
taken under a transaction-scoped advisory lock, held until commit: a transaction that
takes a larger id therefore commits after every smaller one, so `event_id` grows in
commit order, and a reader that has seen N and asks for `> N` misses nothing. The
change is announced with NOTIFY, which PostgreSQL delivers at commit, in commit order.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from monitor.domain import iso

__all__ = [
    "CHANNEL",
    "Amendment",
    "NewAlert",
    "alert_json",
    "alert_of_episode",
    "amend_many",
    "episode_or_open_alert",
    "episodes_alerted",
    "escalate_due",
    "events_after",
    "get",
    "hold_event_lock",
    "insert",
    "insert_many",
    "latest_event_id",
    "list_page",
    "open_alerts",
    "open_condition_alerts",
    "open_conditions",
    "open_integrity",
    "open_proximity",
    "record_change",
    "resolved_among",
]

Conn = AsyncConnection[DictRow]

CHANNEL = "alert_events"
_EVENT_LOCK = 0x616C6572  # "aler"

_COLUMNS = (
    "id, alert_no, subject_id, device_id, kind, severity, state, rule_key, zone_id, fix_time,"
    " received_at, lat, lon, detail, event_id, created_at, updated_at, cleared_at,"
    " acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution_note"
)

_A_COLUMNS = ", ".join(f"a.{name.strip()}" for name in _COLUMNS.split(","))


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    """An alert as the API and the websocket show it (operator-api.md)."""
    detail = dict(row["detail"] or {})
    for name in ("cleared_at", "acknowledged_at", "resolved_at"):
        if row.get(name) is not None:
            detail.setdefault(name, iso(row[name]))
    if row.get("acknowledged_by"):
        detail.setdefault("acknowledged_by", row["acknowledged_by"])
    if row.get("resolved_by"):
        detail.setdefault("resolved_by", row["resolved_by"])
    if row.get("resolution_note"):
        detail.setdefault("resolution_note", row["resolution_note"])
    return {
        "id": str(row["id"]),
        "event_id": int(row["event_id"]),
        "subject_id": str(row["subject_id"]) if row["subject_id"] is not None else None,
        "device_id": row["device_id"],
        "kind": row["kind"],
        "severity": row["severity"],
        "state": row["state"],
        "fix_time": iso(row["fix_time"]),
        "received_at": iso(row["received_at"]),
        "lat": row["lat"],
        "lon": row["lon"],
        "zone_id": str(row["zone_id"]) if row["zone_id"] is not None else None,
        "detail": detail,
    }


@dataclass(frozen=True, slots=True)
class NewAlert:
    subject_id: str | None
    device_id: str | None
    kind: str
    severity: str
    rule_key: str | None
    zone_id: str | None
    fix_time: datetime | None
    received_at: datetime
    lat: float | None
    lon: float | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Amendment:
    """What the rules change of an alert already open: its detail, and maybe that the
    episode cleared. Logged as the event `change` ("updated" or "cleared")."""

    alert_id: str
    change: str
    detail_patch: dict[str, Any]
    cleared_at: datetime | None = None


async def hold_event_lock(conn: Conn) -> None:
    """Take the event lock now, before locking any alert row, in a transaction that
    locks alert rows first and changes them after. Every writer then takes the event
    lock before the rows: two writers that took them in opposite orders would wait on
    each other until PostgreSQL aborted one as a deadlock (a second later), and an
    ingest batch in progress would be redone or an operator's acknowledgement refused.
    Taken again by the same transaction, it is held already and costs nothing more."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EVENT_LOCK,))


async def _next_event_ids(conn: Conn, n: int) -> list[int]:
    # One round trip: nextval is computed for the rows the lock's CTE yields, so only
    # once the lock is held (event ids are then committed in the order they are drawn).
    cur = await conn.execute(
        "WITH held AS (SELECT pg_advisory_xact_lock(%s))"
        " SELECT nextval('alert_event_ids') AS id FROM held, generate_series(1, %s)"
        " ORDER BY 1",
        (_EVENT_LOCK, n),
    )
    return [int(row["id"]) for row in await cur.fetchall()]


async def _log_events(
    conn: Conn, logged: list[tuple[dict[str, Any], str]], actor: str | None
) -> None:
    # The events and one notification (delivered at commit) in one round trip: the
    # hub reads every event after the last it saw, whatever the notification says.
    if not logged:
        return
    await conn.execute(
        "WITH logged AS (INSERT INTO alert_events (event_id, alert_id, at, change, actor, alert)"
        " SELECT e, a, clock_timestamp(), c, %s, j"
        " FROM unnest(%s::bigint[], %s::uuid[], %s::text[], %s::jsonb[]) AS l(e, a, c, j)"
        " RETURNING event_id)"
        " SELECT pg_notify(%s, max(event_id)::text) FROM logged",
        (
            actor,
            [row["event_id"] for row, _ in logged],
            [str(row["id"]) for row, _ in logged],
            [change for _, change in logged],
            [json.dumps(alert_json(row)) for row, _ in logged],
            CHANNEL,
        ),
    )


async def insert(conn: Conn, alert: NewAlert, actor: str | None = None) -> dict[str, Any]:
    """Open a new alert; the caller's transaction commits it."""
    return (await insert_many(conn, [(str(uuid.uuid4()), alert)], actor))[0]


async def insert_many(
    conn: Conn, alerts: list[tuple[str, NewAlert]], actor: str | None = None
) -> list[dict[str, Any]]:
    """Open new alerts, each with the id given, in three round trips whatever their
    number; their rows in the order given."""
    if not alerts:
        return []
    event_ids = await _next_event_ids(conn, len(alerts))
    cur = await conn.execute(
        "INSERT INTO alerts (id, subject_id, device_id, kind, severity, state, rule_key,"
        " zone_id, fix_time, received_at, lat, lon, detail, event_id)"
        " SELECT id, subject_id, device_id, kind, severity, 'open', rule_key, zone_id,"
        " fix_time, received_at, lat, lon, detail, event_id FROM unnest("
        "%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::uuid[],"
        " %s::timestamptz[], %s::timestamptz[], %s::float8[], %s::float8[], %s::jsonb[],"
        " %s::bigint[]) AS n(id, subject_id, device_id, kind, severity, rule_key, zone_id,"
        " fix_time, received_at, lat, lon, detail, event_id)"
        # Inserted in the order given: alert_no (a serial) grows in that order too.
        " ORDER BY event_id"
        f" RETURNING {_COLUMNS}",
        (
            [alert_id for alert_id, _ in alerts],
            [a.subject_id for _, a in alerts],
            [a.device_id for _, a in alerts],
            [a.kind for _, a in alerts],
            [a.severity for _, a in alerts],
            [a.rule_key for _, a in alerts],
            [a.zone_id for _, a in alerts],
            [a.fix_time for _, a in alerts],
            [a.received_at for _, a in alerts],
            [a.lat for _, a in alerts],
            [a.lon for _, a in alerts],
            [json.dumps(a.detail) for _, a in alerts],
            event_ids,
        ),
    )
    by_id = {str(row["id"]): row for row in await cur.fetchall()}
    rows = [by_id[alert_id] for alert_id, _ in alerts]
    await _log_events(conn, [(row, "opened") for row in rows], actor)
    return rows


async def amend_many(conn: Conn, amendments: list[Amendment]) -> list[dict[str, Any]]:
    """Apply the rules' changes to alerts not resolved (an officer's resolution stands),
    each logged as an event, in three round trips per pass; the rows changed. An alert
    named twice is changed twice, in order, in a second pass."""
    changed: list[dict[str, Any]] = []
    while amendments:
        seen: set[str] = set()
        now: list[Amendment] = []
        later: list[Amendment] = []
        for a in amendments:
            (later if a.alert_id in seen else now).append(a)
            seen.add(a.alert_id)
        event_ids = await _next_event_ids(conn, len(now))
        cur = await conn.execute(
            "UPDATE alerts a SET event_id = u.event_id, updated_at = clock_timestamp(),"
            " detail = a.detail || u.patch,"
            " cleared_at = CASE WHEN u.cleared IS NULL THEN a.cleared_at"
            "  ELSE coalesce(a.cleared_at, u.cleared) END"
            " FROM unnest(%s::uuid[], %s::bigint[], %s::jsonb[], %s::timestamptz[])"
            "  AS u(id, event_id, patch, cleared)"
            f" WHERE a.id = u.id AND a.state <> 'resolved' RETURNING {_A_COLUMNS}",
            (
                [a.alert_id for a in now],
                event_ids,
                [json.dumps(a.detail_patch) for a in now],
                [a.cleared_at for a in now],
            ),
        )
        by_id = {str(row["id"]): row for row in await cur.fetchall()}
        rows = [(by_id[a.alert_id], a.change) for a in now if a.alert_id in by_id]
        await _log_events(conn, rows, None)
        changed += [row for row, _ in rows]
        amendments = later
    return changed


async def record_change(
    conn: Conn,
    alert_id: str,
    change: str,
    actor: str | None,
    *,
    state: str | None = None,
    detail_patch: dict[str, Any] | None = None,
    cleared_at: datetime | None = None,
    resolution_note: str | None = None,
) -> dict[str, Any] | None:
    """Apply one change to an alert and log it as an alert event; None if no such alert."""
    (event_id,) = await _next_event_ids(conn, 1)
    sets = ["event_id = %(event_id)s", "updated_at = clock_timestamp()"]
    params: dict[str, Any] = {"id": alert_id, "event_id": event_id}
    if state is not None:
        sets.append("state = %(state)s")
        params["state"] = state
        if state == "acknowledged":
            sets += ["acknowledged_at = clock_timestamp()", "acknowledged_by = %(actor)s"]
        if state == "resolved":
            sets += [
                "resolved_at = clock_timestamp()",
                "resolved_by = %(actor)s",
                "resolution_note = %(note)s",
            ]
            params["note"] = resolution_note
        params["actor"] = actor
    if detail_patch:
        sets.append("detail = detail || %(patch)s::jsonb")
        params["patch"] = json.dumps(detail_patch)
    if cleared_at is not None:
        sets.append("cleared_at = coalesce(cleared_at, %(cleared)s)")
        params["cleared"] = cleared_at
    cur = await conn.execute(
        f"UPDATE alerts SET {', '.join(sets)} WHERE id = %(id)s RETURNING {_COLUMNS}", params
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await _log_events(conn, [(row, change)], actor)
    return row


async def get(conn: Conn, alert_id: str, for_update: bool = False) -> dict[str, Any] | None:
    try:
        uuid.UUID(alert_id)
    except ValueError:
        return None
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = %s{lock}", (alert_id,))
    return await cur.fetchone()


async def open_alerts(conn: Conn, subject_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Alerts not yet resolved, newest first; only these subjects' when given."""
    if subject_ids is None:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE state <> 'resolved' ORDER BY alert_no DESC"
        )
    else:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE state <> 'resolved' AND subject_id = ANY(%s)"
            " ORDER BY alert_no DESC",
            (subject_ids,),
        )
    return await cur.fetchall()


async def latest_event_id(conn: Conn) -> int:
    cur = await conn.execute("SELECT coalesce(max(event_id), 0) AS n FROM alert_events")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def events_after(conn: Conn, after: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Alert events with event_id > after, oldest first (the alert as of each change)."""
    cur = await conn.execute(
        "SELECT event_id, alert_id, change, actor, alert FROM alert_events"
        " WHERE event_id > %s ORDER BY event_id LIMIT %s",
        (after, limit),
    )
    return await cur.fetchall()


async def list_page(
    conn: Conn,
    *,
    subject_id: str | None,
    state: str | None,
    visible_subjects: list[str] | None,
    before_no: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paged on alert_no."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if subject_id is not None:
        where.append("subject_id = %(subject)s")
        params["subject"] = subject_id
    if state is not None:
        if state == "unresolved":
            where.append("state <> 'resolved'")
        else:
            where.append("state = %(state)s")
            params["state"] = state
    if visible_subjects is not None:
        where.append("subject_id = ANY(%(visible)s)")
        params["visible"] = visible_subjects
    if before_no is not None:
        where.append("alert_no < %(before)s")
        params["before"] = before_no
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM alerts {clause} ORDER BY alert_no DESC LIMIT %(limit)s", params
    )
    return await cur.fetchall()


async def escalate_due(conn: Conn, after_s: float, now: datetime) -> list[dict[str, Any]]:
    """Escalate the critical alerts left unacknowledged for `after_s` since they opened
    or were last escalated, up to level 3: an event of their own, pushed again to every
    operator. All that are due in a few statements (5,000 alerts opened together fall
    due together); the rows changed. The caller's transaction commits them."""
    await hold_event_lock(conn)
    cur = await conn.execute(
        "SELECT id, coalesce((detail->>'escalation_level')::int, 0) AS level FROM alerts"
        " WHERE state = 'open' AND severity = 'critical' AND cleared_at IS NULL"
        " AND detail->'suspended' IS NULL"
        " AND coalesce((detail->>'escalation_level')::int, 0) < 3"
        " AND coalesce((detail->>'escalated_at')::timestamptz, created_at)"
        "     < clock_timestamp() - make_interval(secs => %s)"
        " ORDER BY alert_no FOR UPDATE",
        (after_s,),
    )
    due = await cur.fetchall()
    return await amend_many(
        conn,
        [
            Amendment(
                str(row["id"]),
                "escalated",
                {"escalated_at": iso(now), "escalation_level": int(row["level"]) + 1},
            )
            for row in due
        ],
    )


async def open_conditions(
    conn: Conn, device_ids: list[str], kinds: list[str]
) -> set[tuple[str, str]]:
    """The (device, kind) pairs among these with an open, uncleared condition alert
    (its rule key is its kind): what a process rebuilds of device conditions when it
    takes devices over, so that each still gets its clear and no second alert."""
    if not device_ids:
        return set()
    cur = await conn.execute(
        "SELECT DISTINCT device_id, kind FROM alerts WHERE device_id = ANY(%s)"
        " AND kind = ANY(%s) AND rule_key = kind AND state <> 'resolved' AND cleared_at IS NULL",
        (device_ids, kinds),
        prepare=False,
    )
    return {(r["device_id"], r["kind"]) for r in await cur.fetchall()}


async def open_proximity(conn: Conn, subject_ids: list[str]) -> list[dict[str, Any]]:
    """The open, uncleared proximity alerts of these subjects, oldest first."""
    if not subject_ids:
        return []
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE subject_id = ANY(%s::uuid[])"
        " AND kind = 'proximity' AND state <> 'resolved' AND cleared_at IS NULL"
        " ORDER BY alert_no",
        (subject_ids,),
        prepare=False,
    )
    return await cur.fetchall()


async def alert_of_episode(conn: Conn, subject_id: str, rule_key: str, episode: str) -> str | None:
    """The alert of one violation episode, by its key."""
    cur = await conn.execute(
        "SELECT id FROM alerts WHERE subject_id = %s AND rule_key = %s"
        " AND detail->>'episode' = %s LIMIT 1",
        (subject_id, rule_key, episode),
    )
    row = await cur.fetchone()
    return str(row["id"]) if row else None


async def episode_or_open_alert(
    conn: Conn, subject_id: str, rule_key: str, episode: str, superseded: str
) -> str | None:
    """The alert of an episode by its key or the key it superseded (late fixes moved
    its start), or else the subject's open alert for the rule (a window that began
    inside it)."""
    cur = await conn.execute(
        "SELECT id FROM alerts WHERE subject_id = %s AND rule_key = %s"
        " AND (detail->>'episode' IN (%s, %s)"
        "      OR (cleared_at IS NULL AND state <> 'resolved'))"
        " ORDER BY (detail->>'episode' IN (%s, %s)) DESC, alert_no DESC LIMIT 1",
        (subject_id, rule_key, episode, superseded, episode, superseded),
    )
    row = await cur.fetchone()
    return str(row["id"]) if row else None


async def episodes_alerted(conn: Conn, episodes: list[tuple[str, str, str]]) -> dict[str, str]:
    """Of (subject, rule key, episode key) triples, the episodes with an alert: episode
    key -> alert id, in one statement."""
    if not episodes:
        return {}
    cur = await conn.execute(
        "SELECT DISTINCT ON (a.detail->>'episode') a.detail->>'episode' AS episode, a.id"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS o(subject_id, rule_key, ep)"
        " JOIN alerts a ON a.subject_id = o.subject_id AND a.rule_key = o.rule_key"
        "  AND a.detail->>'episode' = o.ep"
        # The episode's alert still open if there is one (after an officer resolved an
        # ongoing episode's first alert, its later fixes went to a new one).
        " ORDER BY a.detail->>'episode', (a.state <> 'resolved') DESC, a.alert_no DESC",
        ([e[0] for e in episodes], [e[1] for e in episodes], [e[2] for e in episodes]),
    )
    return {row["episode"]: str(row["id"]) for row in await cur.fetchall()}


async def open_condition_alerts(
    conn: Conn, items: list[tuple[str, str, str | None]]
) -> dict[int, str]:
    """For each (kind, device, subject), by its index: its open, uncleared alert of that
    kind (the latest), in one statement for many devices."""
    if not items:
        return {}
    cur = await conn.execute(
        "SELECT DISTINCT ON (c.i) c.i, a.id"
        " FROM unnest(%s::int[], %s::text[], %s::text[], %s::uuid[])"
        "  AS c(i, kind, device_id, subject_id)"
        " JOIN alerts a ON a.kind = c.kind AND a.device_id = c.device_id"
        "  AND a.subject_id IS NOT DISTINCT FROM c.subject_id"
        "  AND a.state <> 'resolved' AND a.cleared_at IS NULL"
        " ORDER BY c.i, a.alert_no DESC",
        (
            list(range(len(items))),
            [k for k, _d, _s in items],
            [d for _k, d, _s in items],
            [s for _k, _d, s in items],
        ),
    )
    return {int(row["i"]): str(row["id"]) for row in await cur.fetchall()}


async def open_integrity(conn: Conn, device_id: str) -> tuple[str, int] | None:
    """The device's open integrity alert and how many refusals it counts."""
    cur = await conn.execute(
        "SELECT id, coalesce((detail->>'count')::int, 1) AS n FROM alerts"
        " WHERE kind = 'integrity' AND device_id = %s AND state <> 'resolved'"
        " ORDER BY alert_no DESC LIMIT 1",
        (device_id,),
    )
    row = await cur.fetchone()
    return (str(row["id"]), int(row["n"])) if row else None


async def resolved_among(conn: Conn, alert_ids: list[str]) -> set[str]:
    """Which of these alerts an officer has resolved (fixes never change those again)."""
    if not alert_ids:
        return set()
    cur = await conn.execute(
        "SELECT id FROM alerts WHERE id = ANY(%s::uuid[]) AND state = 'resolved'",
        (alert_ids,),
        prepare=False,
    )
    return {str(r["id"]) for r in await cur.fetchall()}
