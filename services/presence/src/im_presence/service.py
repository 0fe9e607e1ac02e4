"""Keeping each agent's presence: load its state, apply a rule, save (compare-and-set), publish what users see.

Every change of one agent goes through `_change` under that agent's lock (so the consumer and
the sweeper of one process take turns), and every write is compare-and-set on the stored
version (so two processes racing during a rebalance cannot both apply a change). A visible
change is saved `dirty` first and published after: a crash in between is repaired by the next
redelivery or sweep, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Protocol

from im_contracts.events import ConnectionOpened, GatewayHeartbeat, new_event_id, utcnow
from im_runtime.kafka import TransientError
from im_runtime.logs import log
from prometheus_client import Counter, Gauge

from .bus import PresencePublisher
from .domain import AgentState, ConnectionEvent, apply_event, expire_gateway, fire_deadline
from .settings import PresenceSettings
from .store import AgentRecord, PresenceStore

logger = logging.getLogger("im_presence.service")

GATEWAYS_EXPIRED = Counter(
    "im_presence_gateway_expiries_total", "Agents whose connections were expired with a gateway", ["why"]
)
DEADLINES_FIRED = Counter("im_presence_offline_deadlines_total", "Grace periods that ended in offline")
AGENTS_BY_STATUS = Gauge("im_presence_agents", "Agents by status among those this process owns", ["status"])
STATUSES = ("online", "away", "offline")

# Compare-and-set attempts before giving up (as transient: the record is retried with backoff).
MAX_WRITE_ATTEMPTS = 8


class Ownership(Protocol):
    """Which partitions of im.connections.v1 this process owns, and how far it has read them."""

    def owned(self) -> set[int]: ...

    async def settled_until(self, partition: int) -> datetime | None:
        """A time before which every record of `partition` has been applied (None: not known)."""
        ...


class AgentLocks:
    """One asyncio lock per agent, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: defaultdict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def hold(self, tenant_id: str, agent_id: str) -> AsyncIterator[None]:
        key = f"{tenant_id}:{agent_id}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                del self._locks[key]


