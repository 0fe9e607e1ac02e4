"""The gateway's WebSocket protocol: uvicorn's sans-I/O implementation, with one fix.

Why sans-I/O: the legacy `websockets` implementation keeps three tasks per socket (transfer,
keep-alive, close) plus its stream reader; sans-I/O keeps none (its keep-alive is a timer). On
this machine that is ~6.6 KiB less per idle socket, of a budget of 40 KiB.

The fix: sans-I/O makes every ASGI send, the close included, wait until the transport is under
its high-water mark. A client that stopped reading keeps it above for good, so the 4429 close the
gateway sends to exactly that client never left (the slow-client test saw no close frame). Here a
close frame is queued behind the data even then; the client reads it when it reads again, and the
close timer aborts the TCP connection if it has not completed the close handshake by then.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class StreamProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.close":
            await super().send(message)
            return
        if not self.writable.is_set() and not self.disconnected:
            # Paused: let this one message through with an event of its own, so the senders
            # waiting on the real one (a pump blocked mid-send) stay blocked; connection_lost() or
            # resume_writing() wakes them later. Nothing awaits in between (Event.wait returns at
            # once when set), so the close frame is written before anything else can run.
            paused = self.writable
            self.writable = asyncio.Event()
            self.writable.set()
            try:
                await super().send(message)
            finally:
                self.writable = paused
        else:
            await super().send(message)
        # A peer that never completes the close handshake: uvicorn's timer calls transport.close(),
        # which first waits for the send buffer to drain — forever for a client that stopped
        # reading. Abort instead: the socket and its buffer go when the close timeout ends.
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)
