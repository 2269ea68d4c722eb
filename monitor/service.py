"""The ingest pipeline, in order, one batch at a time:

    decode → check identity and signature → dedupe (device_id, seq) → store →
    judge in fix-time order → alerts → commit → ack the devices → PUBACK the broker

Everything a batch writes is committed in one transaction; only then are the devices'
`ack` watermarks published and the broker's messages acknowledged, so nothing
acknowledged is ever lost, and alerts go out (via NOTIFY, delivered at commit) only
once they are in the record. A batch whose transaction fails is retried as it was: the
rule state and watermarks it computed are applied only after its commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from monitor.config import Settings
from monitor.domain import (
    DEFAULT_SEVERITY,
    AlertKind,
    DeviceEvent,
    Fix,
    Rejection,
    Severity,
    iso,
)
from monitor.heap import Heap
from monitor.ingest.broker import acl_lines, password_hash, write_atomically
from monitor.ingest.broker import reload as reload_broker
from monitor.ingest.codec import UploadFault, decode_upload, upload_from_wire, verify_signature
from monitor.ingest.owntracks import decode_owntracks
from monitor.ingest.partition import partition_of
from monitor.ingest.subscriber import Message
from monitor.ingest.wire import TopicError, ack_topic, cmd_topic, parse_topic
from monitor.rules.book import RuleBook, SharedZones
from monitor.rules.engine import (
    AlertChange,
    Change,
    Debounce,
    Episode,
    ProximityState,
    SubjectState,
    evaluate,
    evaluate_proximity,
    rejudge,
    rejudge_window,
    resume_proximity,
)
from monitor.rules.events import judge as judge_event
from monitor.rules.liveness import DeviceStatus, LivenessChange, LivenessState, quiet_until
from monitor.rules.liveness import Policy as LivenessPolicy
from monitor.rules.liveness import judge_all as judge_liveness
from monitor.rules.margins import Margins, Measured
from monitor.rules.plausibility import DeviceCheck
from monitor.rules.plausibility import judge as judge_plausibility
from monitor.rules.transitions import Transition, transitions
from monitor.rules.watermark import Gap, Watermark
from monitor.store import alerts as alert_store
from monitor.store import claims, positions
from monitor.store import commands as command_store
from monitor.store import devices as device_store
from monitor.store import zones as zone_store
from monitor.store.pool import Pool

__all__ = ["Claims", "DeviceInfo", "Ingest", "RulesChanged"]

log = logging.getLogger(__name__)

Conn = AsyncConnection[DictRow]

# At most one "updated" event per alert this often (see _apply_changes).
UPDATE_EVERY_S = 10.0

# How many stored fixes warm a subject's rule state when the process first meets it.
_WARM_FIXES = 20
_REJUDGE_LIMIT = 20_000
# Devices judged by liveness between two yields to the event loop.
_LIVENESS_SLICE = 2_000
_LIVENESS_BATTERY_CRITICAL = LivenessPolicy().battery_critical_pct


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    kind: str
    subject_id: str | None
    assigned_at: datetime | None
    signing_key: bytes | None
    owntracks_topic: str | None
    fix_interval_s: float = 60.0
    upload_interval_s: float = 60.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeviceInfo:
        return cls(
            device_id=row["device_id"],
            kind=row["kind"],
            subject_id=str(row["subject_id"]) if row["subject_id"] is not None else None,
            assigned_at=row["assigned_at"],
            signing_key=bytes(row["signing_key"]) if row["signing_key"] is not None else None,
            owntracks_topic=row["owntracks_topic"],
            fix_interval_s=float(row["fix_interval_s"]),
            upload_interval_s=float(row["upload_interval_s"]),
        )

    @property
    def partition_key(self) -> str:
        """What the bridge partitions this device's messages by (ingest.partition)."""
        return self.owntracks_topic or self.device_id

    def subject_at(self, t: datetime) -> str | None:
        """Fixes stamped before the device was fitted belong to no subject."""
        if self.subject_id is None or self.assigned_at is None or t < self.assigned_at:
            return None
        return self.subject_id


class Claims(Protocol):
    """What the ingest loop asks of cluster mode's partition ownership (monitor.cluster).
    Without it, this process owns every device."""

    partitions: int

    def epochs(self) -> Mapping[int, int]:
        """The partitions this process holds now, with the fencing epoch of each."""
        ...

    def claimed_at(self, partition: int) -> datetime | None: ...

    def fenced(self, partitions: set[int]) -> None:
        """A commit found these partitions claimed by another process."""
        ...

    def give_back(self, messages: list[Message]) -> None:
        """Messages of partitions no longer held: for their new owner, not acknowledged."""
        ...


# Device conditions that liveness opens and clears (rebuilt from open alerts).
_LIVENESS_KINDS = (AlertKind.COMMS_LOSS, AlertKind.LOCATION_LOSS, AlertKind.BATTERY)


@dataclass
class _Heard:
    """What the service last heard from a device (for liveness)."""

    upload_at: datetime | None = None
    fix_t: datetime | None = None
    no_fix_at: datetime | None = None
    battery: int | None = None
    charging: bool = False


_NOT_HEARD = _Heard()  # read only: a device never heard from


@dataclass(frozen=True, slots=True)
class RulesChanged:
    """A subject's rules changed from `since` on (a status order or a zone)."""

    subject_id: str
    since: datetime
    keys: frozenset[str] | None = None  # rule keys new from `since`; None: reload only
    shared: bool = False  # a shared zone set changed (subject_id is then the set's name)

    def notice(self, origin: str) -> str:
        """The payload of NOTIFY rules: the whole change, so that an ingesting process
        other than the one that took the request judges the stored fixes again from
        `since` as the taking process would. `origin` names the sending process, which
        has handled the change already."""
        keys = sorted(self.keys) if self.keys is not None else None
        return json.dumps(
            {
                "subject_id": self.subject_id,
                "since": self.since.isoformat(),
                "keys": keys,
                "origin": origin,
            }
        )

    @classmethod
    def from_notice(cls, payload: str, now: datetime) -> tuple[RulesChanged, str | None]:
        """The change and its origin from a NOTIFY rules payload. A bare subject id (a
        notice sent by hand in SQL) is a reload from `now`, with no origin."""
        try:
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            since = datetime.fromisoformat(str(data["since"]))
            keys = data.get("keys")
            change = cls(
                str(data["subject_id"]),
                since if since.tzinfo is not None else since.replace(tzinfo=UTC),
                frozenset(str(k) for k in keys) if isinstance(keys, list) else None,
            )
        except (ValueError, KeyError, TypeError):
            return cls(payload, now), None
        origin = data.get("origin")
        return change, str(origin) if origin is not None else None


