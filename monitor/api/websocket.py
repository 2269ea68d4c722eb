"""The websocket server protocol: uvicorn's, with the frames of one turn written at once.

uvicorn writes every websocket message to the socket as it is sent: one system call,
one loopback or network delivery and one wake-up of the client per frame. A burst of
alert events (5,000 alerts escalating within a minute or two, pushed to 50 operators)
is thousands of frames a second, and those writes were the largest single cost in
the service's event loop under that load (7 % of its samples, measured with py-spy).

Here a text or binary message is framed at once, in order, into the connection's
outgoing buffer, and the buffer is written once the event loop has finished its
current turn: every event a client's relay sends in one go leaves in one write. The
messages, their order and their framing are unchanged; only the segmentation of the
byte stream differs. Everything else (the handshake, close, pings and pongs) goes
through uvicorn as before, and writes the buffered frames ahead of itself, because
every write takes the whole of the connection's buffer in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

__all__ = ["LiveProtocol"]


class LiveProtocol(WebSocketsSansIOProtocol):
    _flush_pending: asyncio.Handle | None = None

    async def send(self, message: Any) -> None:
        if (
            message["type"] != "websocket.send"
            or not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
        ):
            self._flush()
            await super().send(message)
            return
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        try:
            if message.get("bytes") is not None:
                self.conn.send_binary(message["bytes"])
            elif message.get("text") is not None:
                self.conn.send_text(message["text"].encode())
        except InvalidState:
            raise ClientDisconnected() from None
        if self._flush_pending is None:
            self._flush_pending = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_pending is not None:
            self._flush_pending.cancel()
            self._flush_pending = None
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._flush_pending is not None:
            self._flush_pending.cancel()
            self._flush_pending = None
        super().connection_lost(exc)
