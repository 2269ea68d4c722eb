"""One simulated bracelet: an MQTT connection speaking protocol v1.

The bracelet owns no thread. Whoever drives it calls `poll()`, or `service()` after
its own select on `socket()`, and every paho callback runs inside those calls, on the
caller's thread. That keeps a fleet of many devices on one thread without locks, and
away from the interpreter-lock fight that `loop_start()` causes under load (see the
field notes). The blocking helpers (`connect`, `flush`, `wait_acked`, `close`) pump
the network themselves, for tests and one-off tools.

Typical use:

    b = Bracelet("BR-0001", "127.0.0.1", 1883, "BR-0001", password,
                 signing_key=key, state_dir=Path(".local/sim/BR-0001"))
    b.connect()
    seq = b.add_fix(t_ms, lat, lon, acc=8.5)
    b.flush()
    assert b.wait_acked(10)
    b.close()
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from device_sim.journal import Journal, Record, RecordKind, encode_upload
from device_sim.signature import decode_key, sign
from protocol.records import MAX_RECORDS
from protocol.signature import SIG_PROPERTY

# Re-exported as `topic`, the name tests and tools have always imported from here.
from protocol.topics import device_topic as topic

__all__ = ["MAX_BATCH", "Bracelet", "Locator", "Reading", "topic"]

log = logging.getLogger(__name__)

MAX_BATCH = MAX_RECORDS  # records in one upload, protocol v1

_ONLINE = b'{"online":true}'
_OFFLINE = b'{"online":false}'


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Reading:
    """A position as the receiver reports it, before it becomes a numbered fix."""

    lat: float
    lon: float
    acc: float
    src: str = "gnss"
    spd: float | None = None
    batt: int | None = None


# Answers a `locate`: the position at this epoch-ms time, or None without one.
Locator = Callable[[int], Reading | None]


class Bracelet:
    """A device: numbered records kept until acknowledged, uploads, commands.

    Not thread-safe: one thread calls every method (paho's callbacks run inside them).
    `state_dir` keeps the seq counter and the unacknowledged records across restarts;
    `None` keeps them in memory only.
    """

    def __init__(
        self,
        device_id: str,
        host: str,
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        *,
        signing_key: str | bytes | None = None,
        state_dir: Path | None = None,
        batch_size: int = MAX_BATCH,
        fix_interval_s: float = 15.0,
        upload_interval_s: float | None = None,
        resend_after_s: float = 30.0,
        max_inflight: int = 8,
        min_upload_gap_s: float = 0.0,
        keepalive_s: int = 60,
        mqtt5: bool = True,
        tls: bool = False,
        locator: Locator | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in [1, {MAX_BATCH}], not {batch_size}")
        if isinstance(signing_key, str):
            signing_key = decode_key(signing_key)
        if signing_key is not None and not mqtt5:
            raise ValueError("a signed device speaks MQTT 5: the signature is a user property")
        self.device_id = device_id
        self.host = host
        self.port = port
        self.batch_size = batch_size
        self.fix_interval_s = fix_interval_s
        self.upload_interval_s = fix_interval_s if upload_interval_s is None else upload_interval_s
        self.resend_after_s = resend_after_s
        self.max_inflight = max_inflight
        # At least this long between two uploads: paces a device whose journal is full
        # (a scenario's past records) into a stream instead of one burst.
        self.min_upload_gap_s = min_upload_gap_s
        self._last_upload_at: float | None = None
        self._key = signing_key
        self._mqtt5 = mqtt5
        self._keepalive = keepalive_s
        self.locator = locator  # answers `locate`; without one, the last fix again
        self._clock = clock
        self._wall_ms = wall_ms
        self._journal = Journal(state_dir)
        self._up = topic(device_id, "up")
        self._state = topic(device_id, "state")
        self._ack = topic(device_id, "ack")
        self._cmd = topic(device_id, "cmd")

        # Connection state, all changed from paho's callbacks or tick().
        self._started = False  # connect() or start() called: reconnect when lost
        self._closing = False
        self._connected = False  # CONNACK accepted
        self._ready = False  # and the subscriptions confirmed: uploads may go
        self._sub_mid: int | None = None
        self._refusal: str | None = None
        self._backoff_s = 1.0
        self._next_attempt = 0.0
        self._inflight: dict[int, int] = {}  # mid of an upload -> records in it
        self._state_mid: int | None = None
        self._urgent = False
        self._waiting_since: float | None = None  # when the oldest unsent new record came
        self._last_reading: Reading | None = None
        self._seen_cmds: OrderedDict[str, None] = OrderedDict()
        self._poller = select.poll()
        self._polled_fd: int | None = None

        # Counters for progress lines and tests.
        self.records_sent = 0  # records published, resends included
        self.uploads_sent = 0
        self.acks_received = 0
        self.last_ack: int | None = None  # the latest `upto` received, even a stale one
        self.connects = 0
        # Called with every upload's exact bytes as it is published (scenarios keep them
        # to publish the same uploads again).
        self.on_upload: Callable[[bytes], None] | None = None

        protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device_id,
            protocol=protocol,
            # v3.1.1 takes it here, v5 at connect().
            clean_session=None if mqtt5 else True,
        )
        # Protocol v1: the MQTT username is the device id; a development broker may
        # take it without a password.
        self._client.username_pw_set(username or device_id, password)
        if tls:
            self._client.tls_set()
        self._client.will_set(self._state, _OFFLINE, qos=1, retain=True)
        # Our own cap on uploads in flight is the one that matters; paho's leaves room
        # for the state and command traffic beside it.
        self._client.max_inflight_messages_set(max_inflight + 4)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # -- what the driver reads -------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected and subscribed: uploads can go out."""
        return self._ready

    @property
    def acked_upto(self) -> int:
        return self._journal.acked_upto

    @property
    def last_seq(self) -> int:
        return self._journal.last_seq

    @property
    def pending(self) -> int:
        """Records not yet acknowledged."""
        return self._journal.pending

    def unacked(self) -> list[Record]:
        """The records waiting for an acknowledgement, in seq order."""
        return self._journal.unacked()

    @property
    def inflight(self) -> int:
        """Uploads published and not yet acknowledged by the broker (PUBACK)."""
        return len(self._inflight)

    @property
    def refusal(self) -> str | None:
        """The broker's reason for refusing the latest connection attempt, if it did."""
        return self._refusal

    def socket(self) -> Any:
        """The socket to select on, None while disconnected."""
        return self._client.socket()

    def wants_write(self) -> bool:
        return self._client.want_write()

    # -- records -----------------------------------------------------------------

    def add_fix(
        self,
        t_ms: int,
        lat: float,
        lon: float,
        acc: float = 8.0,
        src: str = "gnss",
        *,
        spd: float | None = None,
        batt: int | None = None,
    ) -> int:
        """Record a fix (uploaded on the next due upload); returns its seq."""
        seq = self._journal.add_fix(t_ms, lat, lon, acc, src, spd=spd, batt=batt)
        self._last_reading = Reading(lat, lon, acc, src, spd, batt)
        self._note_new()
        return seq

    def add_event(self, t_ms: int, kind: str, detail: Mapping[str, object] | None = None) -> int:
        """Record an event and upload it without waiting for the upload interval."""
        seq = self._journal.add_event(t_ms, kind, detail)
        self._note_new()
        self._urgent = True
        return seq

    def add_record(self, kind: RecordKind, fields: Mapping[str, object]) -> int:
        """Record whatever `fields` hold, unchecked, to exercise the backend's record
        refusals (a `lat` of 123, a missing `t`); returns its seq."""
        seq = self._journal.add(kind, fields)
        self._note_new()
        return seq

    def _note_new(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = self._clock()

    # -- connection ----------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background: `tick()` makes the attempts, and keeps retrying
        with a growing back-off (1 s to 30 s) whenever the connection is lost."""
        self._closing = False
        self._refusal = None
        if self._mqtt5:
            self._client.connect_async(self.host, self.port, self._keepalive, clean_start=True)
        else:
            self._client.connect_async(self.host, self.port, self._keepalive)
        self._started = True
        self._next_attempt = self._clock()

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raises OSError (ConnectionRefusedError, TimeoutError)
        when the broker cannot be reached, refuses, or does not answer in time."""
        deadline = self._clock() + timeout_s
        self.start()
        self._started = False  # one attempt here, and its failure is raised
        self._client.reconnect()
        self._started = True
        while not self._ready:
            if self._refusal is not None:
                self._started = False
                raise ConnectionRefusedError(f"{self.device_id}: broker refused: {self._refusal}")
            if self._clock() >= deadline:
                raise TimeoutError(f"{self.device_id}: no CONNACK/SUBACK in {timeout_s} s")
            self.poll(0.05)

    def close(self, timeout_s: float = 3.0) -> None:
        """Say `{"online": false}` (a clean disconnect does not fire the will),
        disconnect, and close the journal."""
        self.begin_close()
        deadline = self._clock() + timeout_s
        while not self.offline_said and self._clock() < deadline:
            self._pump(0.05)
        self.end_close()

    def begin_close(self) -> None:
        """First half of `close()`: stop reconnecting and publish `{"online": false}`,
        so that a fleet can wait for all its devices' PUBACKs at once."""
        self._closing = True
        if self._connected:
            info = self._client.publish(self._state, _OFFLINE, qos=1, retain=True)
            self._state_mid = info.mid

    @property
    def offline_said(self) -> bool:
        """The broker has the offline state (or there is no connection to say it on)."""
        return not self._connected or self._state_mid is None

    def end_close(self) -> None:
        """Second half of `close()`: disconnect and close the journal."""
        self._closing = True
        if self._client.socket() is not None:
            # Written at once (no network thread here); paho closes the socket after it.
            self._client.disconnect()
        self._connected = self._ready = False
        self._journal.close()

    # -- driving -------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> None:
        """Network traffic (waiting up to `timeout_s` for some), then `tick()`."""
        self._pump(timeout_s)
        self.tick()

    def service(self, readable: bool, writable: bool) -> None:
        """For a driver that selects on `socket()` itself: read and write what its
        select reported, then `tick()`."""
        self._io(readable, writable)
        self.tick()

    def tick(self) -> None:
        """Timers: reconnect when due, keepalive, uploads and resends."""
        now = self._clock()
        if self._client.socket() is None:
            if self._started and not self._closing and now >= self._next_attempt:
                self._reconnect(now)
            return
        self._client.loop_misc()
        if self._ready:
            self._send_due(now)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Upload everything not yet sent and wait for the broker's PUBACKs; True when
        every record has been handed to the broker."""
        deadline = self._clock() + timeout_s
        self._urgent = True
        while self._clock() < deadline:
            self.poll(0.02)
            if self._ready and self._journal.unsent == 0 and not self._inflight:
                return True
        return False

    def wait_acked(self, timeout_s: float = 10.0) -> bool:
        """Drive the connection until every record so far is acknowledged."""
        deadline = self._clock() + timeout_s
        self._urgent = True
        while not self._journal.all_acked:
            if self._clock() >= deadline:
                return False
            self.poll(0.05)
        return True

    def publish_raw(
        self, payload: bytes, timeout_s: float = 10.0, *, signature: str | None = None
    ) -> bool:
        """Publish `payload` as an upload exactly as given (signed when the device has
        a key, or with `signature` as the `sig` property whatever the key: a forgery),
        outside the journal; True once the broker acknowledged it (PUBACK)."""
        mid = self.publish_raw_nowait(payload, signature=signature)
        deadline = self._clock() + timeout_s
        while mid in self._inflight and self._clock() < deadline:
            self._pump(0.05)
        return mid not in self._inflight

    def publish_raw_nowait(self, payload: bytes, *, signature: str | None = None) -> int:
        """`publish_raw` without waiting: returns the message id, which `raw_done` then
        reports on (for drivers that pump many devices at once)."""
        if signature is None:
            props = self._sig(payload)
        elif not self._mqtt5:
            raise ValueError("a signature is a user property: MQTT 5 only")
        else:
            # A fresh set: assigning UserProperty appends, and the true signature must
            # not travel beside the forged one.
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = (SIG_PROPERTY, signature)
        info = self._client.publish(self._up, payload, qos=1, properties=props)
        self._inflight[info.mid] = 0
        return info.mid

    def raw_done(self, mid: int) -> bool:
        """The broker acknowledged the raw upload `mid` (or the connection it went out on
        was lost, which forgets it: publish it again)."""
        return mid not in self._inflight

    def vanish(self) -> None:
        """Go silent without a goodbye, as a bracelet whose battery is pulled or that
        leaves coverage: the broker publishes the will (`{"online": false}`) for it. MQTT
        5 says so with DISCONNECT reason 0x04; 3.1.1 has no such reason, so the socket is
        just closed. The journal is closed; the object is done."""
        self._closing = True
        if self._client.socket() is not None:
            if self._mqtt5:
                reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
                self._client.disconnect(reasoncode=reason)
            else:
                sock = self._client.socket()
                with contextlib.suppress(OSError):
                    sock.close()  # type: ignore[union-attr]
        self._connected = self._ready = False
        self._inflight.clear()
        self._journal.close()

    # -- internals -----------------------------------------------------------------

    def _pump(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the socket, then read and write.

        Not paho's `loop()`: that uses select(), which fails silently for descriptors
        above 1024 (a few hundred devices in one process), and adds a socket pair per
        client. A poll object has no such limit.
        """
        sock = self._client.socket()
        if sock is None:
            # Nothing to wait on while disconnected; don't spin.
            if timeout_s > 0:
                time.sleep(timeout_s)
            return
        fd = sock.fileno()
        if fd != self._polled_fd:
            if self._polled_fd is not None:
                with contextlib.suppress(KeyError, OSError):
                    self._poller.unregister(self._polled_fd)
            self._poller.register(fd, select.POLLIN)
            self._polled_fd = fd
        events = select.POLLIN | (select.POLLOUT if self._client.want_write() else 0)
        self._poller.modify(fd, events)
        ready = self._poller.poll(max(0, round(timeout_s * 1000)))
        mask = ready[0][1] if ready else 0
        self._io(
            bool(mask & (select.POLLIN | select.POLLERR | select.POLLHUP)),
            bool(mask & select.POLLOUT),
        )

    def _io(self, readable: bool, writable: bool) -> None:
        client = self._client
        if readable:
            client.loop_read()
            # TLS may hold decrypted bytes that no longer show on the socket.
            sock = client.socket()
            while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
                client.loop_read()
                sock = client.socket()
        if client.socket() is not None and (writable or client.want_write()):
            client.loop_write()

    def _reconnect(self, now: float) -> None:
        self._refusal = None
        try:
            self._client.reconnect()
        except OSError as exc:
            log.info("%s: reconnect failed: %s", self.device_id, exc)
            self._next_attempt = now + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, 30.0)

    def _sig(self, payload: bytes) -> Properties | None:
        if not self._mqtt5:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if self._key is not None:
            props.UserProperty = (SIG_PROPERTY, sign(self._key, payload))
        return props

    def _send_due(self, now: float) -> None:
        """Publish what is due, at most `max_inflight` uploads awaiting their PUBACK.

        New records wait so that each upload carries about upload_s / fix_s fixes, the
        newest going out as soon as it is made: they are held while the oldest has
        waited less than upload_s - 1.5 fix_s (the half interval absorbs scheduling
        jitter), which is not at all when both intervals are equal.
        """
        journal = self._journal
        hold_s = max(0.0, self.upload_interval_s - 1.5 * self.fix_interval_s)
        while len(self._inflight) < self.max_inflight and journal.has_due(now, self.resend_after_s):
            if (
                self._last_upload_at is not None
                and now - self._last_upload_at < self.min_upload_gap_s
            ):
                return
            new_due = self._waiting_since is not None and now - self._waiting_since >= hold_s
            batch_ready = journal.unsent >= self.batch_size
            resends_only = journal.unsent == 0  # has_due said so: resends are due
            if not (self._urgent or new_due or batch_ready or resends_only):
                return
            records = journal.due(now, self.resend_after_s, self.batch_size)
            payload = encode_upload(records)
            info = self._client.publish(self._up, payload, qos=1, properties=self._sig(payload))
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.warning("%s: upload not published: %s", self.device_id, info.rc)
                return
            if self.on_upload is not None:
                self.on_upload(payload)
            self._inflight[info.mid] = len(records)
            journal.mark_sent(records, now)
            self._last_upload_at = now
            self.records_sent += len(records)
            self.uploads_sent += 1
            if journal.unsent == 0:
                self._waiting_since = None
        if not journal.has_due(now, self.resend_after_s):
            self._urgent = False

    # paho callbacks (VERSION2 signatures), all on the driving thread.

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
            log.warning("%s: broker refused the connection: %s", self.device_id, reason)
            return
        self._connected = True
        self._backoff_s = 1.0
        self.connects += 1
        # Whatever paho kept from the last connection would go out again beside the
        # journal's own resend: the journal alone decides what is resent.
        client.drop_out_messages()
        self._inflight.clear()
        self._state_mid = None
        self._journal.mark_unsent()
        self._urgent = True  # what the last connection left unacknowledged goes at once
        # Two SUBSCRIBEs, ack first: the broker sends the retained ack before it answers
        # the second, so by the time uploads may go (that SUBACK) the device knows what
        # the backend has already, and resends nothing it does not have to.
        for leaf in (self._ack, self._cmd):
            if self._mqtt5:
                _, self._sub_mid = client.subscribe(leaf, options=SubscribeOptions(qos=1))
            else:
                _, self._sub_mid = client.subscribe(leaf, qos=1)
        client.publish(self._state, _ONLINE, qos=1, retain=True)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            # Without its ack topic the device would resend forever: say so loudly.
            log.error("%s: subscription refused: %s", self.device_id, refused)
        if mid == self._sub_mid:
            self._ready = True

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected
        self._connected = self._ready = False
        self._inflight.clear()
        if self._closing:
            return
        if was_connected:
            log.info("%s: connection lost: %s", self.device_id, reason)
        self._next_attempt = self._clock() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, 30.0)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if mid == self._state_mid:
            self._state_mid = None
        if self._inflight.pop(mid, None) is not None and reason.is_failure:
            # The records stay in the journal and are resent after the timeout.
            log.warning("%s: broker refused an upload: %s", self.device_id, reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.receive(msg.topic, bytes(msg.payload))

    def receive(self, topic_name: str, payload: bytes) -> None:
        """Handle a message from the backend (an ack or a command): what paho calls on
        delivery, and what tests call without a broker."""
        if topic_name == self._ack:
            self._handle_ack(payload)
        elif topic_name == self._cmd:
            self._handle_cmd(payload)

    def _handle_ack(self, payload: bytes) -> None:
        try:
            upto = json.loads(payload)["upto"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable ack %r", self.device_id, payload[:200])
            return
        if not isinstance(upto, int) or isinstance(upto, bool) or upto < 0:
            log.warning("%s: ack with a bad upto %r", self.device_id, upto)
            return
        self.acks_received += 1
        self.last_ack = upto
        self._journal.acknowledge(upto)

    def _handle_cmd(self, payload: bytes) -> None:
        try:
            cmd = json.loads(payload)
        except ValueError:
            cmd = None
        if not isinstance(cmd, dict) or not isinstance(cmd.get("id"), str):
            # Without an id there is nothing to answer to.
            log.warning("%s: unreadable command %r", self.device_id, payload[:200])
            return
        cmd_id: str = cmd["id"]
        if cmd_id in self._seen_cmds:  # QoS 1 may deliver it twice
            return
        self._seen_cmds[cmd_id] = None
        if len(self._seen_cmds) > 256:
            self._seen_cmds.popitem(last=False)
        t = self._wall_ms()
        detail: dict[str, object] = {"id": cmd_id}
        match cmd.get("cmd"):
            case "locate":
                reading = self.locator(t) if self.locator else self._last_reading
                if reading is None:
                    detail.update(ok=False, error="no position")
                else:
                    seq = self.add_fix(
                        t,
                        reading.lat,
                        reading.lon,
                        reading.acc,
                        reading.src,
                        spd=reading.spd,
                        batt=reading.batt,
                    )
                    detail.update(ok=True, seq=seq)
            case "set_interval":
                detail.update(self._set_interval(cmd.get("args")))
            case "vibrate":
                detail.update(ok=True)
            case other:
                detail.update(ok=False, error=f"unknown command {other!r}")
        self.add_event(t, "cmd_result", detail)
        log.info("%s: command %s answered %s", self.device_id, cmd.get("cmd"), detail)

    def _set_interval(self, args: object) -> dict[str, object]:
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be an object"}
        values: dict[str, float] = {}
        for name in ("fix_s", "upload_s"):
            value = args.get(name)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                return {"ok": False, "error": f"{name} must be a positive number"}
            values[name] = float(value)
        if not values:
            return {"ok": False, "error": "args need fix_s or upload_s"}
        if "fix_s" in values:
            self.fix_interval_s = values["fix_s"]
        if "upload_s" in values:
            self.upload_interval_s = values["upload_s"]
        return {"ok": True, "fix_s": self.fix_interval_s, "upload_s": self.upload_interval_s}
