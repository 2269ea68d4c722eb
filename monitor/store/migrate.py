"""Versioned SQL migrations, applied in order, each once, under an advisory lock.

The files in `migrations/` are named `NNNN_description.sql`; the number is the version.
Several service processes may start at once: the lock makes one apply and the others
wait and then find nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

__all__ = ["Migration", "apply", "available", "pending"]

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6D6F6E69  # "moni": any constant shared by every process of the service
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("monitor.store.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> set[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    return {int(str(row[0])) for row in conn.execute("SELECT version FROM schema_migrations")}


def pending(database_url: str) -> list[Migration]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        done = _applied(conn)
    return [m for m in available() if m.version not in done]


def apply(database_url: str) -> list[Migration]:
    """Create the TimescaleDB extension if missing, then apply what is pending.

    Returns the migrations applied by this call.
    """
    applied: list[Migration] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            done = _applied(conn)
            for migration in available():
                if migration.version in done:
                    continue
                log.info("applying migration %s", migration.name)
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
