"""Cluster mode's partition ownership: which partitions this process holds, claimed and
given up through PostgreSQL session advisory locks (`monitor.store.claims`).

Why PostgreSQL and not a NATS KV bucket: every commit already goes to PostgreSQL, so a
claim there can fence the commit itself in the same transaction (the epoch checked
under FOR SHARE), and a lock held by a session is released by PostgreSQL the moment
that session ends: a SIGKILLed process loses its claims at once, without a lease to run
out. A process that is paused or cut off stops its heartbeat, and the claim
connection's `idle_session_timeout` ends its session after `claim_timeout_s`.

Every second each process heartbeats on its claim connection, reads who is alive (the
claim connections open on the database), and moves towards its fair share: it claims
free partitions while it holds fewer, and gives up the highest-numbered ones while it
holds more. A claim bumps the partition's epoch, forgets whatever this process knew of
its devices (the store is the truth), and opens the partition's consumer for that epoch.

The broker's subscription is claimed the same way, by one process at a time: the bridge.
Its MQTT client id is the cluster's (`cluster.bridge_client_id`), not the process's, and
its session is persistent, so when the bridging process dies the next one to claim the
bridge resumes the very same broker session, and the broker delivers again whatever the
dead one had not acknowledged. (With every process subscribed, each message was
forwarded by every process: at 10,000 fixes/s on two cores that doubled the work.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from monitor.ingest import stream as nats_stream
from monitor.ingest.partition import fair_share
from monitor.ingest.stream import Consumer, Stream
from monitor.ingest.subscriber import Message, Subscriber
from monitor.service import Ingest
from monitor.store import claims

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)

_BEAT_S = 1.0


class Coordinator:
    """This process's claims on the partitions (implements `service.Claims`)."""

    def __init__(
        self,
        database_url: str,
        instance: str,
        stream: Stream,
        ingest: Ingest,
        claim_timeout_s: float,
        bridge: Subscriber | None = None,
        broker_key: int = 0,
    ) -> None:
        self.partitions = stream.partitions
        self._url = database_url
        self._instance = instance
        self._stream = stream
        self._ingest = ingest
        self._timeout_s = claim_timeout_s
        self._epochs: dict[int, int] = {}
        self._claimed_at: dict[int, datetime] = {}
        self._consumers: dict[int, Consumer] = {}
        self._lost: set[int] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        # The broker's subscription, run while this process holds its claim.
        self._bridge = bridge
        self._broker_key = broker_key
        self.bridging = False
        # Set once this process has taken its first share (read by /healthz).
        self.ready = asyncio.Event()
        self.members: list[str] = []
        # Where the partitions start being tried: spread, so two processes starting
        # together do not contend for the same ones first.
        self._offset = zlib.crc32(instance.encode()) % max(self.partitions, 1)

    # service.Claims

    def epochs(self) -> Mapping[int, int]:
        return self._epochs

    def claimed_at(self, partition: int) -> datetime | None:
        return self._claimed_at.get(partition)

    def fenced(self, partitions: set[int]) -> None:
        for p in partitions:
            if p in self._epochs:
                self._lost.add(p)
                del self._epochs[p]
        self._ingest.forget(partitions)

    def give_back(self, messages: list[Message]) -> None:
        nats_stream.settle_later(messages, ok=False)

    # the loop

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    row_factory=dict_row,
                    application_name=f"{claims.APPLICATION_PREFIX}{self._instance}",
                ) as conn:
                    await self._configure(conn)
                    delay = 0.5
                    while True:
                        await self._beat(conn)
                        await asyncio.sleep(_BEAT_S)
            except asyncio.CancelledError:
                await self._drop_all("stopping")
                raise
            except (psycopg.Error, OSError) as exc:
                # The claim connection is gone (the database restarted, or this process
                # was paused past its timeout): every claim went with it.
                log.error("lost the claim connection (%s); claiming again", exc)
                await self._drop_all("claim connection lost")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _configure(self, conn: AsyncConnection[DictRow]) -> None:
        await claims.configure(conn, self._timeout_s)
        await claims.ensure_partitions(conn, self.partitions)

    async def _beat(self, conn: AsyncConnection[DictRow]) -> None:
        held = await claims.claimed(conn)
        # Partitions a commit found fenced, or whose lock this session lost: given up
        # (their consumers stopped, their locks released if still held).
        gone = (set(self._epochs) - set(held)) | self._lost
        for p in gone:
            await self._drop(conn, p, "no longer held")
        self._lost.clear()
        if (
            self._bridge is not None
            and not self.bridging
            and await claims.try_claim_bridge(conn, self._broker_key)
        ):
            self.bridging = True
            await self._bridge.start()
            log.info("bridging the broker into the stream")
        self.members = await claims.members(conn)
        share = fair_share(self.partitions, self.members, self._instance)
        mine = sorted(self._epochs)
        if len(mine) > share:
            for p in mine[share - len(mine) :]:
                await self._drop(conn, p, f"rebalancing to {share} per process")
        elif len(mine) < share:
            for i in range(self.partitions):
                if len(self._epochs) >= share:
                    break
                p = (self._offset + i) % self.partitions
                if p not in self._epochs:
                    await self._claim(conn, p)
        self.ready.set()

    async def _claim(self, conn: AsyncConnection[DictRow], partition: int) -> None:
        if not await claims.try_claim(conn, partition):
            return
        try:
            epoch = await claims.bump_epoch(conn, partition, self._instance)
        except psycopg.errors.LockNotAvailable:
            # The previous owner's transaction still runs: try again next beat.
            await claims.release(conn, partition)
            return
        # Whatever this process knew of the partition's devices may be stale now.
        self._ingest.forget({partition})
        self._epochs[partition] = epoch
        self._claimed_at[partition] = datetime.now(UTC)
        consumer = Consumer(
            self._stream, partition, epoch, self._ingest.submit, self._ingest.wait_for_room
        )
        self._consumers[partition] = consumer
        consumer.start()
        log.info("claimed partition %d (epoch %d)", partition, epoch)

    async def _drop(self, conn: AsyncConnection[DictRow] | None, partition: int, why: str) -> None:
        self._epochs.pop(partition, None)
        self._claimed_at.pop(partition, None)
        consumer = self._consumers.pop(partition, None)
        if consumer is not None:
            # Stopped beside the heartbeat, never in its way: a beat held up past the
            # claim timeout would lose every claim of this process.
            task = asyncio.create_task(consumer.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        self._ingest.forget({partition})
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await claims.release(conn, partition)
        log.info("gave up partition %d: %s", partition, why)

    async def _drop_all(self, why: str) -> None:
        if self._bridge is not None and self.bridging:
            self.bridging = False
            await self._bridge.stop()
            log.info("stopped bridging the broker: %s", why)
        for p in sorted(set(self._epochs) | set(self._consumers)):
            await self._drop(None, p, why)
