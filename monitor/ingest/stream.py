"""Cluster mode's transport: NATS JetStream between the broker and the partition owners.

    broker ─MQTT─▶ bridge (every process) ─publish, Nats-Msg-Id─▶ stream MONITOR_UP,
    subjects monitor.up.<partition> ─pull consumer per partition─▶ the owner's ingest

The bridge PUBACKs a message to the broker only once JetStream has stored it (its
publish is acknowledged, as new or as a duplicate). Its message id is a digest of the
topic, the payload and the signature, so the copy that a second bridge (every process
runs one, and several brokers may feed the cluster) or a redelivery publishes again is
dropped by the stream's duplicate window: two bridges are redundancy, not double work.

The stream keeps each message until its partition's owner acknowledges it (work-queue
retention), which the owner does only after the batch holding it is committed and the
device's `ack` published. Each claim of a partition (a new fencing epoch) gets a
consumer of its own, `p<partition>-e<epoch>`, created after the previous owner's is
deleted: the new consumer starts with every message the old owner had not acknowledged,
at once rather than after an ack timeout, and a paused old owner that wakes up finds
its consumer gone instead of taking messages from the new one.

Envelopes are `marshal` data (plain values, no code runs on loading) carrying the MQTT
message as the relay received it, with the upload it decoded ahead. Only the service's
own bridges publish on these subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import marshal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from monitor.ingest.partition import partition_of_topic
from monitor.ingest.subscriber import Message

__all__ = [
    "STREAM",
    "Bridge",
    "Consumer",
    "Stream",
    "decode",
    "encode",
    "message_id",
    "settle",
    "settle_later",
]

log = logging.getLogger(__name__)

STREAM = "MONITOR_UP"
SUBJECT_PREFIX = "monitor.up"
_ENVELOPE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A resend of the same upload within this window is recognised by the stream itself;
# after it, by its (device_id, seq) in the database.
_DUPLICATE_WINDOW_S = 300.0
_FETCH_BATCH = 200
_FETCH_WAIT_S = 1.0
# Long enough for a batch under load, short enough that a message a live owner lost
# track of comes back soon; a takeover never waits for it (the consumer is new).
_ACK_WAIT_S = 30.0
_MAX_ACK_PENDING = 20_000
# A consumer is asked whether it still exists after this many idle fetches, and made
# again after this many failed ones.
_CHECK_EVERY_IDLE = 3
_REOPEN_AFTER = 3


def subject(partition: int) -> str:
    return f"{SUBJECT_PREFIX}.{partition}"


def message_id(msg: Message) -> str:
    """The same for every copy of one MQTT publish, whichever bridge forwards it."""
    h = hashlib.sha256()
    h.update(msg.topic.encode())
    h.update(b"\0")
    h.update(msg.payload)
    h.update(b"\0")
    h.update(msg.user_properties.get("sig", "").encode())
    return h.hexdigest()[:40]


def encode(msg: Message) -> bytes:
    received_us = (msg.received_at - _EPOCH) // timedelta(microseconds=1)
    item = (
        _ENVELOPE_VERSION,
        msg.topic,
        msg.payload,
        msg.user_properties,
        tuple(sorted(msg.repeated_properties)),
        received_us,
        bool(msg.retain),
        msg.upload,
    )
    try:
        return marshal.dumps(item)
    except ValueError:  # an upload marshal cannot carry: the owner decodes it itself
        return marshal.dumps((*item[:-1], None))


def decode(data: bytes, partition: int, handle: Any = None) -> Message:
    """The message an envelope carries; ValueError when it is not one of ours."""
    try:
        item = marshal.loads(data)
    except (EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"not an envelope: {exc}") from None
    if not isinstance(item, tuple) or len(item) != 8 or item[0] != _ENVELOPE_VERSION:
        raise ValueError("not an envelope of this version")
    _v, topic, payload, props, repeated, received_us, retain, upload = item
    return Message(
        topic=topic,
        payload=payload,
        qos=1,
        mid=0,
        retain=retain,
        user_properties=props,
        received_at=_EPOCH + timedelta(microseconds=received_us),
        generation=0,
        repeated_properties=frozenset(repeated),
        upload=upload,
        partition=partition,
        handle=handle,
    )


class Stream:
    """One NATS connection per process, shared by its bridge and its consumers."""

    def __init__(self, servers: list[str], name: str, partitions: int) -> None:
        self._servers = servers
        self._name = name
        self.partitions = partitions
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self.ready = asyncio.Event()

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "the stream is not connected"
        return self._js

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        async def disconnected() -> None:
            log.warning("disconnected from NATS; reconnecting")

        async def reconnected() -> None:
            assert self._nc is not None
            log.info("reconnected to NATS at %s", self._nc.connected_url)

        async def error(exc: Exception) -> None:
            log.warning("NATS: %s", exc)

        self._nc = await nats.connect(
            servers=self._servers,
            name=self._name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            ping_interval=5,
            max_outstanding_pings=2,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
        self._js = self._nc.jetstream(timeout=5)

    async def ensure(self) -> None:
        """Create the stream if no process has yet: replicated on up to 3 servers."""
        assert self._nc is not None
        # The servers this client knows of, the cluster's others included (they are
        # announced by the one it connected to).
        await asyncio.sleep(0.2)
        replicas = max(1, min(3, len(self._nc.servers), _cluster_size(self._nc)))
        config = StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT_PREFIX}.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=_DUPLICATE_WINDOW_S,
        )
        delay = 0.2
        for _attempt in range(60):
            try:
                await self.js.stream_info(STREAM)
                self.ready.set()
                return
            except NotFoundError:
                pass
            except (TimeoutError, NatsTimeout) as exc:
                log.warning("NATS stream lookup: %s", exc)
            try:
                await self.js.add_stream(config)
                log.info("created the stream %s with %d replica(s)", STREAM, replicas)
                self.ready.set()
                return
            except BadRequestError as exc:  # another process made it meanwhile
                log.info("stream %s: %s", STREAM, exc)
            except (TimeoutError, NatsTimeout) as exc:
                log.warning("NATS stream creation: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise RuntimeError(f"could not create or find the JetStream stream {STREAM}")

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    # the owner's side

    async def open_consumer(self, partition: int, epoch: int) -> JetStreamContext.PullSubscription:
        """The consumer of this claim of `partition`, every other one on its subject
        deleted first (they belong to earlier claims)."""
        name = f"p{partition}-e{epoch}"
        filter_subject = subject(partition)
        config = ConsumerConfig(
            durable_name=name,
            filter_subject=filter_subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=_ACK_WAIT_S,
            max_ack_pending=_MAX_ACK_PENDING,
            # Replicated as the stream is, so a consumer outlives the loss of a server
            # (a one-replica consumer on it was gone, and making it again under its
            # name timed out while its server was down). An R3 consumer takes about
            # 0.5 s to create, its own Raft group: a takeover opens its partitions'
            # consumers concurrently, 8 in 0.8 s (measured), not one after another.
        )
        # The previous claim's consumer, by its name; any older one found on conflict.
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(STREAM, f"p{partition}-e{epoch - 1}")
        try:
            await self.js.add_consumer(STREAM, config)
        except BadRequestError:
            # Another consumer filters this partition (a claim before the previous one
            # never got to delete its predecessor), or ours exists from a first attempt.
            for info in await self.js.consumers_info(STREAM):
                if info.config.filter_subject == filter_subject and info.name != name:
                    with contextlib.suppress(NotFoundError):
                        await self.js.delete_consumer(STREAM, info.name)
            with contextlib.suppress(BadRequestError):
                await self.js.add_consumer(STREAM, config)
        return await self.js.pull_subscribe_bind(durable=name, stream=STREAM)

    async def remove_consumer(self, partition: int, epoch: int) -> None:
        with contextlib.suppress(Exception):
            await self.js.delete_consumer(STREAM, f"p{partition}-e{epoch}")


def _cluster_size(nc: NatsClient) -> int:
    info = getattr(nc, "_server_info", None) or {}
    urls = info.get("connect_urls") or []
    return max(1, len(urls))


class Bridge:
    """Forwards what the broker delivers into the stream, then PUBACKs it to the broker.

    A publish that fails (no NATS server reachable, a leader election) is tried again
    with the same message id until it is stored: the broker's message stays
    unacknowledged meanwhile, and the device keeps it until its `ack`."""

    def __init__(self, stream: Stream, puback: Callable[[list[Message]], None]) -> None:
        self._stream = stream
        self._puback = puback
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._inflight = 0
        self.forwarded = 0

    def submit(self, msg: Message) -> None:
        self._queue.put_nowait(msg)

    async def run(self) -> None:
        await self._stream.ready.wait()
        limit = asyncio.Semaphore(2_000)  # publishes awaiting their acknowledgement
        tasks: set[asyncio.Task[None]] = set()
        while True:
            msg = await self._queue.get()
            await limit.acquire()
            task = asyncio.create_task(self._forward(msg, limit))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _forward(self, msg: Message, limit: asyncio.Semaphore) -> None:
        try:
            data = encode(msg)
            headers = {"Nats-Msg-Id": message_id(msg)}
            target = subject(partition_of_topic(msg.topic, self._stream.partitions))
            delay = 0.1
            while True:
                try:
                    await self._stream.js.publish(target, data, headers=headers, timeout=5)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "forwarding %s to NATS failed (%s); again in %.1fs", msg.topic, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self.forwarded += 1
            self._puback([msg])
        finally:
            limit.release()


class Consumer:
    """Pulls one partition's messages for this process while it holds the claim."""

    def __init__(
        self,
        stream: Stream,
        partition: int,
        epoch: int,
        deliver: Callable[[Message], None],
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.partition = partition
        self.epoch = epoch
        self._stream = stream
        self._deliver = deliver
        # Whether the ingest has room for more: a consumer fetches only then, so a
        # backlog waits in the stream, not in this process's memory (without it, a
        # process behind by a minute held 1.3 GB of queued messages, measured).
        self._room = room
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"partition-{self.partition}")

    async def stop(self, wait_s: float = 2.0) -> None:
        """Stop pulling. Waits at most `wait_s` for the task to end: whoever stops a
        consumer (the claims' heartbeat) must not be held up by a fetch in flight."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=wait_s)

    async def _alive(self) -> bool:
        try:
            await self._stream.js.consumer_info(STREAM, f"p{self.partition}-e{self.epoch}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not found, or no server answers for it: made again
            log.warning("partition %d: its consumer cannot be found (%r)", self.partition, exc)
            return False
        return True

    async def _reopen(self) -> JetStreamContext.PullSubscription:
        delay = 0.2
        while True:
            try:
                return await self._stream.open_consumer(self.partition, self.epoch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("partition %d: opening its consumer failed (%s)", self.partition, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _run(self) -> None:
        sub = await self._reopen()
        log.info("partition %d: consuming (epoch %d)", self.partition, self.epoch)
        failures = 0
        idle = 0
        while True:
            if self._room is not None:
                await self._room()
            try:
                batch = await sub.fetch(_FETCH_BATCH, timeout=_FETCH_WAIT_S)
            except NatsTimeout:
                # Nothing to fetch, or a consumer that is gone (its server died: a pull
                # then simply gets no answer). Every few idle seconds, ask.
                idle += 1
                if idle % _CHECK_EVERY_IDLE == 0 and not await self._alive():
                    log.warning(
                        "partition %d: its consumer is gone; opening it again", self.partition
                    )
                    failures = _REOPEN_AFTER
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("partition %d: fetch failed (%s)", self.partition, exc)
                await asyncio.sleep(0.5)
            else:
                failures = idle = 0
                for m in batch:
                    try:
                        msg = decode(m.data, self.partition, m)
                    except ValueError as exc:
                        log.error("partition %d: dropped a message: %s", self.partition, exc)
                        await m.term()
                        continue
                    self._deliver(msg)
                continue
            if failures >= _REOPEN_AFTER:
                # The consumer is gone: made again, it delivers every message of the
                # partition not yet acknowledged.
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                sub = await self._reopen()
                failures = idle = 0


async def settle(messages: list[Message], ok: bool) -> None:
    """Acknowledge (committed) or give back (not ours to commit any more) stream
    messages; MQTT messages in the list are left alone."""
    for msg in messages:
        handle = msg.handle
        if isinstance(handle, Msg):
            with contextlib.suppress(Exception):
                if ok:
                    await handle.ack()
                else:
                    await handle.nak()


_settling: set[asyncio.Task[None]] = set()


def settle_later(messages: list[Message], ok: bool) -> None:
    """`settle` without waiting for it (from the batch loop's synchronous ack)."""
    task = asyncio.get_running_loop().create_task(settle(messages, ok))
    _settling.add(task)
    task.add_done_callback(_settling.discard)