@dataclass
class _Batch:
    """What one batch will write, and what it will change in memory after the commit."""

    messages: list[Message] = field(default_factory=list)
    fixes: list[tuple[Fix, str | None]] = field(default_factory=list)
    events: list[tuple[DeviceEvent, str | None]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    accounted: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    uploaded: set[str] = field(default_factory=set)  # devices owed an ack
    integrity: list[tuple[str, str, Rejection]] = field(default_factory=list)
    # No fix could be stored already: every seq is above its device's watermark and
    # not among those accounted above it (a seq at or below may be a late record that a
    # data gap skipped, or a resend; a fix without seq is matched by time alone).
    fresh: bool = True


class Ingest:
    """The pipeline's state and its batch loop. One per process."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        publish: Callable[[str, bytes, bool], None],
        puback: Callable[[list[Message]], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._pool = pool
        # This process, as the origin of the rule changes it announces (NOTIFY rules).
        self.origin = uuid.uuid4().hex
        self._publish = publish
        self._puback = puback
        self._clock = clock
        self._debounce = Debounce(settings.rules.confirm_fixes, settings.rules.confirm_s)
        self._gap_timeout = timedelta(seconds=settings.gap_timeout_s)
        self._queue: asyncio.Queue[Message | RulesChanged] = asyncio.Queue()
        self._devices: dict[str, DeviceInfo] = {}
        self._owntracks: dict[str, str] = {}
        self._watermarks: dict[str, Watermark] = {}
        # Devices whose watermark waits on a hole: the tick looks at these, not at all.
        self._holes: set[str] = set()
        self._books: dict[str, RuleBook] = {}
        self._states: dict[str, SubjectState] = {}
        self._episode_alerts: dict[str, str] = {}
        self._online: dict[str, bool] = {}
        self._broker_lock = asyncio.Lock()
        self._updated_at: dict[str, float] = {}
        # Plausibility (spoofing) per device, and what liveness needs to know of each.
        self._checks: dict[str, DeviceCheck] = {}
        self._heard: dict[str, _Heard] = {}
        self._liveness: dict[str, LivenessState] = {}
        # Devices liveness need not judge again before this time, unless heard of.
        self._quiet_until: dict[str, datetime] = {}
        self._started_at = clock()
        # Proximity (mobile exclusion zones): per subject state, each device's latest
        # fix, and which subjects must keep away from which device.
        self._prox: dict[str, ProximityState] = {}
        self._last_fix: dict[str, Fix] = {}
        self._watchers: dict[str, list[str]] | None = None  # loaded whole, on first need
        self._shared: SharedZones | None = None
        self._inside: dict[str, dict[str, bool]] = {}  # zones each subject is surely in
        self._ticks = 0
        self._met_new = False
        # Cluster mode: which partitions this process holds (None: all of them).
        self.cluster: Claims | None = None
        self._partitions: dict[str, int] = {}  # device id -> partition, memoised
        # Devices whose open conditions liveness has read from the store since it last
        # took them (after a start or a takeover): the rest are read before judging.
        self._liveness_known: set[str] = set()
        self.processed_batches = 0
        self.stored_fixes = 0
        # Counters for /metrics: messages handled, records stored, things refused.
        self.counters: dict[str, int] = defaultdict(int)

    # feeding the loop (thread-safe entry from the MQTT thread via the event loop)

    def submit(self, item: Message | RulesChanged) -> None:
        self._queue.put_nowait(item)

    async def load(self) -> None:
        async with self._pool.connection() as conn:
            for row in await device_store.all_devices(conn):
                self._remember(DeviceInfo.from_row(row))

    def _remember(self, device: DeviceInfo) -> None:
        self._devices[device.device_id] = device
        self._partitions.pop(device.device_id, None)
        self._quiet_until.pop(device.device_id, None)
        if device.owntracks_topic:
            self._owntracks[device.owntracks_topic] = device.device_id

    async def device_enrolled(self, row: dict[str, Any]) -> None:
        self._remember(DeviceInfo.from_row(row))
        await self.sync_broker_files()

    async def device_changed(self, device_id: str) -> None:
        async with self._pool.connection() as conn:
            row = await device_store.get(conn, device_id)
        if row is not None:
            self._remember(DeviceInfo.from_row(row))
            await self.sync_broker_files()

    async def sync_broker_files(self) -> None:
        """When the service runs the broker, write its password and ACL files from the
        enrolled devices and make it reload them (SIGHUP): no broker restart."""
        files = self._settings.broker
        if not files.password_file:
            return
        async with self._broker_lock:
            async with self._pool.connection() as conn:
                rows = await device_store.broker_credentials(conn)
            endpoint = self._settings.mqtt
            passwords = [f"{r['device_id']}:{r['mqtt_password_hash']}" for r in rows]
            if endpoint.username and endpoint.password:
                passwords.insert(0, f"{endpoint.username}:{password_hash(endpoint.password)}")
            write_atomically(Path(files.password_file), "\n".join(passwords) + "\n")
            if files.acl_file:
                acl = acl_lines(
                    endpoint.username, [(r["device_id"], r["owntracks_topic"]) for r in rows]
                )
                write_atomically(Path(files.acl_file), "\n".join(acl) + "\n")
            if files.pid_file:
                failure = reload_broker(Path(files.pid_file))
                if failure is not None:
                    log.warning("could not make the broker reload its files: %s", failure)
            log.info("broker files written for %d device(s)", len(rows))

    # the loop

    async def run(self) -> None:
        heap = Heap(
            time.monotonic(), young=self._settings.gc_young_threshold, counters=self.counters
        )
        try:
            await self._loop(heap)
        finally:
            heap.close()

    async def _loop(self, heap: Heap) -> None:
        max_n = self._settings.batch_max_messages
        max_wait = self._settings.batch_max_ms / 1000
        while True:
            first = await self._queue.get()
            items = [first]
            deadline = asyncio.get_running_loop().time() + max_wait
            while len(items) < max_n:
                # What is queued already is taken at once; waiting (a timer per call) only
                # when the queue is empty, so a backlog costs no more than a trickle.
                try:
                    items.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            # In arrival order: a rule change is applied between the messages that came
            # before it and those that came after.
            run: list[Message] = []
            for item in [*items, None]:
                if isinstance(item, Message):
                    run.append(item)
                    continue
                if run:
                    started = time.perf_counter()
                    await self._retrying(lambda m=run: self._process(m))  # type: ignore[misc]
                    # How much of the time the loop is taken by batches (its occupancy,
                    # with what the event loop runs meanwhile): near 100 %, every burst
                    # of work becomes a queue, and latency a multiple of the batch time.
                    self.counters["batch_busy_us"] += round((time.perf_counter() - started) * 1e6)
                    run = []
                    heap.settle(time.monotonic(), grown=self._met_new)
                    self._met_new = False
                if item is not None:
                    await self._retrying(lambda c=item: self._rules_changed(c))  # type: ignore[misc]

    async def _retrying(self, work: Callable[[], Any]) -> None:
        delay = 0.2
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except claims.Fenced as exc:
                # Another process holds these partitions now: nothing was committed;
                # the batch is tried again without their messages.
                log.warning("%s; their messages are left to the new owner", exc)
                if self.cluster is not None:
                    self.cluster.fenced(exc.partitions)
                continue
            except Exception:
                # The database is down or a statement failed: nothing was committed and
                # nothing acknowledged. Keep the batch and try again; devices and the
                # broker hold everything meanwhile.
                log.exception("batch failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def tick(self) -> None:
        """Periodic work: report unanswered locates; close sequence holes open too long."""
        now = self._clock()
        await self._expire_locates(now)
        await self.escalate()
        self._ticks += 1
        if self._ticks % self._settings.liveness_every_ticks == 0:
            await self.liveness()
        due = [
            d
            for d in self._holes
            if (since := self._watermarks[d].hole_since) is not None
            and now - since >= self._gap_timeout
        ]
        if not due:
            return
        tentative = {d: self._watermarks[d].copy() for d in due}
        gaps = {d: wm.expire(now, self._gap_timeout) for d, wm in tentative.items()}
        async with self._pool.connection() as conn, conn.transaction():
            await self._record_gaps(conn, gaps, now)
            await positions.save_acks(conn, {d: wm.upto for d, wm in tentative.items()})
        self._keep_watermarks(tentative)
        for d, wm in tentative.items():
            self._publish(ack_topic(d), json.dumps({"upto": wm.upto}).encode(), True)

    async def _expire_locates(self, now: datetime) -> None:
        timeout = timedelta(seconds=self._settings.locate_timeout_s)
        async with self._pool.connection() as conn, conn.transaction():
            for row in await command_store.expire_locates(conn, timeout):
                device = self._devices.get(row["device_id"])
                log.warning("locate %s to %s unanswered", row["id"], row["device_id"])
                await self._insert_alert(
                    conn,
                    alert_store.NewAlert(
                        subject_id=device.subject_at(now) if device else None,
                        device_id=row["device_id"],
                        kind=AlertKind.COMMS_LOSS.value,
                        severity=Severity.SERIOUS.value,
                        rule_key="locate_unanswered",
                        zone_id=None,
                        fix_time=None,
                        received_at=now,
                        lat=None,
                        lon=None,
                        detail={
                            "reason": "locate unanswered",
                            "command_id": row["id"],
                            "requested_at": iso(row["requested_at"]),
                            "timeout_s": self._settings.locate_timeout_s,
                        },
                    ),
                )

    # one batch

    async def _watermark(self, conn: Conn, device_id: str) -> Watermark:
        wm = self._watermarks.get(device_id)
        if wm is None:
            upto = (await positions.load_acks(conn, [device_id])).get(device_id, 0)
            above = await positions.accounted_seqs(conn, device_id, upto)
            wm = Watermark(upto)
            wm.account(above, self._clock())
            self._keep_watermarks({device_id: wm})
        return wm

    def _keep_watermarks(self, found: dict[str, Watermark]) -> None:
        self._watermarks.update(found)
        for device_id, wm in found.items():
            if wm.hole_since is None:
                self._holes.discard(device_id)
            else:
                self._holes.add(device_id)

    def _reject(self, batch: _Batch, msg: Message, reason: str, device_id: str | None) -> None:
        log.warning("refused a message on %s: %s", msg.topic, reason)
        self.counters["messages_refused"] += 1
        batch.rejections.append(
            Rejection(msg.topic, reason, msg.payload, msg.received_at, device_id=device_id)
        )

    async def _warm_watermarks(self, conn: Conn, messages: list[Message]) -> None:
        """The watermarks of this batch's devices that this process has not met yet, in
        two queries for the whole batch (after a restart every device is new at once)."""
        cold: set[str] = set()
        for msg in messages:
            parts = msg.topic.split("/")
            known = len(parts) == 5 and parts[4] == "up" and parts[3] in self._devices
            if known and parts[3] not in self._watermarks:
                cold.add(parts[3])
        if not cold:
            return
        acks = await positions.load_acks(conn, sorted(cold))
        above = await positions.accounted_seqs_many(conn, {d: acks.get(d, 0) for d in cold})
        now = self._clock()
        warmed: dict[str, Watermark] = {}
        for device_id in cold:
            warmed[device_id] = wm = Watermark(acks.get(device_id, 0))
            wm.account(above[device_id], now)
        self._keep_watermarks(warmed)

    async def _sort(self, conn: Conn, messages: list[Message]) -> _Batch:
        batch = _Batch(messages=messages)
        await self._warm_watermarks(conn, messages)
        for msg in messages:
            try:
                topic = parse_topic(msg.topic)
            except TopicError as exc:
                self._reject(batch, msg, str(exc), None)
                continue
            if topic.channel == "owntracks":
                await self._owntracks_message(batch, msg)
                continue
            assert topic.device_id is not None
            device = self._devices.get(topic.device_id)
            if device is None:
                await self.device_changed(topic.device_id)  # enrolled by another process?
                device = self._devices.get(topic.device_id)
            if device is None:
                self._reject(
                    batch, msg, f"device {topic.device_id!r} is not enrolled", topic.device_id
                )
                continue
            if topic.channel == "state":
                self._state_message(batch, device, msg)
                continue
            if device.signing_key is not None:
                fault = (
                    "more than one 'sig' user property: an upload carries exactly one"
                    if "sig" in msg.repeated_properties
                    else verify_signature(
                        device.signing_key, msg.payload, msg.user_properties.get("sig")
                    )
                )
                if fault is not None:
                    self._reject(batch, msg, fault, device.device_id)
                    batch.integrity.append((device.device_id, fault, batch.rejections[-1]))
                    continue
            try:
                upload = (
                    decode_upload(device.device_id, msg.topic, msg.payload, msg.received_at)
                    if msg.upload is None
                    else upload_from_wire(device.device_id, msg.topic, msg.received_at, msg.upload)
                )
            except UploadFault as exc:
                self._reject(batch, msg, str(exc), device.device_id)
                continue
            wm = await self._watermark(conn, device.device_id)
            for f in upload.fixes:
                # Seqs above the watermark are known exactly: skip those already stored.
                if f.seq is None or f.seq not in wm.above:
                    batch.fixes.append((f, device.subject_at(f.t)))
                    if f.seq is None or f.seq <= wm.upto:
                        batch.fresh = False
            for e in upload.events:
                if e.seq is None or e.seq not in wm.above:
                    batch.events.append((e, device.subject_at(e.t)))
            batch.rejections.extend(r for r in upload.rejections if r.seq not in wm.above)
            for r in upload.rejections:
                log.info("refused a record of %s: %s", device.device_id, r.reason)
            batch.accounted[device.device_id].update(upload.seqs)
            batch.uploaded.add(device.device_id)
        await self._drop_stored(conn, batch)
        return batch

    async def _drop_stored(self, conn: Conn, batch: _Batch) -> None:
        """Each (device_id, seq) is one record, stored once whatever its `t`: a resend of
        an acknowledged seq (a seq at or below the watermark, not known to be above it)
        is looked up in the store, and a seq given twice in this batch is taken once."""
        maybe: dict[str, list[int]] = defaultdict(list)
        records: list[DeviceEvent | Fix | Rejection] = [
            *(f for f, _ in batch.fixes),
            *(e for e, _ in batch.events),
            *batch.rejections,
        ]
        for r in records:
            if r.seq is None or r.device_id is None:
                continue
            wm = self._watermarks.get(r.device_id)
            if wm is not None and r.seq <= wm.upto:
                maybe[r.device_id].append(r.seq)
        stored = await positions.stored_seqs(conn, maybe) if maybe else set()
        seen: set[tuple[str, int]] = set()

        def first_time(device_id: str | None, seq: int | None) -> bool:
            if seq is None or device_id is None:
                return True
            key = (device_id, seq)
            if key in stored or key in seen:
                return False
            seen.add(key)
            return True

        batch.fixes = [(f, s) for f, s in batch.fixes if first_time(f.device_id, f.seq)]
        batch.events = [(e, s) for e, s in batch.events if first_time(e.device_id, e.seq)]
        batch.rejections = [r for r in batch.rejections if first_time(r.device_id, r.seq)]

    def _state_message(self, batch: _Batch, device: DeviceInfo, msg: Message) -> None:
        try:
            doc = json.loads(msg.payload)
            online = doc["online"]
            if not isinstance(online, bool):
                raise TypeError("'online' must be true or false")
        except (ValueError, KeyError, TypeError) as exc:
            self._reject(batch, msg, f"state payload: {exc!s}", device.device_id)
            return
        if self._online.get(device.device_id) == online:
            return
        self._online[device.device_id] = online
        event = DeviceEvent(
            device.device_id,
            None,
            msg.received_at,
            "online" if online else "offline",
            msg.received_at,
        )
        batch.events.append((event, device.subject_at(msg.received_at)))

    async def _owntracks_message(self, batch: _Batch, msg: Message) -> None:
        base = "/".join(msg.topic.split("/")[:3])
        device_id = self._owntracks.get(base)
        if device_id is None:
            self._reject(batch, msg, f"no device is enrolled for {base!r}", None)
            return
        device = self._devices[device_id]
        try:
            fix, event = decode_owntracks(device_id, msg.payload, msg.received_at)
        except ValueError as exc:
            self._reject(batch, msg, f"OwnTracks payload: {exc}", device_id)
            return
        if fix is not None:
            batch.fresh = False  # no seq: a redelivery is only recognised by the index
            batch.fixes.append((fix, device.subject_at(fix.t)))
        if event is not None:
            batch.events.append((event, device.subject_at(event.t)))

    def _held(self, messages: list[Message]) -> tuple[list[Message], dict[int, int]]:
        """The messages of partitions this process holds, and the epochs its commit
        must still find; the others are given back to their new owner."""
        cluster = self.cluster
        if cluster is None:
            return messages, {}
        held = cluster.epochs()
        mine = [m for m in messages if m.partition is None or m.partition in held]
        if len(mine) < len(messages):
            cluster.give_back(
                [m for m in messages if m.partition is not None and m.partition not in held]
            )
        epochs = {m.partition: held[m.partition] for m in mine if m.partition is not None}
        return mine, epochs

    def partition(self, device_id: str) -> int:
        """The partition of an enrolled device (see ingest.partition)."""
        found = self._partitions.get(device_id)
        if found is None:
            device = self._devices.get(device_id)
            key = device.partition_key if device is not None else device_id
            n = self.cluster.partitions if self.cluster is not None else 1
            found = self._partitions[device_id] = partition_of(key, n)
        return found

    def owns(self, device_id: str) -> bool:
        cluster = self.cluster
        return cluster is None or self.partition(device_id) in cluster.epochs()

    def forget(self, partitions: set[int]) -> None:
        """Drop what this process keeps of the devices of these partitions, and of their
        subjects: another process may change it meanwhile, so it is read again from the
        store when the partitions come back (a claim) and not trusted after a loss."""
        if not partitions:
            return
        devices = {d for d in self._devices if self.partition(d) in partitions}
        subjects = {
            info.subject_id for d in devices if (info := self._devices[d]).subject_id is not None
        }
        for table in (
            self._watermarks,
            self._checks,
            self._heard,
            self._liveness,
            self._quiet_until,
            self._last_fix,
            self._online,
        ):
            for d in devices & table.keys():
                del table[d]
        self._holes -= devices
        self._liveness_known -= devices
        for table2 in (self._states, self._prox, self._inside):
            for sid in subjects & table2.keys():
                del table2[sid]
        for key in [
            k for k in self._episode_alerts if k.split("|")[1:2] and k.split("|")[1] in devices
        ]:
            del self._episode_alerts[key]
        log.info(
            "forgot the state of %d device(s) and %d subject(s) of partition(s) %s",
            len(devices),
            len(subjects),
            sorted(partitions),
        )

    async def _process(self, messages: list[Message]) -> None:
        messages, epochs = self._held(messages)
        if not messages:
            return
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            # First: this process still holds the partitions (and a new owner's claim
            # waits for this transaction), or nothing is written.
            await claims.fence(conn, epochs)
            batch = await self._sort(conn, messages)
            new_fixes = await positions.insert_fixes(conn, batch.fixes, fresh=batch.fresh)
            new_events = await positions.insert_events(conn, batch.events)
            await positions.insert_rejections(conn, batch.rejections)

            tentative: dict[str, Watermark] = {}
            gaps: dict[str, list[Gap]] = {}
            for device_id, seqs in batch.accounted.items():
                wm = self._watermarks[device_id].copy()
                wm.account(seqs, now)
                gaps[device_id] = wm.expire(now, self._gap_timeout)
                tentative[device_id] = wm
            await positions.save_acks(conn, {d: w.upto for d, w in tentative.items()})
            await self._record_gaps(conn, gaps, now)

            fixes_by_subject: dict[str, list[Fix]] = defaultdict(list)
            judged: set[tuple[str, int | None, datetime]] = set()
            for f, subject in batch.fixes:
                key = (f.device_id, f.seq, f.t)
                if subject is not None and key in new_fixes and key not in judged:
                    judged.add(key)  # the same record twice in one batch is judged once
                    fixes_by_subject[subject].append(f)
            states: dict[str, SubjectState] = {}
            inside: dict[str, dict[str, bool]] = {}
            changes: list[AlertChange] = []
            moves: list[tuple[str, Transition]] = []
            warm = await self._warm_subjects(conn, fixes_by_subject)
            # The batch's geometry in a few array calls for all its subjects, rather than
            # a few per subject (late fixes, judged with stored ones, measure their own).
            margins = Margins.measure(
                Measured(
                    self._books[s],
                    fixes,
                    (warm[s] if s in warm else self._states[s]).last_fixes,
                )
                for s, fixes in fixes_by_subject.items()
                if s in self._books
            )
            for subject, fixes in fixes_by_subject.items():
                book = self._books.get(subject)
                if book is None:
                    continue  # no such subject any more
                state = warm[subject] if subject in warm else self._states[subject]
                late = [f for f in fixes if state.last_t is not None and f.t < state.last_t]
                if late:
                    # A late upload is judged with the stored fixes around it, so a backlog
                    # arriving in small uploads still confirms its violation.
                    stored, from_start = await self._window(conn, subject, late)
                    windowed, found = rejudge_window(
                        book, stored, late, self._debounce, state, from_start=from_start
                    )
                    state = windowed or state
                    changes += found
                live = [f for f in fixes if state.last_t is None or f.t >= state.last_t]
                states[subject], found = evaluate(book, state, live, self._debounce, margins)
                changes += found
                inside[subject], moved = transitions(
                    book, self._inside.get(subject, {}), live, margins
                )
                moves += [(subject, tr) for tr in moved]
            await positions.insert_transitions(conn, moves)
            proximity = await self._proximity(conn, fixes_by_subject, batch, new_fixes, changes)
            spoofing = await self._plausibility(
                conn, [f for fs in fixes_by_subject.values() for f in fs]
            )
            episode_alerts = await self._apply_changes(conn, changes)
            await self._event_alerts(conn, batch, new_events)
            for device_id, fault, rejection in batch.integrity:
                await self._integrity_alert(conn, device_id, fault, rejection)
            # committed
        self._keep_watermarks(tentative)
        self._states.update(states)
        self._episode_alerts.update(episode_alerts)
        self._checks.update(spoofing)
        self._prox.update(proximity)
        self._inside.update(inside)
        # The subjects just met stay for the life of the process: the loop freezes
        # their state out of the collector's scans after this batch (monitor.heap).
        self._met_new = self._met_new or bool(warm)
        for f, _ in batch.fixes:
            latest = self._last_fix.get(f.device_id)
            if (f.device_id, f.seq, f.t) in new_fixes and (latest is None or f.t >= latest.t):
                self._last_fix[f.device_id] = f
        self._observe(batch, new_fixes, new_events)
        self.processed_batches += 1
        self.stored_fixes += len(new_fixes)
        self.counters["messages_handled"] += len(messages)
        self.counters["fixes_stored"] += len(new_fixes)
        self.counters["events_stored"] += len(new_events)
        self.counters["records_refused"] += sum(1 for r in batch.rejections if r.seq is not None)
        self.counters["batches"] += 1
        for device_id in batch.uploaded | set(tentative):
            upto = self._watermarks[device_id].upto
            self._publish(ack_topic(device_id), json.dumps({"upto": upto}).encode(), True)
        self._puback(messages)

    # rule state

    async def _book(self, conn: Conn, subject_id: str) -> RuleBook | None:
        book = self._books.get(subject_id)
        if book is None:
            if self._shared is None:
                self._shared = await zone_store.load_shared(conn)
            # Every book holds the same shared set, so its index is built once.
            book = await zone_store.load_rulebook(conn, subject_id, self._shared)
            if book is not None:
                self._books[subject_id] = book
        return book

    async def _warm_subjects(
        self, conn: Conn, fixes_by_subject: dict[str, list[Fix]]
    ) -> dict[str, SubjectState]:
        """The rule books of this batch's subjects that this process has not met yet, and
        their rule state, each in one query for the whole batch: after a restart with
        100,000 subjects, a few round trips per subject would leave the service minutes
        behind. The state is rebuilt from the subject's last stored fixes before the
        batch, so a restart neither forgets a violation nor raises it twice."""
        cold_books = [s for s in fixes_by_subject if s not in self._books]
        if cold_books:
            if self._shared is None:
                self._shared = await zone_store.load_shared(conn)
            self._books.update(await zone_store.load_rulebooks(conn, cold_books, self._shared))
        cold = {
            s: min(f.t for f in fixes)
            for s, fixes in fixes_by_subject.items()
            if s in self._books and s not in self._states
        }
        rows = await positions.recent_fixes_many(conn, cold, _WARM_FIXES)
        return {
            s: evaluate(
                self._books[s], SubjectState(), [_fix_from_row(r) for r in found], self._debounce
            )[0]
            for s, found in rows.items()
        }

    async def _find_alert(self, conn: Conn, subject_id: str, episode: Episode) -> str | None:
        for key in (episode.key, episode.supersedes):
            known = self._episode_alerts.get(key) if key else None
            if known is not None:
                return known
        # By the episode's key, or the key it superseded (late fixes moved its start),
        # or else the subject's open alert for the rule (a window that began inside it).
        old = episode.supersedes or episode.key
        cur = await conn.execute(
            "SELECT id FROM alerts WHERE subject_id = %s AND rule_key = %s"
            " AND (detail->>'episode' IN (%s, %s)"
            "      OR (cleared_at IS NULL AND state <> 'resolved'))"
            " ORDER BY (detail->>'episode' IN (%s, %s)) DESC, alert_no DESC LIMIT 1",
            (subject_id, episode.rule.key, episode.key, old, episode.key, old),
        )
        row = await cur.fetchone()
        return str(row["id"]) if row else None

    async def _window(self, conn: Conn, subject_id: str, late: list[Fix]) -> tuple[list[Fix], bool]:
        """The stored fixes around late ones, as rejudge_window asks: from 2·confirm_fixes
        fixes (or confirm_s) before the earliest to the subject's latest."""
        earliest = min(f.t for f in late)
        before = await positions.recent_fixes(
            conn, subject_id, earliest, 2 * self._debounce.confirm_fixes
        )
        lower = earliest - timedelta(seconds=self._debounce.confirm_s)
        if before:
            lower = min(lower, before[0]["t"])
        cur = await conn.execute(
            "SELECT device_id, seq, t, received_at, subject_id, lat, lon, acc, src, spd, batt"
            " FROM fixes WHERE subject_id = %s AND t >= %s ORDER BY t LIMIT %s",
            (subject_id, lower, _REJUDGE_LIMIT),
        )
        stored = [_fix_from_row(r) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM fixes WHERE subject_id = %s AND t < %s) AS first",
            (subject_id, lower),
        )
        row = await cur.fetchone()
        return stored, bool(row and row["first"])

    async def _episode_alert(self, conn: Conn, c: AlertChange) -> str | None:
        known = self._episode_alerts.get(c.episode.key)
        if known is not None:
            return known
        cur = await conn.execute(
            "SELECT id FROM alerts WHERE subject_id = %s AND rule_key = %s"
            " AND detail->>'episode' = %s LIMIT 1",
            (c.subject_id, c.episode.rule.key, c.episode.key),
        )
        row = await cur.fetchone()
        return str(row["id"]) if row else None

    async def _absent_episodes(self, conn: Conn, opening: list[AlertChange]) -> set[str]:
        """Of the episodes about to open, those surely without an alert (one may exist
        after a restart or a rule change judged fixes again), in one query for the batch
        rather than one per episode. Those found join `_episode_alerts`."""
        unknown = [c for c in opening if c.episode.key not in self._episode_alerts]
        if not unknown:
            return set()
        cur = await conn.execute(
            "SELECT DISTINCT ON (a.detail->>'episode') a.detail->>'episode' AS episode, a.id"
            " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS o(subject_id, rule_key, ep)"
            " JOIN alerts a ON a.subject_id = o.subject_id AND a.rule_key = o.rule_key"
            "  AND a.detail->>'episode' = o.ep"
            " ORDER BY a.detail->>'episode', a.alert_no",
            (
                [c.subject_id for c in unknown],
                [c.episode.rule.key for c in unknown],
                [c.episode.key for c in unknown],
            ),
        )
        found = {row["episode"]: str(row["id"]) for row in await cur.fetchall()}
        self._episode_alerts.update(found)
        return {c.episode.key for c in unknown} - set(found)

    async def _apply_changes(self, conn: Conn, changes: list[AlertChange]) -> dict[str, str]:
        opened: dict[str, str] = {}
        to_open: list[tuple[str, alert_store.NewAlert]] = []
        to_amend: list[alert_store.Amendment] = []
        now_mono = time.monotonic()
        # Coalesce: of several updates to one episode in a batch, the last one says it all.
        last_update: dict[str, int] = {}
        for i, c in enumerate(changes):
            if c.change is Change.UPDATE:
                last_update[c.episode.key] = i
        # An episode opened in this batch is opened with its latest detail: one event on
        # the operators' screens, not an alert and at once its update.
        opening = {c.episode.key for c in changes if c.change is Change.OPEN}
        absent = await self._absent_episodes(conn, [c for c in changes if c.change is Change.OPEN])
        for i, found in enumerate(changes):
            ep = found.episode
            if found.change is Change.UPDATE and (
                last_update.get(ep.key) != i or ep.key in opening
            ):
                continue
            detail = _episode_detail(found)
            if found.change is Change.OPEN and last_update.get(ep.key, -1) > i:
                detail = _episode_detail(changes[last_update[ep.key]])
            c = found
            if c.change is Change.OPEN and (
                ep.key in opened
                or (ep.key not in absent and await self._episode_alert(conn, c) is not None)
            ):
                # Already alerted (a rule change judged fixes again, or a restart replayed
                # them, or opened earlier in this batch): one episode is one alert, so
                # this is an update.
                c = replace(c, change=Change.UPDATE)
            if c.change is Change.OPEN:
                # The id is drawn here, so that later changes in this batch can name it;
                # the alerts are written together once the batch is judged.
                new_id = str(uuid.uuid4())
                to_open.append(
                    (
                        new_id,
                        alert_store.NewAlert(
                            subject_id=c.subject_id,
                            device_id=ep.first.device_id,
                            kind=ep.rule.kind.value,
                            severity=ep.rule.severity.value,
                            rule_key=ep.rule.key,
                            zone_id=ep.rule.zone_id,
                            fix_time=ep.first.t,
                            received_at=ep.first.received_at,
                            lat=ep.first.lat,
                            lon=ep.first.lon,
                            detail=detail,
                        ),
                    )
                )
                opened[ep.key] = new_id
                continue
            alert_id = opened.get(ep.key) or await self._find_alert(conn, c.subject_id, ep)
            if alert_id is None:
                log.warning("no alert found for episode %s (%s)", ep.key, c.change)
                continue
            if c.change is Change.UPDATE:
                # Every violating fix need not reach every screen: the count and latest
                # fix are written at most once per UPDATE_EVERY_S per alert (and always
                # when the episode clears), so a violating fleet does not flood the
                # operators with changes to alerts already on their screens.
                last = self._updated_at.get(alert_id)
                if last is not None and now_mono - last < UPDATE_EVERY_S:
                    continue
                self._updated_at[alert_id] = now_mono
                to_amend.append(alert_store.Amendment(alert_id, "updated", detail))
            else:
                to_amend.append(
                    alert_store.Amendment(
                        alert_id,
                        "cleared",
                        {**detail, "cleared_at": iso(c.fix.t), "clear_reason": c.reason},
                        cleared_at=c.fix.t,
                    )
                )
        # A batch's alerts in a few statements, not a few per alert: opened first (an
        # alert opened and cleared in one batch is changed after it exists). An alert an
        # officer resolved is left as resolved.
        await self._insert_alerts(conn, to_open)
        await alert_store.amend_many(conn, to_amend)
        return opened

    async def _event_alerts(
        self, conn: Conn, batch: _Batch, new_events: set[tuple[str, int | None, datetime]]
    ) -> None:
        for event, subject in batch.events:
            if (event.device_id, event.seq, event.t) not in new_events:
                continue
            if event.kind == "cmd_result" and event.detail is not None:
                await self._command_answered(conn, event)
            if subject is None:
                continue
            if event.kind == "phone_status" and event.detail is not None:
                await self._phone_status(conn, subject, event)
                continue
            outcome = judge_event(event)
            if outcome is None:
                continue
            await self._condition(
                conn,
                subject,
                event.device_id,
                outcome.kind,
                clears=outcome.clears,
                at=event.t,
                received_at=event.received_at,
                info={
                    "event": event.kind,
                    "event_seq": event.seq,
                    "event_t": iso(event.t),
                    "reason": outcome.reason,
                    "late": event.received_at - event.t > timedelta(minutes=5),
                },
            )

    async def _phone_status(self, conn: Conn, subject: str, event: DeviceEvent) -> None:
        """A phone whose settings put reporting at risk raises a warning; a later status
        without such settings clears it."""
        assert event.detail is not None
        warnings = list(event.detail.get("warnings") or [])
        await self._condition(
            conn,
            subject,
            event.device_id,
            AlertKind.PHONE_STATUS,
            clears=not warnings,
            at=event.t,
            received_at=event.received_at,
            positioned=False,
            info={"warnings": warnings} if warnings else {"reason": "phone settings restored"},
        )

    async def _command_answered(self, conn: Conn, event: DeviceEvent) -> None:
        assert event.detail is not None
        row = await command_store.answer(
            conn,
            event.device_id,
            str(event.detail["id"]),
            bool(event.detail.get("ok")),
            event.t,
            event.detail,
        )
        if row is None:
            log.info(
                "cmd_result for an unknown command %r of %s", event.detail["id"], event.device_id
            )
            return
        if row["cmd"] == "set_interval" and row["state"] == "ok" and row["args"]:
            await conn.execute(
                "UPDATE devices SET fix_interval_s = coalesce(%s, fix_interval_s),"
                " upload_interval_s = coalesce(%s, upload_interval_s) WHERE device_id = %s",
                (row["args"].get("fix_s"), row["args"].get("upload_s"), event.device_id),
            )
            known = self._devices.get(event.device_id)
            if known is not None:
                self._devices[event.device_id] = replace(
                    known,
                    fix_interval_s=float(row["args"].get("fix_s") or known.fix_interval_s),
                    upload_interval_s=float(row["args"].get("upload_s") or known.upload_interval_s),
                )

    def publish_command(self, device_id: str, payload: dict[str, Any]) -> None:
        self._publish(cmd_topic(device_id), json.dumps(payload).encode(), False)

    async def _condition(
        self,
        conn: Conn,
        subject: str | None,
        device_id: str,
        kind: AlertKind,
        *,
        clears: bool,
        at: datetime,
        info: dict[str, Any],
        severity: Severity | None = None,
        received_at: datetime | None = None,
        positioned: bool = True,
    ) -> None:
        """A device condition (tamper, battery, spoofing, comms loss, phone settings,
        ...): opens the device's alert of that kind or adds to the open one (`detail.last`
        and, for the opening, the whole `info`); a clear marks it cleared. `at` is the
        alert's fix time unless the condition has no position (`positioned` false)."""
        await self._conditions(
            conn,
            [
                _Condition(
                    subject, device_id, kind, clears, at, info, severity, received_at, positioned
                )
            ],
        )

    async def _conditions(self, conn: Conn, items: list[_Condition]) -> None:
        """`_condition` for many devices in a few statements, in order: a silent fleet
        (a broker outage) opens one comms_loss alert per device at once, and 100,000 of
        them one by one held the event lock, and every operator's next event, for
        minutes."""
        if not items:
            return
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
                [c.kind.value for c in items],
                [c.device_id for c in items],
                [c.subject for c in items],
            ),
        )
        stored = {int(row["i"]): str(row["id"]) for row in await cur.fetchall()}
        # The open alert of each (kind, device, subject) as this batch goes: one opened
        # or cleared earlier in the batch counts, as it would one item at a time.
        current: dict[tuple[str, str, str | None], str | None] = {}
        to_open: list[tuple[str, alert_store.NewAlert]] = []
        to_amend: list[alert_store.Amendment] = []
        for i, c in enumerate(items):
            key = (c.kind.value, c.device_id, c.subject)
            alert_id = current[key] if key in current else stored.get(i)
            if c.clears:
                if alert_id is not None:
                    to_amend.append(
                        alert_store.Amendment(
                            alert_id,
                            "cleared",
                            {"cleared_at": iso(c.at), "clear_reason": c.info.get("reason")},
                            cleared_at=c.at,
                        )
                    )
                current[key] = None
                continue
            if alert_id is not None:
                to_amend.append(alert_store.Amendment(alert_id, "updated", {"last": c.info}))
                continue
            new_id = str(uuid.uuid4())
            current[key] = new_id
            to_open.append(
                (
                    new_id,
                    alert_store.NewAlert(
                        subject_id=c.subject,
                        device_id=c.device_id,
                        kind=c.kind.value,
                        severity=(c.severity or DEFAULT_SEVERITY[c.kind]).value,
                        rule_key=c.kind.value,
                        zone_id=None,
                        fix_time=c.at if c.positioned else None,
                        received_at=c.received_at or self._clock(),
                        lat=c.info.get("lat"),
                        lon=c.info.get("lon"),
                        detail=c.info,
                    ),
                )
            )
        await self._insert_alerts(conn, to_open)
        await alert_store.amend_many(conn, to_amend)

    async def _latest_fix(
        self, conn: Conn, *, device_id: str | None = None, subject_id: str | None = None
    ) -> Fix | None:
        if device_id is not None and device_id in self._last_fix:
            return self._last_fix[device_id]
        column, value = ("device_id", device_id) if device_id else ("subject_id", subject_id)
        cur = await conn.execute(
            "SELECT device_id, seq, t, received_at, subject_id, lat, lon, acc, src, spd, batt"
            f" FROM fixes WHERE {column} = %s ORDER BY t DESC LIMIT 1",
            (value,),
        )
        row = await cur.fetchone()
        return _fix_from_row(row) if row else None

    async def _proximity(
        self,
        conn: Conn,
        fixes_by_subject: dict[str, list[Fix]],
        batch: _Batch,
        new_fixes: set[tuple[str, int | None, datetime]],
        changes: list[AlertChange],
    ) -> dict[str, ProximityState]:
        """Mobile exclusion zones, judged whenever either side reports: the subject's new
        fix against the protected device's latest, or the protected device's new fix
        against the subject's latest."""
        updated: dict[str, ProximityState] = {}
        # The subjects' own new fixes.
        pending: dict[str, tuple[Fix | None, dict[str, Fix]]] = {}
        for subject, fixes in fixes_by_subject.items():
            book = self._books.get(subject)
            if book is None or not book.proximity:
                continue
            others: dict[str, Fix] = {}
            for entry in book.proximity:
                other = await self._latest_fix(conn, device_id=entry.other_device_id)
                if other is not None:
                    others[entry.other_device_id] = other
            pending[subject] = (max(fixes, key=lambda f: f.t), others)
        # The protected devices' new fixes.
        for f, _ in batch.fixes:
            if (f.device_id, f.seq, f.t) not in new_fixes:
                continue
            if self._watchers is None:
                self._watchers = await zone_store.all_watchers(conn)
            watching = self._watchers.get(f.device_id, [])
            for subject in watching:
                book = await self._book(conn, subject)
                if book is None:
                    continue
                own, others = pending.get(subject, (None, {}))
                if own is None:
                    own = await self._latest_fix(conn, subject_id=subject)
                if f.device_id not in others or others[f.device_id].t <= f.t:
                    others = {**others, f.device_id: f}
                pending[subject] = (own, others)
        resumed = await self._resume_proximity(
            conn, [s for s in pending if s not in self._prox and s not in updated]
        )
        for subject, (own, others) in pending.items():
            book = self._books[subject]
            state = (
                updated.get(subject)
                or self._prox.get(subject)
                or resumed.get(subject, ProximityState())
            )
            updated[subject], found = evaluate_proximity(book, state, own, others, self._debounce)
            changes += found
        return updated

    async def _resume_proximity(self, conn: Conn, subjects: list[str]) -> dict[str, ProximityState]:
        """The open proximity episodes of subjects this process meets for the first
        time since a start or a takeover, rebuilt from their open alerts (one query)."""
        if not subjects:
            return {}
        found: dict[str, list[tuple[str, Fix, int]]] = defaultdict(list)
        for row in await alert_store.open_proximity(conn, subjects):
            at = row["fix_time"] or row["received_at"]
            first = Fix(
                device_id=row["device_id"],
                seq=None,
                t=at,
                lat=float(row["lat"]) if row["lat"] is not None else 0.0,
                lon=float(row["lon"]) if row["lon"] is not None else 0.0,
                acc=0.0,
                src="gnss",
                received_at=row["received_at"],
            )
            count = int((row["detail"] or {}).get("count") or 1)
            found[str(row["subject_id"])].append((row["rule_key"], first, count))
        return {s: resume_proximity(self._books[s], eps) for s, eps in found.items()}

    async def _plausibility(self, conn: Conn, fixes: list[Fix]) -> dict[str, DeviceCheck]:
        """Impossible speeds and fix times ahead of receipt: flagged (spoofing
        suspected), never dropped."""
        if not fixes:
            return {}
        devices = {f.device_id for f in fixes}
        cold = sorted(d for d in devices if d not in self._checks)
        flagged = (
            await alert_store.open_conditions(conn, cold, [AlertKind.SPOOFING.value])
            if cold
            else set()
        )
        # A device met for the first time since a start or a takeover may have its
        # spoofing alert open: it is then still flagged, and gets its clear.
        checks = {
            d: self._checks.get(d) or DeviceCheck(flagged=(d, AlertKind.SPOOFING.value) in flagged)
            for d in devices
        }
        updated, outcomes = judge_plausibility(checks, fixes)
        for outcome in outcomes:
            device = self._devices.get(outcome.device_id)
            subject = device.subject_at(outcome.fix.t) if device else None
            info: dict[str, Any] = {
                "reason": outcome.reason,
                "fix_t": iso(outcome.fix.t),
                "seq": outcome.fix.seq,
                "lat": outcome.fix.lat,
                "lon": outcome.fix.lon,
            }
            flag = outcome.flag
            if flag is not None:
                info["problem"] = flag.problem.value
                if flag.speed_m_s is not None:
                    info["speed_m_s"] = round(flag.speed_m_s, 1)
                if flag.ahead_s is not None:
                    info["ahead_s"] = round(flag.ahead_s, 1)
            await self._condition(
                conn,
                subject,
                outcome.device_id,
                AlertKind.SPOOFING,
                clears=outcome.clears,
                at=outcome.fix.t,
                info=info,
            )
        return dict(updated)

    def _observe(
        self,
        batch: _Batch,
        new_fixes: set[tuple[str, int | None, datetime]],
        new_events: set[tuple[str, int | None, datetime]],
    ) -> None:
        """What liveness needs: when each device was last heard, located, charged.

        A device judged quiet until some time stays so when an upload or a fix comes:
        they only move the moment comms or location could be lost later, so that time
        is still a safe bound and liveness need not judge the device before it (at
        10,000 fixes/s, judging every device heard since the last pass took 4 % of the
        service's time). What could open something sooner makes it judged again: a
        battery at the critical level, and any device event (no fix, charger)."""
        critical = _LIVENESS_BATTERY_CRITICAL
        for msg in batch.messages:
            parts = msg.topic.split("/")
            if len(parts) == 5 and parts[4] == "up" and parts[3] in self._devices:
                heard = self._heard.setdefault(parts[3], _Heard())
                heard.upload_at = max(heard.upload_at or msg.received_at, msg.received_at)
        for f, _ in batch.fixes:
            if (f.device_id, f.seq, f.t) not in new_fixes:
                continue
            heard = self._heard.setdefault(f.device_id, _Heard())
            if f.batt is not None and f.batt <= critical:
                self._quiet_until.pop(f.device_id, None)
            if heard.fix_t is None or f.t >= heard.fix_t:
                heard.fix_t = f.t
                if f.batt is not None:
                    heard.battery = f.batt
            if f.seq is None:  # OwnTracks: the location is the upload
                heard.upload_at = max(heard.upload_at or f.received_at, f.received_at)
        for e, _ in batch.events:
            if (e.device_id, e.seq, e.t) not in new_events:
                continue
            heard = self._heard.setdefault(e.device_id, _Heard())
            self._quiet_until.pop(e.device_id, None)
            if e.kind == "no_fix":
                heard.no_fix_at = max(heard.no_fix_at or e.t, e.t)
            elif e.kind in ("charger_on", "charger_off"):
                heard.charging = e.kind == "charger_on"

    async def liveness(self) -> None:
        """Silence is never compliance: devices not heard for their interval, without
        fixes, or with a flat battery raise alerts, each with its clear."""
        now = self._clock()
        policy = LivenessPolicy(
            comms_buffer_s=self._settings.comms_buffer_s,
            location_loss_s=self._settings.location_loss_s,
        )
        devices = [
            d
            for d in self._devices.values()
            if d.subject_id is not None and d.assigned_at is not None and self.owns(d.device_id)
        ]
        await self._recall_liveness([d.device_id for d in devices])
        states: dict[str, LivenessState] = {}
        changes: list[LivenessChange] = []
        for i in range(0, len(devices), _LIVENESS_SLICE):
            # A device judged quiet (nothing open, nothing to open before a known time)
            # and not heard of since is skipped until that time: most of a fleet, most
            # of the time, and the judgment would find nothing.
            statuses = [
                self._status(d)
                for d in devices[i : i + _LIVENESS_SLICE]
                if (until := self._quiet_until.get(d.device_id)) is None or now > until
            ]
            self.counters["liveness_devices_judged"] += len(statuses)
            found_states, found = judge_liveness(statuses, self._liveness, now, policy)
            states.update(found_states)
            changes += found
            changed = {c.device_id for c in found}
            for status in statuses:
                if status.device_id in changed or found_states[status.device_id].open:
                    continue
                quiet = quiet_until(status, policy)
                if quiet is not None:
                    self._quiet_until[status.device_id] = quiet
            # 100,000 devices take about a second to judge: in slices, so that the batch
            # loop and the websockets are never held up for more than a few milliseconds.
            await asyncio.sleep(0)
        if changes:
            conditions = [
                _Condition(
                    self._devices[change.device_id].subject_at(now),
                    change.device_id,
                    change.kind,
                    clears=change.change is Change.CLEAR,
                    at=change.since or now,
                    info={"reason": change.reason, "since": iso(change.since)},
                )
                for change in changes
            ]
            async with self._pool.connection() as conn, conn.transaction():
                # In slices, as judging is: a silent fleet's 100,000 alerts written in
                # one go held the event loop (and the API) for 6.5 s, measured.
                for i in range(0, len(conditions), _LIVENESS_SLICE):
                    await self._conditions(conn, conditions[i : i + _LIVENESS_SLICE])
                    await asyncio.sleep(0)
        # The skipped devices had nothing open: they are left out, as never judged.
        # (Devices of partitions not held are not judged here at all.)
        self._liveness = dict(states)
        self.counters["liveness_passes"] += 1

    async def _recall_liveness(self, device_ids: list[str]) -> None:
        """What liveness knew of devices this process has just taken (a start, a
        takeover): their open conditions, so each gets its clear and none a second
        alert, and when each last had a record accounted, so silence is counted from
        there rather than from the takeover. A few queries for all of them."""
        unknown = [d for d in device_ids if d not in self._liveness_known]
        if not unknown:
            return
        kinds = [k.value for k in _LIVENESS_KINDS]
        for i in range(0, len(unknown), 10_000):
            chunk = unknown[i : i + 10_000]
            async with self._pool.connection() as conn:
                open_ = await alert_store.open_conditions(conn, chunk, kinds)
                accounted = await positions.last_accounted(conn, chunk)
            opened: dict[str, set[AlertKind]] = defaultdict(set)
            for device_id, kind in open_:
                opened[device_id].add(AlertKind(kind))
            for device_id in chunk:
                if opened.get(device_id):
                    self._liveness[device_id] = LivenessState(
                        frozenset(opened[device_id])
                        | self._liveness.get(device_id, LivenessState()).open
                    )
                    self._quiet_until.pop(device_id, None)
                at = accounted.get(device_id)
                if at is not None:
                    heard = self._heard.setdefault(device_id, _Heard())
                    if heard.upload_at is None or heard.upload_at < at:
                        heard.upload_at = at
            self._liveness_known.update(chunk)

    def _monitored_from(self, device_id: str) -> datetime:
        """Silence is counted from when this process took the device at the earliest."""
        if self.cluster is not None:
            at = self.cluster.claimed_at(self.partition(device_id))
            if at is not None:
                return at
        return self._started_at

    def _status(self, device: DeviceInfo) -> DeviceStatus:
        """What liveness judges of one device."""
        assert device.assigned_at is not None
        heard = self._heard.get(device.device_id) or _NOT_HEARD
        # Phones running OwnTracks report on movement: four hours of silence (as Smart
        # Astana used) before it counts as lost.
        phone = device.kind == "owntracks"
        upload_s = 4 * 3600.0 if phone else device.upload_interval_s
        return DeviceStatus(
            device_id=device.device_id,
            monitored_since=max(device.assigned_at, self._monitored_from(device.device_id)),
            upload_interval_s=upload_s,
            fix_interval_s=max(device.fix_interval_s, upload_s / 4)
            if phone
            else device.fix_interval_s,
            last_upload_at=heard.upload_at,
            last_fix_t=heard.fix_t,
            no_fix_at=heard.no_fix_at,
            battery_pct=heard.battery,
            charging=heard.charging,
        )

    async def _insert_alert(self, conn: Conn, alert: alert_store.NewAlert) -> dict[str, Any]:
        return (await self._insert_alerts(conn, [(str(uuid.uuid4()), alert)]))[0]

    async def _insert_alerts(
        self, conn: Conn, alerts: list[tuple[str, alert_store.NewAlert]]
    ) -> list[dict[str, Any]]:
        """Open alerts: the configured severity for their kind, and marked suspended when
        a planned suspension of the subject covers their time (recorded, not pushed live).
        """
        if not alerts:
            return []
        cur = await conn.execute(
            "SELECT DISTINCT ON (o.i) o.i, s.id, s.reason"
            " FROM unnest(%s::int[], %s::uuid[], %s::timestamptz[]) AS o(i, subject_id, at)"
            " JOIN suspensions s ON s.subject_id = o.subject_id AND s.cancelled_at IS NULL"
            "  AND s.starts_at <= o.at AND s.ends_at > o.at"
            " ORDER BY o.i, s.id",
            (
                list(range(len(alerts))),
                [a.subject_id for _, a in alerts],
                [a.fix_time or a.received_at for _, a in alerts],
            ),
        )
        suspended = {
            int(row["i"]): {"id": int(row["id"]), "reason": row["reason"]}
            for row in await cur.fetchall()
        }
        return await alert_store.insert_many(
            conn,
            [
                (
                    alert_id,
                    replace(
                        alert,
                        severity=self._settings.severity.get(alert.kind, alert.severity),
                        detail={**alert.detail, "suspended": suspended[i]}
                        if i in suspended
                        else alert.detail,
                    ),
                )
                for i, (alert_id, alert) in enumerate(alerts)
            ],
        )

    async def escalate(self) -> None:
        """Critical alerts left unacknowledged are escalated (an alert event of their own,
        pushed again to every operator), once per escalation period, up to three times."""
        async with self._pool.connection() as conn, conn.transaction():
            rows = await alert_store.escalate_due(
                conn, self._settings.escalate_after_s, self._clock()
            )
        for row in rows:
            log.warning(
                "alert %s escalated to level %d", row["id"], row["detail"]["escalation_level"]
            )

    async def _integrity_alert(
        self, conn: Conn, device_id: str, fault: str, rejection: Rejection
    ) -> None:
        device = self._devices[device_id]
        # One open integrity alert per device: further forged uploads add to it rather
        # than flooding the operators (each is kept in rejected_messages all the same).
        cur = await conn.execute(
            "SELECT id, coalesce((detail->>'count')::int, 1) AS n FROM alerts"
            " WHERE kind = 'integrity' AND device_id = %s AND state <> 'resolved'"
            " ORDER BY alert_no DESC LIMIT 1",
            (device_id,),
        )
        row = await cur.fetchone()
        if row is not None:
            await alert_store.record_change(
                conn,
                str(row["id"]),
                "updated",
                None,
                detail_patch={
                    "count": int(row["n"]) + 1,
                    "last_reason": fault,
                    "last_received_at": iso(rejection.received_at),
                },
            )
            return
        await self._insert_alert(
            conn,
            alert_store.NewAlert(
                subject_id=device.subject_at(rejection.received_at),
                device_id=device_id,
                kind=AlertKind.INTEGRITY.value,
                severity=Severity.CRITICAL.value,
                rule_key="integrity",
                zone_id=None,
                fix_time=None,
                received_at=rejection.received_at,
                lat=None,
                lon=None,
                detail={"reason": fault, "topic": rejection.topic, "count": 1},
            ),
        )

    async def _record_gaps(self, conn: Conn, gaps: dict[str, list[Gap]], now: datetime) -> None:
        for device_id, found in gaps.items():
            device = self._devices.get(device_id)
            for gap in found:
                log.warning("data gap on %s: seq %d..%d", device_id, gap.first_seq, gap.last_seq)
                subject = device.subject_at(now) if device else None
                detail = {
                    "first_seq": gap.first_seq,
                    "last_seq": gap.last_seq,
                    "opened_at": iso(gap.opened_at),
                }
                await positions.insert_events(
                    conn, [(DeviceEvent(device_id, None, now, "data_gap", now, detail), subject)]
                )
                await self._insert_alert(
                    conn,
                    alert_store.NewAlert(
                        subject_id=subject,
                        device_id=device_id,
                        kind=AlertKind.DATA_GAP.value,
                        severity=DEFAULT_SEVERITY[AlertKind.DATA_GAP].value,
                        rule_key="data_gap",
                        zone_id=None,
                        fix_time=None,
                        received_at=now,
                        lat=None,
                        lon=None,
                        detail=detail,
                    ),
                )

    # rules changed by the API

    async def announce(self, conn: Conn, change: RulesChanged) -> None:
        """Tell every process of the change when `conn`'s transaction commits (NOTIFY is
        delivered at commit): call it inside the transaction that makes the change."""
        await conn.execute("SELECT pg_notify('rules', %s)", (change.notice(self.origin),))

    def rules_changed(self, change: RulesChanged) -> None:
        """Judge by the changed rules from now on (and the stored fixes from `since`).
        Only an ingesting process has a batch loop to take the change; the others leave
        it to the ingesting one, which hears of it by NOTIFY rules."""
        if self._settings.ingest:
            self.submit(change)

    async def _rules_changed(self, change: RulesChanged) -> None:
        subject_id = change.subject_id
        self._watchers = None  # a proximity rule may have been added
        async with self._pool.connection() as conn:
            if change.shared:
                # A shared zone set changed: every book is rebuilt on its next fix.
                self._shared = None
                self._books.clear()
                return
            if self._shared is None:
                self._shared = await zone_store.load_shared(conn)
            book = await zone_store.load_rulebook(conn, subject_id, self._shared)
            if book is None:
                return
            self._books[subject_id] = book
            state = self._states.get(subject_id)
            if change.keys is None:
                return
            if self.cluster is not None and not any(
                d.subject_id == subject_id and self.owns(d.device_id)
                for d in self._devices.values()
            ):
                # Another process owns the subject's devices and judges its stored fixes
                # again (it hears the change by NOTIFY rules); judging them here too
                # would race it for the same alerts.
                return
            # The new rules apply from `since`: judge the fixes already stored from then
            # on against them, so an order dated in the past catches what it forbids.
            cur = await conn.execute(
                "SELECT device_id, seq, t, received_at, subject_id, lat, lon, acc, src, spd, batt"
                " FROM fixes WHERE subject_id = %s AND t >= %s ORDER BY t LIMIT %s",
                (subject_id, change.since, _REJUDGE_LIMIT),
            )
            fixes = [_fix_from_row(r) for r in await cur.fetchall()]
            if not fixes:
                return
            judged, changes = rejudge(book, fixes, change.keys, self._debounce)
            log.info(
                "judged %d stored fixes of %s again from %s: %d alert change(s)",
                len(fixes),
                subject_id,
                change.since.isoformat(),
                len(changes),
            )
            async with conn.transaction():
                opened = await self._apply_changes(conn, changes)
        self._episode_alerts.update(opened)
        base = state or SubjectState(last_t=judged.last_t)
        episodes = {k: v for k, v in base.episodes.items() if k not in change.keys}
        episodes.update(judged.episodes)
        last_t = max((t for t in (base.last_t, judged.last_t) if t is not None), default=None)
        self._states[subject_id] = replace(base, last_t=last_t, episodes=episodes)


