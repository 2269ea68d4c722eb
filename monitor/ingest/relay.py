"""The service's broker connection, in a process of its own.

The service is one Python interpreter, and at 10,000 fixes/s its interpreter lock was
the bottleneck while the machine had CPU to spare: paho's network thread (reading
PUBLISH packets, building message objects, waking the event loop once per message)
and paho's publishing (an object and a lock per QoS 1 `ack`) took about 14 % of it,
measured. Here, paho runs in a child process and talks to the service over its stdin
and stdout in frames, each carrying many messages:

- to the service: `("m", topic, payload, qos, mid, retain, user properties, repeated
  property names, received_at in µs since the epoch, generation, upload)` for each
  message, and `("s", 1|0)` when the subscriptions are in place or the connection is
  lost. `upload` is a device upload already decoded (`codec.upload_to_wire`, or its
  whole-upload fault), or None: decoding was a fifth of the service's interpreter time,
  and this process has CPU to spare. The service still checks the device and the
  signature first, and decodes itself whatever comes without it;
- from the service: first the configuration, then `("p", topic, payload, retain)` to
  publish at QoS 1 and `("a", mid, qos, generation)` to PUBACK a committed message.

A message is acknowledged to the broker only on the service's word, after its content
is committed, and only on the connection it came on (its generation): a PUBACK for a
message of an earlier connection would acknowledge some other message. The session is
persistent (clean_start false, long expiry), so whatever the service has not
acknowledged is delivered again after a reconnect or a restart of this process.

Frames are `marshal` data behind a 4-byte length: plain values only, no code runs on
loading, and it is the fastest codec for them in the standard library. The process
exits when its stdin closes (the service stopped, or died).
"""

from __future__ import annotations

import logging
import marshal
import os
import signal
import ssl
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from monitor.ingest.codec import (
    UploadFault,
    WireUpload,
    decode_upload,
    fault_to_wire,
    upload_to_wire,
)
from monitor.ingest.wire import TopicError, parse_topic

__all__ = ["encode_frame", "main"]

log = logging.getLogger("monitor.ingest.relay")

_SESSION_EXPIRY_S = 7 * 24 * 3600
_HEADER = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_frame(items: Any) -> bytes:
    body = marshal.dumps(items)
    return len(body).to_bytes(_HEADER, "big") + body


def _read_frame(stream: IO[bytes]) -> Any | None:
    """The next frame, or None at the end of the stream."""
    header = _read_exactly(stream, _HEADER)
    if header is None:
        return None
    body = _read_exactly(stream, int.from_bytes(header, "big"))
    if body is None:
        return None
    return marshal.loads(body)


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _Relay:
    def __init__(self, config: dict[str, Any], out: IO[bytes]) -> None:
        self._config = config
        self._out = out
        self._subscriptions: list[str] = list(config["subscriptions"])
        # Unique across restarts of this process (the service gives each a new base).
        self._generation: int = int(config["generation"])
        self._pending: list[tuple[Any, ...]] = []
        self._ready = threading.Condition()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config["client_id"],
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if config.get("username"):
            client.username_pw_set(config["username"], config.get("password"))
        if config.get("tls"):
            client.tls_set(ca_certs=config.get("ca_file"), cert_reqs=ssl.CERT_REQUIRED)
        # No in-flight limit of our own: with one, paho walks every message in flight on
        # each PUBACK, and the broker takes our QoS 1 acks without one (MQTT 5's default
        # receive maximum, 65,535; 20,000 at once were all acknowledged here).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)  # unbounded: acks and commands are never dropped
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        self._client = client

    # to the service (a writer thread, so paho's thread never waits on the pipe)

    def _emit(self, item: tuple[Any, ...]) -> None:
        with self._ready:
            self._pending.append(item)
            if len(self._pending) == 1:
                self._ready.notify()

    def write_loop(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                items, self._pending = self._pending, []
            try:
                try:
                    frame = encode_frame(items)
                except ValueError:  # a record marshal cannot carry: the service decodes
                    frame = encode_frame([_undecoded(item) for item in items])
                self._out.write(frame)
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError):
                os._exit(0)  # the service is gone; what it did not acknowledge comes again

    # paho callbacks (network thread)

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self._generation += 1
        log.info("connected to the broker at %s:%s", self._config["host"], self._config["port"])
        if not self._subscriptions:
            self._emit(("s", 1))  # publishing only (a process that does not ingest)
            return
        client.subscribe([(topic, 1) for topic in self._subscriptions])

    def _subscribed(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        failures = [r for r in reasons if r.is_failure]
        if failures:
            log.error("subscription refused: %s", failures)
            return
        self._emit(("s", 1))

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._emit(("s", 0))
        log.warning("disconnected from the broker: %s", reason)

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, str] = {}
        repeated: list[str] = []
        user = getattr(msg.properties, "UserProperty", None) if msg.properties else None
        for key, value in user or []:
            if key in props:
                repeated.append(key)
            else:
                props[key] = value
        payload = bytes(msg.payload)
        at_us = time.time_ns() // 1000
        self._emit(
            (
                "m",
                msg.topic,
                payload,
                msg.qos,
                msg.mid,
                bool(msg.retain),
                props,
                tuple(repeated),
                at_us,
                self._generation,
                _decoded(msg.topic, payload, at_us),
            )
        )

    # from the service

    def command(self, items: list[tuple[Any, ...]]) -> None:
        generation = self._generation
        for item in items:
            if item[0] == "p":
                self._client.publish(item[1], item[2], qos=1, retain=bool(item[3]))
            elif item[0] == "a":
                _kind, mid, qos, came_on = item
                if qos > 0 and came_on == generation:
                    self._client.ack(mid, qos)

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = _SESSION_EXPIRY_S
        self._client.connect_async(
            self._config["host"],
            self._config["port"],
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _decoded(topic: str, payload: bytes, at_us: int) -> WireUpload | None:
    """A device upload decoded ahead of the service, or None for anything else."""
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return None
    if parsed.channel != "up" or parsed.device_id is None:
        return None
    received_at = _EPOCH + timedelta(microseconds=at_us)
    try:
        return upload_to_wire(decode_upload(parsed.device_id, topic, payload, received_at))
    except UploadFault as fault:
        return fault_to_wire(fault)
    except Exception:
        log.exception("decoding an upload on %s failed; the service will decode it", topic)
        return None


def _undecoded(item: tuple[Any, ...]) -> tuple[Any, ...]:
    if item[0] != "m":
        return item
    try:
        marshal.dumps(item)
    except ValueError:
        return (*item[:-1], None)
    return item


def main() -> int:
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    # Ctrl-C in a terminal reaches the whole process group: the service decides when
    # this process ends (by closing its stdin), after its last acknowledgements.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = _read_frame(stdin)
    if not isinstance(config, dict):
        print("monitor relay: expected the configuration first", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=str(config.get("log_level", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    relay = _Relay(config, stdout)
    threading.Thread(target=relay.write_loop, name="relay-writer", daemon=True).start()
    relay.start()
    while (items := _read_frame(stdin)) is not None:
        relay.command(items)
    relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
