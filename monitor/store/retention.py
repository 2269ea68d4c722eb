"""Deleting monitoring data once its order has ended plus the retention period.

A subject's location data (fixes, device events, alerts and their history) is deleted
when every one of its orders has ended more than `days` ago and no legal hold is active.
Subjects without any order are kept (nothing says when their measure ends). Fixes and
events that belong to no subject (stamped before a device was fitted) are deleted
`days` after their time. Whole TimescaleDB chunks are dropped with `drop_chunks` where
everything in them qualifies; rows in the remaining chunks are deleted. The audit log
is never touched here (it is append-only and kept at least a year).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["DEFAULT_DAYS", "Outcome", "expired_subjects", "run"]

# Bavarian police law: monitoring data deleted at most two months after the measure ends.
DEFAULT_DAYS = 60

_HYPERTABLES = ("fixes", "device_events")


@dataclass(frozen=True, slots=True)
class Outcome:
    as_of: datetime
    expired_subjects: list[str]
    chunks_dropped: int
    rows_deleted: int


def expired_subjects(conn: psycopg.Connection[Any], now: datetime, days: int) -> list[str]:
    rows = conn.execute(
        "WITH latest AS (SELECT DISTINCT ON (id) id, subject_id, ends_at FROM orders"
        "                ORDER BY id, version DESC)"
        " SELECT l.subject_id FROM latest l GROUP BY l.subject_id"
        " HAVING bool_and(l.ends_at IS NOT NULL)"
        "    AND max(l.ends_at) + make_interval(days => %s) < %s"
        "    AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.subject_id = l.subject_id"
        "                    AND h.released_at IS NULL)",
        (days, now),
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def _droppable_before(
    conn: psycopg.Connection[Any], table: str, expired: list[str], cutoff: datetime
) -> datetime | None:
    """The start of the oldest chunk that must stay; chunks ending before it can go."""
    chunks = conn.execute(
        "SELECT chunk_schema, chunk_name, range_start, range_end"
        " FROM timescaledb_information.chunks WHERE hypertable_name = %s ORDER BY range_start",
        (table,),
    ).fetchall()
    boundary = None
    for schema, name, start, end in chunks:
        keeps = (
            end > cutoff
            or conn.execute(
                sql.SQL(
                    "SELECT 1 FROM {}.{} WHERE subject_id IS NOT NULL"
                    " AND NOT (subject_id = ANY(%s::uuid[])) LIMIT 1"
                ).format(sql.Identifier(schema), sql.Identifier(name)),
                (expired,),
            ).fetchone()
            is not None
        )
        if keeps:
            return start  # type: ignore[no-any-return]
        boundary = end
    return boundary


def run(database_url: str, now: datetime, days: int = DEFAULT_DAYS) -> Outcome:
    cutoff = now - timedelta(days=days)
    with psycopg.connect(database_url) as conn, conn.transaction():
        expired = expired_subjects(conn, now, days)
        dropped = 0
        deleted = 0
        for table in _HYPERTABLES:
            before = _droppable_before(conn, table, expired, cutoff)
            if before is not None:
                rows = conn.execute(
                    "SELECT drop_chunks(%s::regclass, older_than => %s)", (table, before)
                ).fetchall()
                dropped += len(rows)
            ident = sql.Identifier(table)
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE subject_id = ANY(%s::uuid[])").format(ident),
                (expired,),
            )
            deleted += cur.rowcount
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE subject_id IS NULL AND t < %s").format(ident),
                (cutoff,),
            )
            deleted += cur.rowcount
        cur = conn.execute(
            "DELETE FROM alert_events WHERE alert_id IN"
            " (SELECT id FROM alerts WHERE subject_id = ANY(%s::uuid[]))",
            (expired,),
        )
        deleted += cur.rowcount
        cur = conn.execute("DELETE FROM alerts WHERE subject_id = ANY(%s::uuid[])", (expired,))
        deleted += cur.rowcount
        conn.execute(
            "INSERT INTO retention_runs (as_of, retention_days, expired_subjects,"
            " chunks_dropped, rows_deleted) VALUES (%s, %s, %s::uuid[], %s, %s)",
            (now, days, expired, dropped, deleted),
        )
        conn.execute(
            "INSERT INTO audit_log (actor, action, object_type, after, prev_hash, hash)"
            " VALUES ('retention', 'delete', 'monitoring data', %s, '', '')",
            (
                json.dumps(
                    {
                        "as_of": now.isoformat(),
                        "days": days,
                        "subjects": expired,
                        "chunks_dropped": dropped,
                        "rows_deleted": deleted,
                    }
                ),
            ),
        )
    return Outcome(now, expired, dropped, deleted)
