"""The service's MQTT connection: a persistent session, QoS 1, manual acknowledgement.

A message is acknowledged to the broker (PUBACK) only after what it carried is committed
to the database, so a crash before the commit makes the broker deliver it again. The
session is persistent (clean_start false, long expiry), so messages published while the
service is down wait in the broker. Devices resend whatever the backend has not
acknowledged on their `ack` topic, so nothing depends on the broker's queue alone.

paho runs its network loop in its own thread; received messages are handed to the
caller's callback, which must be quick (it enqueues onto the asyncio loop).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from monitor.config import MqttEndpoint
from monitor.ingest.wire import SUBSCRIPTIONS

__all__ = ["Message", "Subscriber"]

log = logging.getLogger(__name__)

_SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    user_properties: dict[str, str]
    received_at: datetime
    generation: int  # which connection it came on: an ack is only valid on that one
    # User properties given more than once (a second `sig` must not go unnoticed).
    repeated_properties: frozenset[str] = frozenset()


class Subscriber:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        on_message: Callable[[Message], None],
        subscriptions: tuple[str, ...] = SUBSCRIPTIONS,
        ca_file: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._on_message = on_message
        self._subscriptions = subscriptions
        self._generation = 0
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if endpoint.username:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        # No in-flight limit of our own: with one, paho walks every message in flight on
        # each PUBACK (a thousand acks a second made that a few per cent of the service,
        # measured), and the broker takes our QoS 1 acks without one (MQTT 5's default
        # receive maximum, 65,535; 20,000 at once were all acknowledged here).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)  # unbounded: acks and commands are never dropped
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        self._client = client

    # paho callbacks (network thread)

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1
        log.info("connected to the broker at %s:%s", self._endpoint.host, self._endpoint.port)
        if not self._subscriptions:
            self.subscribed.set()  # publishing only (a process that does not ingest)
            return
        client.subscribe([(topic, 1) for topic in self._subscriptions])

    def _subscribed(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        failures = [r for r in reasons if r.is_failure]
        if failures:
            log.error("subscription refused: %s", failures)
            return
        self.subscribed.set()

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.subscribed.clear()
        log.warning("disconnected from the broker: %s", reason)

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, str] = {}
        repeated: set[str] = set()
        user = getattr(msg.properties, "UserProperty", None) if msg.properties else None
        for key, value in user or []:
            if key in props:
                repeated.add(key)
            props.setdefault(key, value)
        self._on_message(
            Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                mid=msg.mid,
                retain=bool(msg.retain),
                user_properties=props,
                repeated_properties=frozenset(repeated),
                received_at=datetime.now(UTC),
                generation=self._generation,
            )
        )

    # called from the service

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = _SESSION_EXPIRY_S
        self._client.connect_async(
            self._endpoint.host,
            self._endpoint.port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, messages: list[Message]) -> None:
        """PUBACK messages whose content is committed. A message that came on an earlier
        connection is not acknowledged: the broker delivers it again and the duplicate
        is recognised by its (device_id, seq)."""
        generation = self._generation
        for m in messages:
            if m.qos > 0 and m.generation == generation:
                self._client.ack(m.mid, m.qos)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain)
