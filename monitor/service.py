"""The ingest service: the batch loop around the pipeline (`monitor.pipeline`, its stages
in order), and the periodic work beside it (unanswered locates, escalation, liveness,
data gaps).

A batch closes at `batch_max_messages` or `batch_max_ms`; its stages run in one
transaction; once it commits, what the stages computed becomes the kept state, the
devices' `ack` watermarks are published and the messages acknowledged. A batch whose
transaction fails is tried again as it was. In cluster mode (`Claims`), only messages
of partitions this process holds are processed, their epochs are checked in the
transaction (stage `fence`), and the periodic work covers only the devices it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from monitor import pipeline
from monitor.config import Settings
from monitor.domain import AlertKind, Severity, iso
from monitor.heap import Heap
from monitor.ingest.broker import acl_lines, password_hash, write_atomically
from monitor.ingest.broker import reload as reload_broker
from monitor.ingest.subscriber import Message
from monitor.ingest.wire import ack_topic, cmd_topic
from monitor.pipeline import alerts, episodes, judge, watermark
from monitor.pipeline.batch import Batch, Config, Conn
from monitor.pipeline.state import NOT_HEARD, DeviceInfo, Heard, PartitionState
from monitor.rules.alerting import Condition
from monitor.rules.engine import Change, Debounce, SubjectState, rejudge
from monitor.rules.liveness import (
    DeviceStatus,
    LivenessChange,
    LivenessState,
    quiet_until,
    reporting_allowance,
)
from monitor.rules.liveness import Policy as LivenessPolicy
from monitor.rules.liveness import judge_all as judge_liveness
from monitor.store import alerts as alert_store
from monitor.store import claims, positions
from monitor.store import commands as command_store
from monitor.store import devices as device_store
from monitor.store import subjects as subject_store
from monitor.store import zones as zone_store
from monitor.store.pool import Pool

__all__ = ["Claims", "DeviceInfo", "Ingest", "RulesChanged"]

log = logging.getLogger(__name__)

# Devices judged by liveness between two yields to the event loop.
_LIVENESS_SLICE = 2_000
_LIVENESS_BATTERY_CRITICAL = LivenessPolicy().battery_critical_pct
# Device conditions that liveness opens and clears (rebuilt from open alerts).
_LIVENESS_KINDS = (AlertKind.COMMS_LOSS, AlertKind.LOCATION_LOSS, AlertKind.BATTERY)


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


class Ingest:
    """The batch loop and the periodic work, with the pipeline's state. One per process."""

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
        self.config = Config(
            debounce=Debounce(settings.rules.confirm_fixes, settings.rules.confirm_s),
            gap_timeout=timedelta(seconds=settings.gap_timeout_s),
            severity=dict(settings.severity),
        )
        self._queue: asyncio.Queue[Message | RulesChanged] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._room_limit = 2 * settings.batch_max_messages
        self.state = PartitionState(
            partitions=settings.cluster.partitions if settings.nats_servers else 1
        )
        self._broker_lock = asyncio.Lock()
        self._started_at = clock()
        self._ticks = 0
        self._met_new = False
        # Cluster mode: which partitions this process holds (None: all of them).
        self.cluster: Claims | None = None
        # Counters for /metrics: messages handled, records stored, things refused.
        self.counters: dict[str, int] = defaultdict(int)

    # feeding the loop

    def submit(self, item: Message | RulesChanged) -> None:
        self._queue.put_nowait(item)
        if self._queue.qsize() >= self._room_limit:
            self._room.clear()

    async def wait_for_room(self) -> None:
        """Until the batch loop has at most two batches queued: cluster mode pulls from
        the stream only then, so a backlog waits in the stream, not in this process's
        memory (without it, a process behind by a minute held 1.3 GB, measured)."""
        await self._room.wait()

    async def load(self) -> None:
        async with self._pool.connection() as conn:
            for row in await device_store.all_devices(conn):
                self.state.remember(DeviceInfo.from_row(row))

    async def device_enrolled(self, row: dict[str, Any]) -> None:
        self.state.remember(DeviceInfo.from_row(row))
        await self.sync_broker_files()

    async def device_changed(self, device_id: str) -> None:
        async with self._pool.connection() as conn:
            row = await device_store.get(conn, device_id)
        if row is not None:
            self.state.remember(DeviceInfo.from_row(row))
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

    # partitions (cluster mode)

    def owns(self, device_id: str) -> bool:
        cluster = self.cluster
        return cluster is None or self.state.partition(device_id) in cluster.epochs()

    def forget(self, partitions: set[int]) -> None:
        """Drop what this process keeps of the devices of these partitions and of their
        subjects: another process may change it meanwhile, so it is read again from the
        store when the partitions come back (a claim) and not trusted after a loss."""
        devices, subjects = self.state.forget(partitions)
        log.info(
            "forgot the state of %d device(s) and %d subject(s) of partition(s) %s",
            devices,
            subjects,
            sorted(partitions),
        )

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
            if self._queue.qsize() < self._room_limit:
                self._room.set()
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

    def _batch(self, conn: Conn, messages: list[Message], epochs: dict[int, int]) -> Batch:
        return Batch(
            messages=messages,
            conn=conn,
            state=self.state,
            config=self.config,
            now=self._clock(),
            epochs=epochs,
            monotonic=time.monotonic,
            new_id=lambda: str(uuid.uuid4()),
        )

    async def _process(self, messages: list[Message]) -> None:
        messages, epochs = self._held(messages)
        if not messages:
            return
        async with self._pool.connection() as conn, conn.transaction():
            b = self._batch(conn, messages, epochs)
            await pipeline.run(b)
            # committed
        pipeline.settle(b)
        # The subjects just met stay for the life of the process: the loop freezes
        # their state out of the collector's scans after this batch (monitor.heap).
        self._met_new = self._met_new or bool(b.warm)
        self._observe(b)
        for name, n in b.counters.items():
            self.counters[name] += n
        self.counters["messages_handled"] += len(messages)
        self.counters["fixes_stored"] += len(b.new_fixes)
        self.counters["events_stored"] += len(b.new_events)
        self.counters["records_refused"] += sum(1 for r in b.rejections if r.seq is not None)
        self.counters["batches"] += 1
        for device_id in b.uploaded | set(b.watermarks):
            upto = self.state.watermarks[device_id].upto
            self._publish(ack_topic(device_id), json.dumps({"upto": upto}).encode(), True)
        self._puback(messages)

    def _observe(self, b: Batch) -> None:
        """What liveness needs: when each device was last heard, located, charged.

        A device judged quiet until some time stays so when an upload or a fix comes:
        they only move the moment comms or location could be lost later, so that time
        is still a safe bound and liveness need not judge the device before it (at
        10,000 fixes/s, judging every device heard since the last pass took 4 % of the
        service's time). What could open something sooner makes it judged again: a
        battery at the critical level, and any device event (no fix, charger)."""
        state = self.state
        critical = _LIVENESS_BATTERY_CRITICAL
        for msg in b.messages:
            parts = msg.topic.split("/")
            if len(parts) == 5 and parts[4] == "up" and parts[3] in state.devices:
                heard = state.heard.setdefault(parts[3], Heard())
                heard.upload_at = max(heard.upload_at or msg.received_at, msg.received_at)
        for f, _ in b.fixes:
            if (f.device_id, f.seq, f.t) not in b.new_fixes:
                continue
            heard = state.heard.setdefault(f.device_id, Heard())
            if f.batt is not None and f.batt <= critical:
                state.quiet_until.pop(f.device_id, None)
            if heard.fix_t is None or f.t >= heard.fix_t:
                heard.fix_t = f.t
                if f.batt is not None:
                    heard.battery = f.batt
            if f.seq is None:  # OwnTracks: the location is the upload
                heard.upload_at = max(heard.upload_at or f.received_at, f.received_at)
        for e, _ in b.events:
            if (e.device_id, e.seq, e.t) not in b.new_events:
                continue
            heard = state.heard.setdefault(e.device_id, Heard())
            state.quiet_until.pop(e.device_id, None)
            if e.kind == "no_fix":
                heard.no_fix_at = max(heard.no_fix_at or e.t, e.t)
            elif e.kind in ("charger_on", "charger_off"):
                heard.charging = e.kind == "charger_on"

    # periodic work

    async def tick(self) -> None:
        """Periodic work: report unanswered locates, escalate, judge liveness now and
        then, close sequence holes open too long."""
        now = self._clock()
        await self._expire_locates(now)
        await self.escalate()
        self._ticks += 1
        if self._ticks % self._settings.liveness_every_ticks == 0:
            await self.liveness()
        state = self.state
        due = [
            d
            for d in state.holes
            if (since := state.watermarks[d].hole_since) is not None
            and now - since >= self.config.gap_timeout
        ]
        if not due:
            return
        tentative = {d: state.watermarks[d].copy() for d in due}
        gaps = {d: wm.expire(now, self.config.gap_timeout) for d, wm in tentative.items()}
        async with self._pool.connection() as conn, conn.transaction():
            await watermark.record_gaps(conn, state, self.config, gaps, now)
            await positions.save_acks(conn, {d: wm.upto for d, wm in tentative.items()})
        state.keep_watermarks(tentative)
        for d, wm in tentative.items():
            self._publish(ack_topic(d), json.dumps({"upto": wm.upto}).encode(), True)

    async def _expire_locates(self, now: datetime) -> None:
        timeout = timedelta(seconds=self._settings.locate_timeout_s)
        async with self._pool.connection() as conn, conn.transaction():
            for row in await command_store.expire_locates(conn, timeout):
                device = self.state.devices.get(row["device_id"])
                log.warning("locate %s to %s unanswered", row["id"], row["device_id"])
                await alerts.open_one(
                    conn,
                    self.config.severity,
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

    def publish_command(self, device_id: str, payload: dict[str, Any]) -> None:
        self._publish(cmd_topic(device_id), json.dumps(payload).encode(), False)

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

    async def liveness(self) -> None:
        """Silence is never compliance: devices not heard for their interval, without
        fixes, or with a flat battery raise alerts, each with its clear."""
        state = self.state
        now = self._clock()
        policy = LivenessPolicy(
            comms_buffer_s=self._settings.comms_buffer_s,
            location_loss_s=self._settings.location_loss_s,
        )
        devices = [
            d
            for d in state.devices.values()
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
                if (until := state.quiet_until.get(d.device_id)) is None or now > until
            ]
            self.counters["liveness_devices_judged"] += len(statuses)
            found_states, found = judge_liveness(statuses, state.liveness, now, policy)
            states.update(found_states)
            changes += found
            changed = {c.device_id for c in found}
            for status in statuses:
                if status.device_id in changed or found_states[status.device_id].open:
                    continue
                quiet = quiet_until(status, policy)
                if quiet is not None:
                    state.quiet_until[status.device_id] = quiet
            # 100,000 devices take about a second to judge: in slices, so that the batch
            # loop and the websockets are never held up for more than a few milliseconds.
            await asyncio.sleep(0)
        if changes:
            conditions = [
                Condition(
                    state.devices[change.device_id].subject_at(now),
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
                    await alerts.conditions(
                        conn, self.config.severity, conditions[i : i + _LIVENESS_SLICE], now
                    )
                    await asyncio.sleep(0)
        # The skipped devices had nothing open: they are left out, as never judged.
        # (Devices of partitions not held are not judged here at all.)
        state.liveness = dict(states)
        self.counters["liveness_passes"] += 1

    async def _recall_liveness(self, device_ids: list[str]) -> None:
        """What liveness knew of devices this process has just taken (a start, a
        takeover): their open conditions, so each gets its clear and none a second
        alert, and when each last had a record accounted, so silence is counted from
        there rather than from the takeover. A few queries for all of them."""
        state = self.state
        unknown = [d for d in device_ids if d not in state.liveness_known]
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
                    known = state.liveness.get(device_id, LivenessState()).open
                    state.liveness[device_id] = LivenessState(frozenset(opened[device_id]) | known)
                    state.quiet_until.pop(device_id, None)
                at = accounted.get(device_id)
                if at is not None:
                    heard = state.heard.setdefault(device_id, Heard())
                    if heard.upload_at is None or heard.upload_at < at:
                        heard.upload_at = at
            state.liveness_known.update(chunk)

    def _monitored_from(self, device_id: str) -> datetime:
        """Silence is counted from when this process took the device at the earliest."""
        if self.cluster is not None:
            at = self.cluster.claimed_at(self.state.partition(device_id))
            if at is not None:
                return at
        return self._started_at

    def _status(self, device: DeviceInfo) -> DeviceStatus:
        """What liveness judges of one device."""
        assert device.assigned_at is not None
        heard = self.state.heard.get(device.device_id) or NOT_HEARD
        upload_s, fix_s = reporting_allowance(
            device.kind, device.upload_interval_s, device.fix_interval_s
        )
        return DeviceStatus(
            device_id=device.device_id,
            monitored_since=max(device.assigned_at, self._monitored_from(device.device_id)),
            upload_interval_s=upload_s,
            fix_interval_s=fix_s,
            last_upload_at=heard.upload_at,
            last_fix_t=heard.fix_t,
            no_fix_at=heard.no_fix_at,
            battery_pct=heard.battery,
            charging=heard.charging,
        )

    # rules changed by the API

    async def announce(self, conn: Conn, change: RulesChanged) -> None:
        """Tell every process of the change when `conn`'s transaction commits (NOTIFY is
        delivered at commit): call it inside the transaction that makes the change."""
        await subject_store.announce_rules(conn, change.notice(self.origin))

    def rules_changed(self, change: RulesChanged) -> None:
        """Judge by the changed rules from now on (and the stored fixes from `since`).
        Only an ingesting process has a batch loop to take the change; the others leave
        it to the ingesting one, which hears of it by NOTIFY rules."""
        if self._settings.ingest:
            self.submit(change)

    async def _rules_changed(self, change: RulesChanged) -> None:
        state = self.state
        subject_id = change.subject_id
        state.watchers = None  # a proximity rule may have been added
        async with self._pool.connection() as conn:
            if change.shared:
                # A shared zone set changed: every book is rebuilt on its next fix.
                state.shared = None
                state.books.clear()
                return
            if state.shared is None:
                state.shared = await zone_store.load_shared(conn)
            book = await zone_store.load_rulebook(conn, subject_id, state.shared)
            if book is None:
                return
            state.books[subject_id] = book
            current = state.states.get(subject_id)
            if change.keys is None:
                return
            if self.cluster is not None and not any(
                d.subject_id == subject_id and self.owns(d.device_id)
                for d in state.devices.values()
            ):
                # Another process owns the subject's devices and judges its stored fixes
                # again (it hears the change by NOTIFY rules); judging them here too
                # would race it for the same alerts.
                return
            # The new rules apply from `since`: judge the fixes already stored from then
            # on against them, so an order dated in the past catches what it forbids.
            rows = await positions.fixes_from(conn, subject_id, change.since, judge.REJUDGE_LIMIT)
            fixes = [judge.fix_from_row(r) for r in rows]
            if not fixes:
                return
            judged, changes = rejudge(book, fixes, change.keys, self.config.debounce)
            log.info(
                "judged %d stored fixes of %s again from %s: %d alert change(s)",
                len(fixes),
                subject_id,
                change.since.isoformat(),
                len(changes),
            )
            async with conn.transaction():
                b = self._batch(conn, [], {})
                opened = await episodes.apply(b, changes)
        state.episode_alerts.update(opened)
        base = current or SubjectState(last_t=judged.last_t)
        kept = {k: v for k, v in base.episodes.items() if k not in change.keys}
        kept.update(judged.episodes)
        last_t = max((t for t in (base.last_t, judged.last_t) if t is not None), default=None)
        state.states[subject_id] = replace(base, last_t=last_t, episodes=kept)
