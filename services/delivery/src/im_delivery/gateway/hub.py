"""The gateway's live connections: who is held here, signal dispatch, presence events, heartbeats."""

from __future__ import annotations

import asyncio
import zlib
import logging
import time
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaProducer
from im_contracts import topics
from im_contracts.codec import event_headers
from im_contracts.frames import AuthRevoked, CloseCode
from im_contracts.events import (
    ConnectionActive,
    ConnectionClosed,
    ConnectionIdle,
    ConnectionOpened,
    Event,
    GatewayHeartbeat,
    LiveFrame,
    QueueAdvanced,
    Typing,
)
from im_runtime.logs import log
from im_runtime.ratelimit import Buckets, Limit, take
from im_runtime.shutdown import raise_if_cancelled
from prometheus_client import Counter, Gauge

from ..settings import DeliverySettings
from ..store import QueueStore
from .connection import StreamConnection

logger = logging.getLogger("im_delivery.hub")

AUTH_REVOKED = AuthRevoked.model_fields["type"].default

OPEN = Gauge("im_delivery_connections_open", "WebSocket connections open on this gateway")
REVOKED_BY_CHECK = Counter("im_delivery_revocations_by_check_total",
                           "Sockets of deactivated agents closed by the periodic check (the signal was missed)")

CONNECTION_EVENTS = {
    "opened": ConnectionOpened, "closed": ConnectionClosed, "idle": ConnectionIdle, "active": ConnectionActive,
}



def in_slice(tenant_id: str, agent_id: str, part: int, parts: int) -> bool:
    """Whether the safety poll reads the agent's head in slice `part` of `parts`: always the same
    slice for an agent, so each is read once per round of slices."""
    return parts <= 1 or zlib.crc32(f"{tenant_id}\0{agent_id}".encode()) % parts == part

