"""One simulated smartphone running the OwnTracks app, enrolled instead of a bracelet.

It speaks the app's own JSON (protocol v1, last section): `_type: location` with `lat`,
`lon`, `tst` (epoch seconds), `acc`, `batt`, `created_at`, retained, to
`owntracks/{user}/{device}`; `_type: status` to `.../status`; its will is `_type: lwt`.
OwnTracks has no record numbers and no end-to-end acknowledgement: the app keeps each
message until the broker acknowledges it (PUBACK) and sends it again after a reconnect,
and the backend deduplicates locations on `(device, tst)`. A message the broker
acknowledged and then lost in a crash is lost for good, as it is with the real app.

Like `Bracelet`, a phone owns no thread: the driver calls `poll()`, or `service()` after
its own select on `socket()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["Phone", "location", "status"]

log = logging.getLogger(__name__)


def location(
    tst: int,
    lat: float,
    lon: float,
    acc: float,
    *,
    batt: int | None = None,
    vel_kmh: float | None = None,
    created_at: int | None = None,
    conn: str = "m",
    trigger: str = "p",
    tid: str = "ph",
) -> dict[str, Any]:
    """An OwnTracks `location` message as the Android app writes it: `created_at` later
    than `tst` marks a fix the app buffered before it could send it."""
    doc: dict[str, Any] = {
        "_type": "location",
        "acc": round(acc),
        "bs": 1,
        "conn": conn,
        "created_at": created_at if created_at is not None else tst,
        "lat": round(lat, 6),
        "lon": round(lon, 6),
        "m": 1,
        "t": trigger,
        "tid": tid,
        "tst": tst,
    }
    if batt is not None:
        doc["batt"] = batt
    if vel_kmh is not None:
        doc["vel"] = round(vel_kmh)
    return doc


def status(
    power_saving: bool = False,
    battery_optimised: bool = False,
    hibernation: bool = False,
    location_permission: int = 1,
) -> dict[str, Any]:
    """An OwnTracks Android `status` message: the settings that decide whether the app
    can keep reporting in the background."""
    return {
        "_type": "status",
        "android": {
            "hib": int(hibernation),
            "bo": int(battery_optimised),
            "loc": location_permission,
            "ps": int(power_saving),
            "wifi": 1,
        },
    }


class Phone:
    """An OwnTracks phone publishing under `base_topic` (`owntracks/{user}/{device}`)."""

    def __init__(
        self,
        device_id: str,
        base_topic: str,
        host: str,
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        *,
        tls: bool = False,
        keepalive_s: int = 60,
        max_inflight: int = 16,
        clock: Callable[[], float] = time.monotonic,
        wall_s: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        parts = base_topic.split("/")
        if len(parts) != 3 or parts[0] != "owntracks" or not all(parts):
            raise ValueError(f"an OwnTracks topic is owntracks/USER/DEVICE, not {base_topic!r}")
        self.device_id = device_id
        self.base_topic = base_topic
        self.host = host
        self.port = port
        self.max_inflight = max_inflight
        self._keepalive = keepalive_s
        self._clock = clock
        self._wall_s = wall_s
        # Messages kept until the broker acknowledges them: key -> (topic, payload, retain).
        self._queue: OrderedDict[int, tuple[str, bytes, bool]] = OrderedDict()
        self._next_key = 1
        self._inflight: dict[int, int] = {}  # mid -> key
        self._started = False
        self._closing = False
        self._connected = False
        self._refusal: str | None = None
        self._backoff_s = 1.0
        self._next_attempt = 0.0
        self._poller = select.poll()
        self._polled_fd: int | None = None
        self.published = 0  # PUBACKed by the broker
        self.connects = 0

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{parts[1]}-{parts[2]}"[:64],
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self._client.username_pw_set(username or device_id, password)
        if tls:
            self._client.tls_set()
        lwt = json.dumps({"_type": "lwt", "tst": wall_s()}, separators=(",", ":"))
        self._client.will_set(base_topic, lwt, qos=1, retain=False)
        self._client.max_inflight_messages_set(max_inflight + 4)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # -- what the driver reads -------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """Messages the broker has not acknowledged yet."""
        return len(self._queue)

    @property
    def refusal(self) -> str | None:
        return self._refusal

    def socket(self) -> Any:
        return self._client.socket()

    def wants_write(self) -> bool:
        return self._client.want_write()

    # -- messages --------------------------------------------------------------------

    def send_location(self, doc: Mapping[str, object], retain: bool = True) -> None:
        """Queue a `location` (the app publishes them retained) for the base topic."""
        self._enqueue(self.base_topic, doc, retain)

    def send_status(self, doc: Mapping[str, object]) -> None:
        self._enqueue(f"{self.base_topic}/status", doc, False)

    def _enqueue(self, topic: str, doc: Mapping[str, object], retain: bool) -> None:
        payload = json.dumps(doc, separators=(",", ":")).encode()
        self._queue[self._next_key] = (topic, payload, retain)
        self._next_key += 1

    # -- connection ------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background: `tick()` makes the attempts and retries."""
        self._closing = False
        self._refusal = None
        self._client.connect_async(self.host, self.port, self._keepalive)
        self._started = True
        self._next_attempt = self._clock()

    def connect(self, timeout_s: float = 10.0) -> None:
        deadline = self._clock() + timeout_s
        self.start()
        self._client.reconnect()
        while not self._connected:
            if self._refusal is not None:
                self._started = False
                raise ConnectionRefusedError(f"{self.device_id}: broker refused: {self._refusal}")
            if self._clock() >= deadline:
                raise TimeoutError(f"{self.device_id}: no CONNACK in {timeout_s} s")
            self.poll(0.05)

    def close(self, timeout_s: float = 3.0) -> None:
        """Send what is queued (up to `timeout_s`), then disconnect cleanly (no will)."""
        deadline = self._clock() + timeout_s
        while self._queue and self._connected and self._clock() < deadline:
            self.poll(0.05)
        self._closing = True
        if self._client.socket() is not None:
            self._client.disconnect()
        self._connected = False

    # -- driving ---------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> None:
        self._pump(timeout_s)
        self.tick()

    def service(self, readable: bool, writable: bool) -> None:
        self._io(readable, writable)
        self.tick()

    def tick(self) -> None:
        now = self._clock()
        if self._client.socket() is None:
            if self._started and not self._closing and now >= self._next_attempt:
                self._refusal = None
                try:
                    self._client.reconnect()
                except OSError as exc:
                    log.info("%s: reconnect failed: %s", self.device_id, exc)
                    self._next_attempt = now + self._backoff_s
                    self._backoff_s = min(self._backoff_s * 2, 30.0)
            return
        self._client.loop_misc()
        if self._connected:
            self._send()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Drive the connection until the broker acknowledged every queued message."""
        deadline = self._clock() + timeout_s
        while self._queue:
            if self._clock() >= deadline:
                return False
            self.poll(0.05)
        return True

    def _send(self) -> None:
        waiting = set(self._inflight.values())
        for key, (topic, payload, retain) in list(self._queue.items()):
            if len(self._inflight) >= self.max_inflight:
                return
            if key in waiting:
                continue
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            self._inflight[info.mid] = key

    def _pump(self, timeout_s: float) -> None:
        sock = self._client.socket()
        if sock is None:
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
        if client.socket() is not None and (writable or client.want_write()):
            client.loop_write()

    # paho callbacks (VERSION2 signatures), on the driving thread.

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
        # The queue alone decides what goes out again.
        client.drop_out_messages()
        self._inflight.clear()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected = False
        self._inflight.clear()
        if self._closing:
            return
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
        key = self._inflight.pop(mid, None)
        if key is None:
            return
        if reason.is_failure:
            log.warning("%s: broker refused a message: %s", self.device_id, reason)
            return
        if self._queue.pop(key, None) is not None:
            self.published += 1
