"""`GET /v1/stream`: authenticate (single-use ticket or `bearer.<JWT>` subprotocol), register the
connection, resume from the right cursor, then pump the queue and read the client's frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import WebSocket
from im_contracts.frames import CloseCode
from im_runtime.auth import AuthError, TokenVerifier
from im_runtime.logs import log
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from ..settings import DeliverySettings
from ..store import QueueStore
from .connection import CloseConnection, StreamConnection
from .hub import Hub

logger = logging.getLogger("im_delivery.stream")

FRAMES_LIMITED = Counter("im_delivery_client_frames_limited_total",
                         "Sockets closed 4429 for sending frames above their agent's or tenant's rate")

SUBPROTOCOL = "im.v1"


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    agent_id: str
    device_id: str
    token_expires_at: float


async def authenticate(websocket: WebSocket, verifier: TokenVerifier, store: QueueStore,
                       settings: DeliverySettings) -> Caller:
    ticket = websocket.query_params.get("ticket")
    if ticket:
        t = verifier.verify_ticket(ticket)
        if not await store.use_ticket(t.tenant_id, t.ticket_id, t.expires_at, settings.ticket_keep_s):
            raise AuthError("ticket already used")
        return Caller(t.tenant_id, t.agent_id, t.device_id, t.token_expires_at)
    offered = websocket.scope.get("subprotocols") or []
    bearer = next((p.removeprefix("bearer.") for p in offered if p.startswith("bearer.")), None)
    if not bearer:
        raise AuthError("a ticket or a bearer subprotocol is required")
    principal = verifier.verify(bearer)
    device = websocket.query_params.get("device_id") or settings.default_device_id
    return Caller(principal.tenant_id, principal.agent_id, device, principal.expires_at)


def stream_endpoint(hub: Hub, store: QueueStore, verifier: TokenVerifier, settings: DeliverySettings) -> Callable[[WebSocket], Awaitable[None]]:
    """The handler of one `/v1/stream` socket (the app routes it; `direct.DirectStream` calls it)."""

    async def stream(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        origin = websocket.headers.get("origin")
        if origin is not None and not settings.origin_allowed(origin):
            # Accepted, then closed with a code: a browser shows the reason, not an opaque 1006.
            log(logger, logging.INFO, "stream refused", reason="origin not allowed", origin=origin[:200])
            await websocket.close(CloseCode.ORIGIN, "origin not allowed")
            return
        try:
            caller = await authenticate(websocket, verifier, store, settings)
            await require_active_agent(store, caller, settings)
        except AuthError as exc:
            log(logger, logging.INFO, "stream refused", reason=exc.message)
            await websocket.close(CloseCode.AUTH, "unauthorized")
            return
        except PyMongoError as exc:
            # MongoDB away or overloaded: the client is told to come back (1012), not dropped with
            # an error the server logs as a crash (seen with 10,000 sockets connecting at once).
            log(logger, logging.WARNING, "stream set-up failed", stage="auth", error=type(exc).__name__)
            await websocket.close(CloseCode.RESTART, "try again")
            return
        raw_cursor = websocket.query_params.get("cursor")
        try:
            asked = None if raw_cursor in (None, "") else int(raw_cursor)
            if asked is not None and asked < 0:
                raise ValueError
        except ValueError:
            await websocket.close(CloseCode.BAD_REQUEST, "cursor must be a non-negative integer")
            return

        full = hub.too_many(caller.tenant_id, caller.agent_id)
        if full:
            log(logger, logging.WARNING, "stream refused", reason=full, tenant_id=caller.tenant_id,
                agent_id=caller.agent_id)
            await websocket.close(CloseCode.TOO_SLOW, full)
            return

        conn = StreamConnection(uuid.uuid4().hex, caller.tenant_id, caller.agent_id, caller.device_id,
                                websocket, store, settings)
        # Registered before the replay is read: a signal for an entry appended meanwhile finds us.
        hub.add(conn)
        expiry: asyncio.TimerHandle | None = None
        try:
            await store.register(conn.connection_id, conn.tenant_id, conn.agent_id, conn.device_id,
                                 hub.gateway_id, hub.epoch)
            try:
                conn.last_sent, known, devices = await resume(store, caller, asked)
            except CloseConnection as close:
                await conn.close(close.code, close.reason)
                return
            if not known and devices >= settings.max_devices_per_agent:
                # Room for this new device: the least recently used ones are forgotten (the
                # pruning job also enforces the cap, for devices that arrive with ?cursor=).
                forgotten = await store.forget_devices(conn.tenant_id, conn.agent_id,
                                                       keep=settings.max_devices_per_agent - 1)
                log(logger, logging.INFO, "devices forgotten", tenant_id=conn.tenant_id, agent_id=conn.agent_id,
                    devices=len(forgotten))
            if not known:  # the device is known from now on (pruning waits for its acks)
                await store.acknowledge(conn.tenant_id, conn.agent_id, conn.device_id, conn.last_sent)
            # What the device's record holds at least, either way. Later acks reach the record in
            # bulk, up to IM_DELIVERY_ACK_WRITE_S after the client sent them.
            conn.acked = conn.last_sent
            await hub.connection_event("opened", conn)
            log(logger, logging.INFO, "stream opened", connection_id=conn.connection_id,
                tenant_id=conn.tenant_id, agent_id=conn.agent_id, device_id=conn.device_id, cursor=conn.last_sent)
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, caller.token_expires_at - time.time()), conn.close_soon, CloseCode.AUTH, "token expired"
            )
            # This task reads the client; a pump task sends, and exists only while there is
            # something to send (idle sockets must stay small: no task of their own).
            conn.reader = asyncio.current_task()
            conn.start()
            try:
                await read_client(conn, hub)
            except asyncio.CancelledError:
                if conn.closing is None:
                    raise  # a real cancellation (shutdown), not the gateway closing the socket
                conn.reader.uncancel()
        except PyMongoError as exc:  # MongoDB away while registering or resuming: the client comes back (1012)
            log(logger, logging.WARNING, "stream set-up failed", stage="resume", connection_id=conn.connection_id,
                error=type(exc).__name__)
            await conn.close(CloseCode.RESTART, "try again")
        finally:
            conn.stop()
            if expiry is not None:
                expiry.cancel()
            hub.remove(conn)

            async def release() -> None:
                # One shielded task: a cancellation arriving meanwhile (the close of a stalled
                # socket) must not skip the unregister after the ack.
                with contextlib.suppress(Exception):
                    await hub.write_ack_now(conn)
                await store.unregister(conn.connection_id, conn.tenant_id)

            with contextlib.suppress(Exception):
                await asyncio.shield(release())
            with contextlib.suppress(Exception):
                await asyncio.shield(hub.connection_event("closed", conn))
            log(logger, logging.INFO, "stream closed", connection_id=conn.connection_id,
                code=conn.closing, cursor=conn.last_sent)

    return stream


async def require_active_agent(store: QueueStore, caller: Caller, settings: DeliverySettings) -> None:
    """API.md: a token is accepted only while its agent exists and is active. An agent created a
    moment ago may not be projected yet (AgentChanged travels through Kafka): wait for it up to
    `unknown_agent_wait_s`, polling the projection, before refusing."""
    deadline = time.monotonic() + settings.unknown_agent_wait_s
    while True:
        active = await store.agent_active(caller.tenant_id, caller.agent_id)
        if active is False:
            raise AuthError("agent deactivated")
        if active:
            return
        if time.monotonic() >= deadline:
            raise AuthError("unknown agent")
        await asyncio.sleep(settings.unknown_agent_poll_s)


async def resume(store: QueueStore, caller: Caller, asked: int | None) -> tuple[int, bool, int]:
    """Where the replay starts, whether the device's record already says so (no write needed), and
    how many devices the agent has (0 when not read: an asked cursor needs no device).

    API.md: the asked cursor; else this device's last ack; else the agent's latest ack on any
    device; else the start of the retained queue. Two reads (the head, the agent's devices) for
    everything a connect needs to know, so 10,000 sockets reconnecting cost 20,000 reads.

    4409 when the cursor is no longer retained (pruned past it), and when an asked `?cursor=` is
    above the head: it names nothing this queue ever held (another agent's, a forged or corrupted
    one); replaying from it would send nothing until the head passed it, and a clamped replay would
    send cursors the client drops as already seen — both lose frames silently. API.md's remedy is
    to reload over HTTP and reconnect with the `stream_cursor` it returns (never above the head)."""
    head = await store.head(caller.tenant_id, caller.agent_id)
    retained = int(head.get("pruned_through", 0))
    known = False
    count = 0
    if asked is not None:
        if asked > int(head.get("cursor", 0)):
            raise CloseConnection(CloseCode.NOT_RETAINED, "cursor beyond the queue head")
        cursor = asked
    else:
        devices = await store.device_cursors(caller.tenant_id, caller.agent_id)
        count = len(devices)
        own = devices.get(caller.device_id)
        if own is not None:
            cursor, known = own, True
        else:  # a new device holds nothing yet: after the agent's latest ack, or the retained start
            cursor = max(max(devices.values(), default=0), retained)
    if cursor < retained:
        raise CloseConnection(CloseCode.NOT_RETAINED, "cursor no longer retained")
    return cursor, known, count


def read_frame(raw: str | bytes) -> dict | None:
    """A client frame as a dict with a string `type`, or None for anything else: not JSON, not an
    object, or nested deeper than the parser's recursion limit (a RecursionError, not a ValueError).
    Unknown types pass: a newer client's frame is ignored by an older gateway, not refused."""
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return None
    return frame


async def read_client(conn: StreamConnection, hub: Hub) -> None:
    """Client frames: ack (moves the device cursor forward only), typing, idle, active; a frame that
    is not a JSON object with a type closes the socket 4400 (the client is broken, not the network)."""
    while True:
        try:
            message = await conn.websocket.receive()
        except (RuntimeError, OSError):
            return  # the gateway closed the socket meanwhile
        if message["type"] == "websocket.disconnect":
            return
        frame = read_frame(message.get("text") or message.get("bytes") or b"")
        if frame is None:
            await conn.close(CloseCode.BAD_REQUEST, "a client frame must be a JSON object with a string type")
            return
        kind = frame["type"]
        # An ack that moves this socket's cursor forward is not counted: there is at most one per
        # message the server sent, and a busy agent acks at the rate it is sent to. Every other
        # frame (typing, idle, active, an ack that moves nothing) counts.
        advancing = (kind == "ack" and isinstance(frame.get("cursor"), int)
                     and min(frame["cursor"], conn.last_sent) > conn.acked)
        if not advancing and not hub.frame_allowed(conn):
            FRAMES_LIMITED.inc()
            await conn.close(CloseCode.TOO_SLOW, "too many frames")
            return
        if kind == "ack" and isinstance(frame.get("cursor"), int) and frame["cursor"] >= 0:
            # Bounded by what this connection sent: an ack above it would mark entries the device
            # never got as read (its next resume and the pruning job would skip them).
            cursor = min(frame["cursor"], conn.last_sent)
            if cursor < frame["cursor"]:
                log(logger, logging.WARNING, "ack above the last cursor sent; bounded",
                    connection_id=conn.connection_id, acked=frame["cursor"], last_sent=conn.last_sent)
            conn.acknowledged(cursor)
            if cursor > conn.acked:  # an ack that moves nothing costs no write
                conn.acked = cursor
                hub.ack_later(conn)  # written with the others' within `ack_write_s`
        elif kind == "typing" and isinstance(frame.get("conversation_id"), str) and frame["conversation_id"]:
            await hub.typing(conn, frame["conversation_id"])
        elif kind in ("idle", "active"):
            await hub.connection_event(kind, conn)