@dataclass(frozen=True, slots=True)
class _Condition:
    """One device condition for `Ingest._conditions` (see `Ingest._condition`)."""

    subject: str | None
    device_id: str
    kind: AlertKind
    clears: bool
    at: datetime
    info: dict[str, Any]
    severity: Severity | None = None
    received_at: datetime | None = None
    positioned: bool = True


def _fix_from_row(r: dict[str, Any]) -> Fix:
    return Fix(
        device_id=r["device_id"],
        seq=r["seq"],
        t=r["t"],
        lat=r["lat"],
        lon=r["lon"],
        acc=float(r["acc"]),
        src=r["src"],
        received_at=r["received_at"],
        spd=float(r["spd"]) if r["spd"] is not None else None,
        batt=r["batt"],
    )


def _episode_detail(c: AlertChange) -> dict[str, Any]:
    ep = c.episode
    last = ep.last
    detail: dict[str, Any] = {
        "rule": ep.rule.key,
        "count": ep.count,
        "late": c.late,
        "worst_margin_m": round(ep.worst_margin_m, 1),
        "last_fix": {
            "device_id": last.device_id,
            "seq": last.seq,
            "t": iso(last.t),
            "received_at": iso(last.received_at),
            "lat": last.lat,
            "lon": last.lon,
            "acc": last.acc,
            "src": last.src,
        },
    }
    if ep.crossing:
        detail["crossing"] = True  # the straight path between two fixes crossed the zone
    if not ep.partial:  # a window that began inside an episode does not know its start
        detail["episode"] = ep.key
    return detail
