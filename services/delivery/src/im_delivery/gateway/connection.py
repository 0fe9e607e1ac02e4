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
from dataclasses import dataclass
from typing import Any

from im_contracts.frames import CloseCode
from im_runtime.logs import log, trace_id
from prometheus_client import Counter
from pymongo.errors import PyMongoError
from starlette.websockets import WebSocket

from ..settings import DeliverySettings
from ..store import QueueStore
from .ranges import more_to_send, must_check_retention, signalled_through

logger = logging.getLogger("im_delivery.connection")

FRAMES_SENT = Counter("im_delivery_frames_sent_total", "Queue frames sent to clients (messages delivered)",
                      ["gateway"])
CLOSED = Counter("im_delivery_connections_closed_total", "Connections closed by the gateway", ["code"])



class CloseConnection(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(eq=False, slots=True)
class StreamConnection:
    """An idle connection holds no task, event, lock or buffer of its own: a pump task exists only
    while there is something to send (a signal, a live frame, the hub's safety poll), and the
    live buffer, unacked window and room event are created on first use: memory per idle socket."""

    connection_id: str
    tenant_id: str
    agent_id: str
    device_id: str
    websocket: WebSocket
    store: QueueStore
    settings: DeliverySettings
    last_sent: int = 0
    # The highest cursor a QueueAdvanced signal announced: the queue writer signals after its
    # insert, so every entry up to it is written (cursors without one are gaps) and a read up to it
    # is complete. Reads are bounded ranges of cursors, never "everything after": on a long queue an
    # open range costs the database the whole rest of the queue per read.
    durable: int = 0
    acked: int = 0  # the highest cursor this socket acknowledged (a repeat writes nothing)
    live: deque | None = None
    unacked: deque | None = None  # cursors sent here and not yet acknowledged
    closing: int | None = None
    # Set by start(), once the resume cursor is known: a signal that arrives while the connection
    # is being set up (it is routed from before its replay is read) must not start a pump from
    # cursor 0 — that pump's sends were then overwritten by the resume cursor and sent again.
    started: bool = False
    poll_due: bool = True  # set by the hub's safety poll: re-read even without a signal
    reader: asyncio.Task | None = None  # the handler task reading the client; cancelled on close
    _pump: asyncio.Task | None = None
    _again: bool = False  # woken while the pump ran: it makes one more pass
    _room: asyncio.Event | None = None  # exists only while the pump waits for acks

    @property
    def pumping(self) -> bool:
        """A pump task is sending (an idle connection has none)."""
        return self._pump is not None

    def signal(self, cursor: int = 0) -> None:
        if cursor > self.durable:
            self.durable = cursor
        self._wake()

    def safety_poll(self) -> None:
        self.poll_due = True
        self._wake()

    def acknowledged(self, cursor: int) -> None:
        unacked = self.unacked
        while unacked and unacked[0] <= cursor:
            unacked.popleft()
        if self._room is not None:
            self._room.set()

    def start(self) -> None:
        """First pass: the replay after the resume cursor."""
        self.started = True
        self._wake()

    def _wake(self) -> None:
        if self.closing is not None or not self.started:
            return  # not started: start() reads everything after the resume cursor anyway
        if self._pump is not None:
            self._again = True
            return
        self._pump = asyncio.get_running_loop().create_task(self.pump())

    async def window(self) -> int:
        """How many more queued frames may be sent; waits for an ack when the window is full."""
        room = self.settings.max_unacked - len(self.unacked or ())
        if room > 0:
            return room
        try:
            await asyncio.wait_for(self._wait_room(), self.settings.send_timeout_s)
        except TimeoutError:
            raise CloseConnection(CloseCode.TOO_SLOW, "too many unacknowledged frames") from None
        finally:
            self._room = None
        return self.settings.max_unacked - len(self.unacked or ())

    async def _wait_room(self) -> None:
        while len(self.unacked or ()) >= self.settings.max_unacked and self.closing is None:
            self._room = asyncio.Event()
            await self._room.wait()

    def push_live(self, frame: dict[str, Any]) -> None:
        if self.live is None:
            self.live = deque()
        if len(self.live) >= self.settings.live_buffer:
            self.close_soon(CloseCode.TOO_SLOW, "too slow")
            return
        self.live.append(frame)
        self._wake()

    def close_soon(self, code: int, reason: str) -> None:
        if self.closing is None:
            asyncio.get_running_loop().create_task(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if self.closing is not None:
            return
        self.closing = code  # set before any await: one close only, and pumps stop
        if self._room is not None:
            self._room.set()
        CLOSED.labels(str(code)).inc()
        log(logger, logging.INFO, "closing connection", connection_id=self.connection_id,
            agent_id=self.agent_id, code=code, reason=reason)
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), self.settings.close_timeout_s)
        except Exception:  # noqa: BLE001 - the peer is gone or stuck: the transport is dropped
            pass
        reader = self.reader
        if reader is not None and reader is not asyncio.current_task() and not reader.done():
            reader.cancel()  # stop reading the client: the connection is over

    def stop(self) -> None:
        """The handler ends: a pump still running goes with it."""
        if self._pump is not None:
            self._pump.cancel()

    async def pump(self) -> None:
        """Sends every entry after `last_sent`, then live frames, while there is anything to send;
        then the task ends (the next signal, live frame or safety poll starts another)."""
        try:
            while self.closing is None:
                self._again = False
                if self.poll_due:  # the safety poll also notices a truncated queue
                    self.poll_due = False
                    await self.ensure_retained()
                limit = min(self.settings.replay_batch, await self.window())
                entries, through = await self.read(limit)
                if must_check_retention(self.last_sent, entries[0].cursor if entries else None, through):
                    await self.ensure_retained()
                if entries:
                    wire = [e.wire() for e in entries]
                    # Recorded before the send returns: the client may ack these frames before it does
                    # (acks are bounded by last_sent). A failed send closes the connection anyway.
                    self.last_sent = entries[-1].cursor
                    if self.unacked is None:
                        self.unacked = deque()
                    self.unacked.extend(e.cursor for e in entries)
                    await self.send(wire[0] if len(wire) == 1 else {"type": "batch", "frames": wire})
                    FRAMES_SENT.labels(self.settings.gateway_id).inc(len(entries))
                    self.log_sent(entries)
                if through > self.last_sent:
                    self.last_sent = through  # read through a gap: nothing is missing below `through`
                if more_to_send(len(entries), limit, self.durable, self.last_sent):
                    continue  # more to replay: no waiting
                while self.live and self.closing is None:
                    await self.send(self.live.popleft())
                if not self._again:
                    break
        except CloseConnection as close:
            await self.close(close.code, close.reason)
        except PyMongoError as exc:
            # MongoDB away: drop this socket; the client reconnects with its cursor and loses nothing.
            log(logger, logging.WARNING, "queue read failed", connection_id=self.connection_id,
                error=type(exc).__name__)
            await self.close(CloseCode.RESTART, "try again")
        finally:
            self._pump = None
            if self.live is not None and not self.live:
                self.live = None  # an idle socket keeps no buffer
            if self.unacked is not None and not self.unacked:
                self.unacked = None

    async def read(self, limit: int) -> tuple[list, int]:
        """The next entries after `last_sent` (at most `limit`), and the cursor the read is known
        complete through (0: only as far as its last entry).

        Up to a signalled cursor the range (last_sent, min(durable, last_sent + limit)] is read: one
        bounded index range. Without one (the replay at connect, the safety poll) the next `limit`
        cursors are read; if fewer come back — the tail of the queue, or a gap — one open read
        finds what lies beyond (few entries at a tail; a gap costs one longer read)."""
        start = self.last_sent
        through = signalled_through(start, self.durable, limit)
        if through is not None:
            return await self.store.entries_after(self.tenant_id, self.agent_id, start, limit, through=through), through
        entries = await self.store.entries_after(self.tenant_id, self.agent_id, start, limit, through=start + limit)
        if len(entries) < limit:
            # From `start` again, not from the bounded read's end: an entry of that range may have
            # landed in between, and reading past it would skip it.
            entries = await self.store.entries_after(self.tenant_id, self.agent_id, start, limit)
        return entries, 0

    def log_sent(self, entries: list) -> None:
        """One line per send, carrying the trace ids of the requests behind the frames (ids only)."""
        traces = list(dict.fromkeys(e.trace_id for e in entries if e.trace_id))
        token = trace_id.set(traces[0] if traces else None)
        try:
            log(logger, logging.INFO, "frames sent", connection_id=self.connection_id, tenant_id=self.tenant_id,
                agent_id=self.agent_id, first_cursor=entries[0].cursor, last_cursor=entries[-1].cursor,
                frames=len(entries), trace_ids=traces)  # every one: grep finds any request's frame
        finally:
            trace_id.reset(token)

    async def ensure_retained(self) -> None:
        head = await self.store.head(self.tenant_id, self.agent_id)
        if self.last_sent < int(head.get("pruned_through", 0)):
            raise CloseConnection(CloseCode.NOT_RETAINED, "cursor no longer retained")

    async def send(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        try:
            await asyncio.wait_for(self.websocket.send_text(text), self.settings.send_timeout_s)
        except TimeoutError:
            raise CloseConnection(CloseCode.TOO_SLOW, "too slow") from None
        except Exception:
            if self.closing is not None:  # closed by another path while this send waited to write
                raise CloseConnection(self.closing, "closed") from None
            raise
