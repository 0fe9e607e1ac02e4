"""The gateway's WebSocket protocol: uvicorn's sans-I/O implementation, with one fix.

Why sans-I/O: the legacy `websockets` implementation keeps three tasks per socket (transfer,
keep-alive, close) plus its stream reader; sans-I/O keeps none (its keep-alive is a timer). On
this machine that is ~6.6 KiB less per idle socket (issue 8: ≤ 40 KiB per idle socket).

The fix: sans-I/O makes every ASGI send, the close included, wait until the transport is under
its high-water mark. A client that stopped reading keeps it above for good, so the 4429 close the
gateway sends to exactly that client never left (the slow-client test saw no close frame). Here a
close frame is queued behind the data even then; the client reads it when it reads again, and the
protocol's own close timer ends the TCP connection if it never does.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class StreamProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.close" or self.writable.is_set() or self.disconnected:
            await super().send(message)
            return
        # Paused: let this one message through. No await happens between set() and the write
        # (Event.wait returns at once when set), so no other sender slips through with it.
        self.writable.set()
        try:
            await super().send(message)
        finally:
            if not self.disconnected:
                self.writable.clear()  # still over the high-water mark: resume_writing() sets it
