"""One live WebSocket connection: the single send path for replay and live entries.

The pump reads the agent's queue after the connection's last sent cursor whenever it is woken
(connect, a QueueAdvanced signal) or the safety poll elapses, so a missed signal costs latency
and never data, and the replay/live seam cannot drop or duplicate. Live-only frames wait in a
bounded buffer. A send that does not complete within the send timeout closes the socket 4429.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from im_runtime.logs import log
from prometheus_client import Counter
from pymongo.errors import PyMongoError
from starlette.websockets import WebSocket

from ..settings import DeliverySettings
from ..store import QueueStore

logger = logging.getLogger("im_delivery.connection")

FRAMES_SENT = Counter("im_delivery_frames_sent_total", "Queue frames sent to clients")
CLOSED = Counter("im_delivery_connections_closed_total", "Connections closed by the gateway", ["code"])

CLOSE_AUTH = 4401
CLOSE_NOT_RETAINED = 4409
CLOSE_TOO_SLOW = 4429
CLOSE_RESTART = 1012


class CloseConnection(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(eq=False, slots=True)
class StreamConnection:
    connection_id: str
    tenant_id: str
    agent_id: str
    device_id: str
    websocket: WebSocket
    store: QueueStore
    settings: DeliverySettings
    last_sent: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    live: deque = field(default_factory=deque)
    unacked: deque = field(default_factory=deque)  # cursors sent here and not yet acknowledged
    closing: int | None = None
    poll_due: bool = True  # set by the hub's safety poll: re-read even without a signal
    _close_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def signal(self) -> None:
        self.wake.set()

    def safety_poll(self) -> None:
        self.poll_due = True
        self.wake.set()

    def acknowledged(self, cursor: int) -> None:
        while self.unacked and self.unacked[0] <= cursor:
            self.unacked.popleft()
        self.wake.set()

    async def window(self) -> int:
        """How many more queued frames may be sent; waits for an ack when the window is full."""
        room = self.settings.max_unacked - len(self.unacked)
        if room > 0:
            return room
        try:
            await asyncio.wait_for(self._room(), self.settings.send_timeout_s)
        except TimeoutError:
            raise CloseConnection(CLOSE_TOO_SLOW, "too many unacknowledged frames") from None
        return self.settings.max_unacked - len(self.unacked)

    async def _room(self) -> None:
        while len(self.unacked) >= self.settings.max_unacked:
            self.wake.clear()
            await self.wake.wait()

    def push_live(self, frame: dict[str, Any]) -> None:
        if len(self.live) >= self.settings.live_buffer:
            self.close_soon(CLOSE_TOO_SLOW, "too slow")
            return
        self.live.append(frame)
        self.wake.set()

    def close_soon(self, code: int, reason: str) -> None:
        if self.closing is None:
            asyncio.get_running_loop().create_task(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        async with self._close_lock:
            if self.closing is not None:
                return
            self.closing = code
        self.wake.set()  # the pump stops
        CLOSED.labels(str(code)).inc()
        log(logger, logging.INFO, "closing connection", connection_id=self.connection_id,
            agent_id=self.agent_id, code=code, reason=reason)
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), self.settings.close_timeout_s)
        except Exception:  # noqa: BLE001 - the peer is gone or stuck: the transport is dropped
            pass

    async def pump(self) -> None:
        """Sends every entry after `last_sent`, then live frames, until the connection closes."""
        try:
            while self.closing is None:
                self.wake.clear()
                if self.poll_due:  # the safety poll also notices a truncated queue
                    self.poll_due = False
                    await self.ensure_retained()
                limit = min(self.settings.replay_batch, await self.window())
                entries = await self.store.entries_after(self.tenant_id, self.agent_id, self.last_sent, limit)
                if entries:
                    wire = [e.wire() for e in entries]
                    await self.send(wire[0] if len(wire) == 1 else {"type": "batch", "frames": wire})
                    self.last_sent = entries[-1].cursor
                    self.unacked.extend(e.cursor for e in entries)
                    FRAMES_SENT.inc(len(entries))
                    if len(entries) == limit:
                        continue  # more to replay: no waiting
                while self.live and self.closing is None:
                    await self.send(self.live.popleft())
                # Woken by a signal, a live frame, an ack, or the hub's safety poll (one timer for
                # all connections: an idle socket holds no timer or task of its own beyond this).
                await self.wake.wait()
        except CloseConnection as close:
            await self.close(close.code, close.reason)
        except PyMongoError as exc:
            # MongoDB away: drop this socket; the client reconnects with its cursor and loses nothing.
            log(logger, logging.WARNING, "queue read failed", connection_id=self.connection_id,
                error=type(exc).__name__)
            await self.close(CLOSE_RESTART, "try again")

    async def ensure_retained(self) -> None:
        head = await self.store.head(self.tenant_id, self.agent_id)
        if self.last_sent < int(head.get("pruned_through", 0)):
            raise CloseConnection(CLOSE_NOT_RETAINED, "cursor no longer retained")

    async def send(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        try:
            await asyncio.wait_for(self.websocket.send_text(text), self.settings.send_timeout_s)
        except TimeoutError:
            raise CloseConnection(CLOSE_TOO_SLOW, "too slow") from None
