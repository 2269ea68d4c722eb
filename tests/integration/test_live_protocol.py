"""The websocket protocol the service runs under (monitor.api.websocket), on a real
uvicorn on loopback: frames sent in one turn of the event loop leave in one write, and
nothing about the messages changes (all of them, in order, before a close)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
import websockets.sync.client as ws_client
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed

from monitor.api.websocket import LiveProtocol
from tests.servers import free_port, wait_for

BURSTS = 20
PER_BURST = 100


@dataclass
class Served:
    port: int
    writes: list[int] = field(default_factory=list)  # transport writes per connection
    outcome: list[str] = field(default_factory=list)  # how each handler ended
    go: threading.Event = field(default_factory=threading.Event)


class _Counting(LiveProtocol):
    """LiveProtocol, counting what reaches the socket."""

    served: Served

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.served.writes.append(0)
        self.transport = _Counted(transport, self.served.writes, len(self.served.writes) - 1)


class _Counted:
    """A transport that counts its writes (uvloop's are read-only attributes)."""

    def __init__(self, transport: Any, writes: list[int], index: int) -> None:
        self._transport = transport
        self._writes = writes
        self._index = index

    def write(self, data: bytes) -> None:
        self._writes[self._index] += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def _bursts(websocket: WebSocket) -> None:
    served: Served = websocket.app.state.served
    await websocket.accept()
    mode = websocket.query_params.get("mode", "bursts")
    try:
        await asyncio.to_thread(served.go.wait, 10)  # the test's client is connected
        n = 0
        for _ in range(BURSTS):
            for _ in range(PER_BURST):
                n += 1
                await websocket.send_text(f'{{"n":{n}}}')
            # Paced when the client leaves part-way: the handler must still be sending
            # when the client goes, not waiting for a condition.
            await asyncio.sleep(0.02 if mode == "gone" else 0)
        if mode == "close":
            await websocket.close(code=4008, reason="too slow to keep up; reconnect")
            served.outcome.append("closed")
            return
        await websocket.receive_text()  # until the client goes
        served.outcome.append("done")
    except WebSocketDisconnect:
        served.outcome.append("disconnect")


@pytest.fixture
def served() -> Iterator[Served]:
    served = Served(free_port())
    app = Starlette(routes=[WebSocketRoute("/ws", _bursts)])
    app.state.served = served
    protocol = type("Counting", (_Counting,), {"served": served})
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=served.port,
        ws=protocol,
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn did not start")
    yield served
    server.should_exit = True
    thread.join(10)


def test_every_message_arrives_in_order_in_far_fewer_writes(served: Served) -> None:
    with ws_client.connect(f"ws://127.0.0.1:{served.port}/ws") as ws:
        served.go.set()
        got = [ws.recv(timeout=10) for _ in range(BURSTS * PER_BURST)]
    assert got == [f'{{"n":{n}}}' for n in range(1, BURSTS * PER_BURST + 1)]
    # The handshake, then about one write per burst (a burst may span a few turns if
    # the socket pushes back), rather than one per message.
    assert 1 < served.writes[0] <= 1 + 3 * BURSTS, served.writes


def test_a_close_after_a_burst_arrives_after_every_message(served: Served) -> None:
    with ws_client.connect(f"ws://127.0.0.1:{served.port}/ws?mode=close") as ws:
        served.go.set()
        got: list[str | bytes] = []
        with pytest.raises(ConnectionClosed) as closed:
            _receive_until_closed(ws, got)
    assert len(got) == BURSTS * PER_BURST
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4008
    assert closed.value.rcvd.reason == "too slow to keep up; reconnect"
    wait_for(lambda: served.outcome == ["closed"], 10, f"handler ended {served.outcome}")


def _receive_until_closed(ws: Any, got: list[str | bytes]) -> None:
    while True:
        got.append(ws.recv(timeout=10))


def test_a_client_that_goes_away_ends_the_handler(served: Served) -> None:
    # Not waiting for the server's answer to the client's close (10 s by default).
    with ws_client.connect(f"ws://127.0.0.1:{served.port}/ws?mode=gone", close_timeout=0.2) as ws:
        served.go.set()
        ws.recv(timeout=10)
    # The sends that follow fail as a disconnect, as they do with uvicorn's own protocol,
    # rather than buffering for a client that is gone.
    wait_for(lambda: served.outcome == ["disconnect"], 10, f"handler ended {served.outcome}")