class Hub:
    def __init__(self, settings: DeliverySettings, producer: AIOKafkaProducer, store: QueueStore) -> None:
        self.settings = settings
        self.store = store
        self.producer = producer
        self.gateway_id = settings.gateway_id
        self.epoch = uuid.uuid4().hex  # a new boot: presence expires the previous epoch's connections
        self.by_agent: dict[tuple[str, str], set[StreamConnection]] = defaultdict(set)
        self.open = 0
        self._acks_pending: set[StreamConnection] = set()  # sockets whose latest ack is not written yet
        s = settings
        self.frames_per_agent = Buckets(Limit(s.client_frame_rate_per_agent, s.client_frame_burst_per_agent),
                                        max_keys=s.rate_limit_max_keys)
        self.frames_per_tenant = Buckets(Limit(s.client_frame_rate_per_tenant, s.client_frame_burst_per_tenant),
                                         max_keys=s.rate_limit_max_keys)
        self.clock = time.monotonic

    def frame_allowed(self, conn: StreamConnection) -> bool:
        """One client frame within its agent's and tenant's frame rate on this gateway."""
        checks = [(self.frames_per_agent, (conn.tenant_id, conn.agent_id)), (self.frames_per_tenant, conn.tenant_id)]
        return take(checks, self.clock()) == 0.0

    def too_many(self, tenant_id: str, agent_id: str) -> str | None:
        """Why one more socket of this agent would be one too many here (None: it is welcome)."""
        if self.open >= self.settings.max_connections:
            return "too many sockets on this gateway"
        if len(self.by_agent.get((tenant_id, agent_id), ())) >= self.settings.max_connections_per_agent:
            return "too many sockets for this agent"
        return None

    def add(self, conn: StreamConnection) -> None:
        self.by_agent[(conn.tenant_id, conn.agent_id)].add(conn)
        self.open += 1
        OPEN.inc()

    def remove(self, conn: StreamConnection) -> None:
        held = self.by_agent.get((conn.tenant_id, conn.agent_id))
        if held is not None and conn in held:
            held.discard(conn)
            self.open -= 1
            OPEN.dec()
            if not held:
                del self.by_agent[(conn.tenant_id, conn.agent_id)]

    def connections(self) -> list[StreamConnection]:
        return [c for held in self.by_agent.values() for c in held]

    def on_signal(self, event: Event) -> None:
        """Never blocks: a signal only wakes pumps or fills bounded live buffers."""
        for conn in list(self.by_agent.get((event.tenant_id, getattr(event, "agent_id", "")), ())):
            if isinstance(event, QueueAdvanced):
                if event.cursor > conn.last_sent:
                    conn.signal(event.cursor)
            elif isinstance(event, LiveFrame):
                if event.frame.get("type") == AUTH_REVOKED:
                    conn.close_soon(CloseCode.AUTH, "agent deactivated")
                else:
                    conn.push_live(event.frame)

    async def publish(self, topic: topics.Topic, key: bytes, event: Event) -> None:
        await self.producer.send_and_wait(topic.name(self.settings.topic_prefix), event.to_bytes(), key=key,
                                          headers=event_headers(event))

    async def connection_event(self, kind: str, conn: StreamConnection) -> None:
        event = CONNECTION_EVENTS[kind](
            tenant_id=conn.tenant_id, agent_id=conn.agent_id, connection_id=conn.connection_id,
            device_id=conn.device_id, gateway_id=self.gateway_id, gateway_epoch=self.epoch,
        )
        await self.publish(topics.CONNECTIONS, topics.agent_key(conn.tenant_id, conn.agent_id), event)

    async def typing(self, conn: StreamConnection, conversation_id: str) -> None:
        event = Typing(tenant_id=conn.tenant_id, conversation_id=conversation_id, agent_id=conn.agent_id)
        await self.publish(topics.TYPING, topics.conversation_key(conversation_id), event)

    # --- acknowledgements: written in bulk ------------------------------------------------------

    def ack_later(self, conn: StreamConnection) -> None:
        self._acks_pending.add(conn)

    async def write_ack_now(self, conn: StreamConnection) -> None:
        """The socket is closing: its pending ack is written now."""
        if conn in self._acks_pending:
            self._acks_pending.discard(conn)
            await self.store.acknowledge(conn.tenant_id, conn.agent_id, conn.device_id, conn.acked)

    async def write_acks_forever(self) -> None:
        """Every `ack_write_s`: the acks the sockets received meanwhile, in one command (a write
        per ack was a database command per message at the rate the bench's clients ack)."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.settings.ack_write_s)
            await self.write_acks()

    async def write_acks(self) -> None:
        pending, self._acks_pending = self._acks_pending, set()
        if not pending:
            return
        try:
            await self.store.acknowledge_many([(c.tenant_id, c.agent_id, c.device_id, c.acked) for c in pending])
        except Exception as exc:  # noqa: BLE001 - MongoDB away: kept for the next round
            self._acks_pending |= {c for c in pending if c.closing is None}
            log(logger, logging.WARNING, "acks not written; retrying", sockets=len(pending), error=type(exc).__name__)

    def wake_all(self) -> None:
        """Every connection re-reads its queue now (signals may have been missed meanwhile)."""
        for conn in self.connections():
            conn.safety_poll()

    async def safety_poll_forever(self) -> None:
        """Every safety_poll_s every connection whose queue moved past what it was sent re-reads
        it: a missed signal costs latency only. A slice of the agents every tick, so the reads
        are spread out (10,000 heads every 2 s kept SecantusDB busy with nothing happening)."""
        tick = min(self.settings.safety_poll_tick_s, self.settings.safety_poll_s)
        slices = max(1, round(self.settings.safety_poll_s / tick))
        turn = 0
        while True:
            raise_if_cancelled()
            await asyncio.sleep(tick)
            turn += 1
            try:
                await self.safety_poll(turn % slices, slices)
            except Exception as exc:  # noqa: BLE001 - MongoDB away: the next round tries again
                log(logger, logging.WARNING, "safety poll failed", error=type(exc).__name__)
                # Every pump reads its queue itself now: with MongoDB away the read fails and the
                # socket is closed 1012 (reconnect), as before the poll read heads in bulk.
                self.wake_all()

    async def safety_poll(self, part: int = 0, parts: int = 1) -> None:
        """The heads of slice `part` of `parts` of the agents held here (each agent always in the
        same slice), one read per tenant (in chunks) instead of one pump per connection: with
        10,000 idle sockets a per-connection re-read is 10,000 queries every round, which
        saturates MongoDB and starves live deliveries. Only connections whose head is
        past their last sent cursor (new entries) or whose queue was pruned past it (4409) wake."""
        await self.poll_heads({agent for agent in list(self.by_agent) if in_slice(*agent, part, parts)})

    async def poll_heads(self, agents: set[tuple[str, str]]) -> None:
        """The heads of these agents, one read per tenant per 1,000; their connections behind the
        head (or behind what was pruned) wake."""
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant_id, agent_id in agents:
            by_tenant[tenant_id].append(agent_id)
        for tenant_id, agent_ids in by_tenant.items():
            for i in range(0, len(agent_ids), 1000):
                chunk = agent_ids[i:i + 1000]
                heads = await self.store.heads_of(tenant_id, chunk)
                for agent_id in chunk:
                    head = heads.get(agent_id)
                    if head is None:
                        continue  # nothing was ever queued for this agent
                    moved = max(int(head.get("cursor", 0)), int(head.get("pruned_through", 0)))
                    for conn in list(self.by_agent.get((tenant_id, agent_id), ())):
                        if moved > conn.last_sent:
                            conn.safety_poll()

    async def revocation_check_forever(self) -> None:
        """Every revocation_check_s: closes the sockets of agents the directory projection says are
        deactivated. The live auth.revoked signal closes them at once; this is the bound when it
        is missed (a restarting signal reader, a socket registered just after its lookup)."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.settings.revocation_check_s)
            try:
                await self.check_revocations()
            except Exception as exc:  # noqa: BLE001 - MongoDB away: the next round tries again
                log(logger, logging.WARNING, "revocation check failed", error=type(exc).__name__)

    async def check_revocations(self) -> None:
        """One indexed read per tenant per 1,000 agents held here, returning only the deactivated."""
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant_id, agent_id in list(self.by_agent):
            by_tenant[tenant_id].append(agent_id)
        for tenant_id, agent_ids in by_tenant.items():
            for i in range(0, len(agent_ids), 1000):
                for agent_id in await self.store.deactivated(tenant_id, agent_ids[i:i + 1000]):
                    for conn in list(self.by_agent.get((tenant_id, agent_id), ())):
                        REVOKED_BY_CHECK.inc()
                        conn.close_soon(CloseCode.AUTH, "agent deactivated")

    def beat(self, count: int) -> GatewayHeartbeat:
        """The same few hundred bytes at any socket count: a beat that listed its connection ids
        outgrew Kafka's record limit at ~29,000 sockets, and then presence, hearing nothing, marked
        every agent here offline. No reader used the list (liveness is per gateway and epoch)."""
        return GatewayHeartbeat(gateway_id=self.gateway_id, epoch=self.epoch, connection_count=count)

    async def heartbeat_forever(self) -> None:
        while True:
            raise_if_cancelled()
            conns = self.connections()
            beat = self.beat(len(conns))
            try:
                await self.publish(topics.GATEWAYS, topics.gateway_key(self.gateway_id), beat)
            except Exception as exc:  # noqa: BLE001 - Kafka away: the next beat tries again
                log(logger, logging.WARNING, "heartbeat not sent", error=type(exc).__name__)
            try:
                await self.reassert(conns)
            except Exception as exc:  # noqa: BLE001 - MongoDB away: the next beat tries again
                log(logger, logging.WARNING, "registrations not checked", error=type(exc).__name__)
            await asyncio.sleep(self.settings.heartbeat_s)

    async def reassert(self, conns: list[StreamConnection]) -> None:
        """Puts back registrations the worker dropped while this gateway was alive (it expires a
        gateway whose beats it did not see, e.g. across a partition): signals route here again.
        One indexed count per beat; the full comparison only when something is missing."""
        if not conns:
            return
        tenants = sorted({c.tenant_id for c in conns})
        if await self.store.count_registered_here(self.gateway_id, tenants) >= len(conns):
            return
        present = await self.store.registered_here(self.gateway_id, tenants)
        missing = [c for c in conns if c.connection_id not in present]
        # In bulk (one command per 1,000): registering thousands one by one took minutes, during
        # which this loop sent no heartbeat, so the worker found the gateway silent again and
        # dropped them all again (seen with 10,000 sockets).
        for i in range(0, len(missing), 1000):
            await self.store.register_many([(c.connection_id, c.tenant_id, c.agent_id, c.device_id)
                                            for c in missing[i:i + 1000]], self.gateway_id, self.epoch)
        # A socket that closed meanwhile must not stay registered (it unregistered before we wrote).
        for conn in missing:
            if conn not in self.by_agent.get((conn.tenant_id, conn.agent_id), ()):
                await self.store.unregister(conn.connection_id, conn.tenant_id)
        # Entries appended while unrouted are read now, not at the safety poll: the heads of the
        # re-registered agents in bulk, and only the connections behind their head wake.
        await self.poll_heads({(c.tenant_id, c.agent_id) for c in missing})
        log(logger, logging.WARNING, "registrations re-asserted", gateway_id=self.gateway_id, connections=len(missing))

    async def close_all(self) -> None:
        """Graceful shutdown: every client is told 1012 (reconnect) before the process exits."""
        await asyncio.gather(*(c.close(CloseCode.RESTART, "server restarting") for c in self.connections()),
                             return_exceptions=True)