class PresenceService:
    def __init__(
        self,
        store: PresenceStore,
        publisher: PresencePublisher,
        settings: PresenceSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.grace = timedelta(seconds=settings.offline_grace_s)
        self.gateway_timeout = timedelta(seconds=settings.gateway_timeout_s)
        self.gateway_forget_after = timedelta(seconds=settings.gateway_forget_after_s)
        self.locks = AgentLocks()
        # Set when a gateway is seen with a new epoch: the sweeper expires the old one at once.
        self.sweep_now = asyncio.Event()
        # A process that just started (or just failed to record beats) judges no gateway silent
        # before it has listened for a whole timeout: a presence restart is not a gateway death.
        self.listening_since: datetime | None = None
        self._epochs: dict[str, str] = {}
        self._swept_at: datetime | None = None
        self.count_interval = timedelta(seconds=settings.count_interval_s)
        self._counted_at: datetime | None = None
        self._forgot_at: datetime | None = None
        # When each "whose connections are on gateway G (epochs E, silent or not)?" was last asked:
        # the answer is a scan of the owned agents, asked again only after `gateway_recheck`, not
        # every sweep for as long as a retired epoch or a silent gateway is remembered (a day).
        self.gateway_recheck = timedelta(seconds=settings.gateway_recheck_s)
        self._asked: dict[tuple, datetime] = {}

    # --- connection events (the consumer group: this process owns the record's partition) ---

    async def on_connection_event(self, event: ConnectionEvent, partition: int, offset: int) -> None:
        now = self.clock()
        retired = False
        if isinstance(event, ConnectionOpened):
            retired = await self._observe_gateway(event.gateway_id, event.gateway_epoch, now) == "retired"

        def apply(record: AgentRecord) -> bool:
            if record.partition == partition and offset <= record.applied_offset:
                return False  # a redelivered record: already applied
            changed = apply_event(record.state, event, now=now, grace=self.grace, epoch_retired=retired)
            if changed:
                record.partition, record.applied_offset = partition, offset
            return changed

        async with self.locks.hold(event.tenant_id, event.agent_id):
            record = await self._change(event.tenant_id, event.agent_id, apply, partition=partition)
            await self._flush(record)

    # --- gateway heartbeats (every process reads them all) ----------------------------------

    async def on_heartbeat(self, heartbeat: GatewayHeartbeat) -> None:
        try:
            seen = await self._observe_gateway(heartbeat.gateway_id, heartbeat.epoch, self.clock(), heartbeat=True)
        except Exception:
            # Beats we could not record (MongoDB down) are not silence: judge none for a timeout.
            self.listening_since = self.clock()
            raise
        if seen == "new":
            self.sweep_now.set()

    def heartbeats_missed(self) -> None:
        """Beats may have gone unheard (the heartbeat reader restarted at the topic's end): judge
        no gateway silent until a whole timeout has been listened to again."""
        self.listening_since = self.clock()

    async def _observe_gateway(self, gateway_id: str, epoch: str, now: datetime, heartbeat: bool = False) -> str:
        if not heartbeat and self._epochs.get(gateway_id) == epoch:
            return "current"  # a connection event of a known boot: nothing to record
        seen = await self.store.observe_gateway(gateway_id, epoch, now, heartbeat=heartbeat)
        if seen in ("current", "new"):
            self._epochs[gateway_id] = epoch
        if seen == "new":
            log(logger, logging.INFO, "gateway epoch observed", gateway_id=gateway_id, epoch=epoch)
        return seen

    # --- the sweeper: due grace deadlines, silent or rebooted gateways, unpublished changes --

    async def sweep(self, ownership: Ownership) -> None:
        now = self.clock()
        if self._swept_at is not None and now - self._swept_at > self.gateway_timeout / 2:
            # This process stalled (MongoDB down?): beats heard meanwhile may be unrecorded.
            self.listening_since = now
        owned = ownership.owned()
        if owned:
            await self._expire_gateways(ownership, owned, now)
            await self._fire_deadlines(ownership, owned, now)
            for tenant_id, agent_id in await self.store.unpublished(owned):
                async with self.locks.hold(tenant_id, agent_id):
                    await self._flush(await self.store.load(tenant_id, agent_id))
        if self._counted_at is None or now - self._counted_at >= self.count_interval:
            counts = await self.store.count_by_status(owned) if owned else {}
            for status in STATUSES:
                AGENTS_BY_STATUS.labels(status).set(counts.get(status, 0))
            self._counted_at = now
        self._swept_at = now

    async def _expire_gateways(self, ownership: Ownership, owned: set[int], now: datetime) -> None:
        listening = self.listening_since is not None and now - self.listening_since >= self.gateway_timeout
        # Forgetting is after a day of silence: once per gateway timeout is plenty (not a delete
        # every sweep, second after second, on an idle stack).
        if listening and (self._forgot_at is None or now - self._forgot_at >= self.gateway_timeout):
            await self.store.forget_gateways(now - self.gateway_forget_after)
            self._forgot_at = now
        for gateway in await self.store.all_gateways():
            silent = listening and now - gateway.last_heartbeat_at > self.gateway_timeout
            epochs = None if silent else frozenset(gateway.retired_epochs)
            if epochs is not None and not epochs:
                continue
            seen_at = gateway.last_heartbeat_at if silent else now
            question = (gateway.gateway_id, epochs, silent, frozenset(owned))
            asked_at = self._asked.get(question)
            if asked_at is not None and now - asked_at < self.gateway_recheck:
                continue
            if len(self._asked) > 10_000:
                self._asked.clear()
            self._asked[question] = now
            for tenant_id, agent_id in await self.store.on_gateway(owned, gateway.gateway_id, epochs):

                def expire(record: AgentRecord, gateway_id: str = gateway.gateway_id, epochs=epochs) -> bool:
                    return record.partition in ownership.owned() and expire_gateway(
                        record.state, gateway_id, epochs, seen_at=seen_at, now=now, grace=self.grace
                    )

                async with self.locks.hold(tenant_id, agent_id):
                    record = await self._change(tenant_id, agent_id, expire)
                    await self._flush(record)
                GATEWAYS_EXPIRED.labels("silent" if silent else "rebooted").inc()
                log(logger, logging.INFO, "connections expired with gateway", tenant_id=tenant_id,
                    agent_id=agent_id, gateway_id=gateway.gateway_id, silent=silent)

    async def _fire_deadlines(self, ownership: Ownership, owned: set[int], now: datetime) -> None:
        by_partition: defaultdict[int, list[tuple[str, str, datetime]]] = defaultdict(list)
        for tenant_id, agent_id, partition, deadline in await self.store.due(owned, now):
            by_partition[partition].append((tenant_id, agent_id, deadline))
        for partition, due in by_partition.items():
            # A reopen may still sit unread in the partition (a new owner catching up after a
            # rebalance or restart): fire only deadlines older than what has been fully applied.
            settled = await ownership.settled_until(partition)
            if settled is None:
                continue
            for tenant_id, agent_id, deadline in due:
                if deadline > settled:
                    continue

                def fire(record: AgentRecord) -> bool:
                    return record.partition in ownership.owned() and fire_deadline(record.state, now=now)

                async with self.locks.hold(tenant_id, agent_id):
                    record = await self._change(tenant_id, agent_id, fire)
                    await self._flush(record)
                if record is not None and record.state.status == "offline":
                    DEADLINES_FIRED.inc()

    # --- load → apply → save → publish ------------------------------------------------------

    async def _change(
        self,
        tenant_id: str,
        agent_id: str,
        apply: Callable[[AgentRecord], bool],
        partition: int | None = None,
    ) -> AgentRecord | None:
        """Apply `apply` to the stored state and save it; the record as it now stands."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            record = await self.store.load(tenant_id, agent_id)
            if record is None:
                if partition is None:
                    return None
                record = AgentRecord(AgentState(tenant_id, agent_id), partition)
            before = record.state.shown()
            if not apply(record):
                return record
            if record.state.shown() != before:
                record.dirty = True
                record.presence_event_id = new_event_id()
                record.changed_at = self.clock()
            if await self.store.save(record):
                return record
        raise TransientError(f"presence of {tenant_id}:{agent_id} kept changing under us")

    async def _flush(self, record: AgentRecord | None) -> None:
        if record is None or not record.dirty:
            return
        await self.publisher.publish(record)
        await self.store.mark_published(record)
        shown = record.state.shown()
        log(logger, logging.INFO, "presence published", tenant_id=record.state.tenant_id,
            agent_id=record.state.agent_id, status=shown.status, connections=len(record.state.connections))
