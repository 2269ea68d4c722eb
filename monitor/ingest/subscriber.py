"""The service's MQTT connection: a persistent session, QoS 1, manual acknowledgement.

A message is acknowledged to the broker (PUBACK) only after what it carried is committed
to the database, so a crash before the commit makes the broker deliver it again. The
session is persistent (clean_start false, long expiry), so messages published while the
service is down wait in the broker. Devices resend whatever the backend has not
acknowledged on their `ack` topic, so nothing depends on the broker's queue alone.

The connection itself lives in a child process (`monitor.ingest.relay`, which says
why); this is the service's side of it. Messages arrive on the event loop in batches
(one read of the pipe carries many), and acks and publishes made during one turn of
the loop leave in one write. If the child dies, it is started again: the broker
delivers whatever was not acknowledged once more, and duplicates are recognised by
their (device_id, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.config import MqttEndpoint
from monitor.ingest.codec import WireUpload
from monitor.ingest.relay import encode_frame
from monitor.ingest.wire import SUBSCRIPTIONS

__all__ = ["Message", "Subscriber"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RESTART_DELAY_S = 1.0
_STOP_TIMEOUT_S = 5.0
# Each start of the child numbers its connections from a new base, so an ack meant for
# a message of an earlier child never matches a connection of a later one.
_GENERATIONS_PER_START = 1 << 32


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
    # A device upload as the relay decoded it (codec.upload_to_wire), or None.
    upload: WireUpload | None = None
    # Cluster mode: the partition the message belongs to, and the stream message to
    # acknowledge once its content is committed (monitor.ingest.stream).
    partition: int | None = None
    handle: Any = None


class Subscriber:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        on_message: Callable[[Message], None],
        subscriptions: tuple[str, ...] = SUBSCRIPTIONS,
        ca_file: str | None = None,
        log_level: str = "INFO",
    ) -> None:
        self._config: dict[str, Any] = {
            "host": endpoint.host,
            "port": endpoint.port,
            "username": endpoint.username,
            "password": endpoint.password,
            "tls": endpoint.tls,
            "ca_file": ca_file,
            "client_id": client_id,
            "subscriptions": list(subscriptions),
            "log_level": log_level,
        }
        self._on_message = on_message
        self._starts = 0
        self._stopping = False
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # Acks and publishes not yet written to the child (kept while it restarts).
        self._outbox: list[tuple[Any, ...]] = []
        self._flush_due = False
        # Set while subscribed (read by /healthz).
        self.subscribed = threading.Event()

    async def start(self) -> None:
        """Start the relay (again, after a `stop`: cluster mode's bridge does so when it
        takes over the broker's subscription)."""
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._keep_running(), name="mqtt-relay")

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            self._flush()
            proc.stdin.close()  # the child disconnects from the broker and exits
            try:
                await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("the broker relay did not stop; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.subscribed.clear()

    def ack(self, messages: list[Message]) -> None:
        """PUBACK messages whose content is committed. A message that came on an earlier
        connection is not acknowledged (the child checks): the broker delivers it again
        and the duplicate is recognised by its (device_id, seq)."""
        self._send([("a", m.mid, m.qos, m.generation) for m in messages if m.qos > 0])

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._send([("p", topic, payload, retain)])

    # the child

    async def _keep_running(self) -> None:
        while not self._stopping:
            self._starts += 1
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "monitor.ingest.relay",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 20,
            )
            assert proc.stdin is not None
            assert proc.stdout is not None
            generation = self._starts * _GENERATIONS_PER_START
            proc.stdin.write(encode_frame({**self._config, "generation": generation}))
            self._proc = proc
            self._flush()  # what was published while no child ran
            try:
                await self._read(proc.stdout)
            finally:
                self.subscribed.clear()
            code = await proc.wait()
            self._proc = None
            if self._stopping:
                return
            log.error("the broker relay exited (status %s); starting it again", code)
            await asyncio.sleep(_RESTART_DELAY_S)

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        on_message = self._on_message
        while True:
            try:
                header = await stdout.readexactly(4)
                body = await stdout.readexactly(int.from_bytes(header, "big"))
            except asyncio.IncompleteReadError:
                return
            for item in marshal.loads(body):
                if item[0] == "m":
                    _k, topic, payload, qos, mid, retain, props, repeated, at_us, gen, up = item
                    on_message(
                        Message(
                            topic=topic,
                            payload=payload,
                            qos=qos,
                            mid=mid,
                            retain=retain,
                            user_properties=props,
                            repeated_properties=frozenset(repeated),
                            received_at=_EPOCH + timedelta(microseconds=at_us),
                            generation=gen,
                            upload=up,
                        )
                    )
                elif item[1]:
                    self.subscribed.set()
                else:
                    self.subscribed.clear()

    def _send(self, items: list[tuple[Any, ...]]) -> None:
        if not items:
            return
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._send, items)
            return
        self._outbox.extend(items)
        if loop is not None and not self._flush_due:
            # Everything sent during this turn of the loop goes in one write.
            self._flush_due = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        proc = self._proc
        if not self._outbox or proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        proc.stdin.write(encode_frame(self._outbox))
        self._outbox = []
