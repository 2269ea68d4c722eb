"""Partition ownership in cluster mode: session advisory locks and fencing epochs.

A process holds partition `p` while its claim connection holds the advisory lock
(`CLAIM_CLASS`, p). PostgreSQL releases it when that connection ends: the process died,
or it stayed silent past `idle_session_timeout` (paused, cut off), which the claim
connection sets. Taking a lock is followed by a new epoch in `partition_owners`; the
ingest transactions check their epochs under FOR SHARE (`fence`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = [
    "APPLICATION_PREFIX",
    "BRIDGE_CLASS",
    "CLAIM_CLASS",
    "Fenced",
    "bump_epoch",
    "claimed",
    "configure",
    "ensure_partitions",
    "fence",
    "members",
    "release",
    "try_claim",
    "try_claim_bridge",
    "view",
]

Conn = AsyncConnection[DictRow]

CLAIM_CLASS = 0x6D6F6E70  # "monp"; the two-key form, apart from the migrations' lock
BRIDGE_CLASS = 0x6D6F6E62  # "monb": the bridge of one broker
# The claim connection's application_name: how the processes see each other.
APPLICATION_PREFIX = "monitor-cluster:"


class Fenced(Exception):
    """The batch's partitions are no longer this process's to commit."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__(f"partition(s) {sorted(partitions)} claimed by another process")
        self.partitions = partitions


async def configure(conn: Conn, timeout_s: float) -> None:
    """The claim connection's limits: silent past `timeout_s` (a paused or cut-off
    process), PostgreSQL ends its session and so its claims; a claim waits for a
    previous owner's running transaction, but not for ever."""
    ms = int(timeout_s * 1000)
    await conn.execute(f"SET idle_session_timeout = {ms}")
    await conn.execute(f"SET lock_timeout = {2 * ms}")


async def ensure_partitions(conn: Conn, partitions: int) -> None:
    await conn.execute(
        "INSERT INTO partition_owners (partition) SELECT generate_series(0, %s - 1)"
        " ON CONFLICT DO NOTHING",
        (partitions,),
    )


async def try_claim(conn: Conn, partition: int) -> bool:
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s::int, %s::int) AS ok", (CLAIM_CLASS, partition)
    )
    row = await cur.fetchone()
    return bool(row and row["ok"])


async def try_claim_bridge(conn: Conn, broker: int) -> bool:
    """The bridge of one broker (its key: a hash of its address), held like a partition."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s::int, %s::int) AS ok", (BRIDGE_CLASS, broker)
    )
    row = await cur.fetchone()
    return bool(row and row["ok"])


async def release(conn: Conn, partition: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s::int, %s::int)", (CLAIM_CLASS, partition))


async def bump_epoch(conn: Conn, partition: int, instance: str) -> int:
    """The new epoch of a partition just claimed: from now on only it commits."""
    cur = await conn.execute(
        "UPDATE partition_owners SET epoch = epoch + 1, instance = %s, since = now()"
        " WHERE partition = %s RETURNING epoch",
        (instance, partition),
    )
    row = await cur.fetchone()
    assert row is not None, f"partition {partition} is not in partition_owners"
    return int(row["epoch"])


async def fence(conn: Conn, epochs: dict[int, int]) -> None:
    """Inside the batch's transaction: raise Fenced unless every partition still has
    the epoch given. The share locks make a new owner's epoch bump wait for this
    transaction to end."""
    if not epochs:
        return
    parts = sorted(epochs)
    cur = await conn.execute(
        "SELECT partition, epoch FROM partition_owners WHERE partition = ANY(%s)"
        " ORDER BY partition FOR SHARE",
        (parts,),
    )
    current = {int(r["partition"]): int(r["epoch"]) for r in await cur.fetchall()}
    lost = {p for p in parts if current.get(p) != epochs[p]}
    if lost:
        raise Fenced(lost)


async def claimed(conn: Conn) -> dict[int, int]:
    """The partitions whose lock this session holds, with their current epochs."""
    cur = await conn.execute(
        "SELECT l.objid::int AS partition, o.epoch FROM pg_locks l"
        " JOIN partition_owners o ON o.partition = l.objid::int"
        " WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objsubid = 2"
        "  AND l.pid = pg_backend_pid() AND l.granted",
        (CLAIM_CLASS,),
    )
    return {int(r["partition"]): int(r["epoch"]) for r in await cur.fetchall()}


async def members(conn: Conn) -> list[str]:
    """The instances whose claim connection is open on this database: the live
    processes of the cluster."""
    cur = await conn.execute(
        "SELECT DISTINCT substr(application_name, %s) AS instance FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE %s",
        (len(APPLICATION_PREFIX) + 1, APPLICATION_PREFIX + "%"),
    )
    return sorted(str(r["instance"]) for r in await cur.fetchall())


async def view(conn: Conn) -> list[dict[str, Any]]:
    """Each live process with the partitions it holds now and when it joined."""
    cur = await conn.execute(
        "SELECT substr(a.application_name, %s) AS instance, min(a.backend_start) AS since,"
        "  coalesce(array_agg(l.objid::int ORDER BY l.objid)"
        "   FILTER (WHERE l.classid = %s::oid), '{}') AS partitions,"
        "  bool_or(l.classid = %s::oid) AS bridge"
        " FROM pg_stat_activity a"
        " LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory'"
        "  AND l.classid IN (%s::oid, %s::oid) AND l.objsubid = 2 AND l.granted"
        " WHERE a.datname = current_database() AND a.application_name LIKE %s"
        " GROUP BY 1 ORDER BY 1",
        (
            len(APPLICATION_PREFIX) + 1,
            CLAIM_CLASS,
            BRIDGE_CLASS,
            CLAIM_CLASS,
            BRIDGE_CLASS,
            APPLICATION_PREFIX + "%",
        ),
    )
    rows: list[dict[str, Any]] = []
    for r in await cur.fetchall():
        since: datetime = r["since"]
        rows.append(
            {
                "instance": r["instance"],
                "partitions": list(r["partitions"]),
                "since": since,
                "bridge": bool(r["bridge"]),
            }
        )
    return rows
