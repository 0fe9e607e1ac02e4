"""The worker's maintenance job, once per `prune_interval_s`: releases overdue held messages,
expires silent gateways' registrations, forgets unused devices, drops queue entries every device
acknowledged (and older than retention) and truncates a queue over its cap; `pruned_through` on
the head tells gateways to answer 4409. It also applies the tenants' message retention
(retention.py) every `tenant_retention_interval_s`."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from im_runtime.kafka import is_transient
from im_runtime.logs import log
from im_runtime.shutdown import raise_if_cancelled
from prometheus_client import Counter

from ..settings import DeliverySettings
from ..store import QueueStore, device_doc_id, utcnow
from .fanout import FanOut
from .retention import TenantRetention

logger = logging.getLogger("im_delivery.pruning")

PRUNED = Counter("im_delivery_entries_pruned_total", "Queue entries pruned", ["why"])


class Maintenance:
    def __init__(self, store: QueueStore, fanout: FanOut, settings: DeliverySettings, remember: int = 100_000,
                 retention: TenantRetention | None = None) -> None:
        self.store = store
        self.retention = retention
        self.fanout = fanout
        self.settings = settings
        # Per agent: no entry of its queue is older than retention before this time (the oldest
        # one's age, read when nothing was old enough), so it is not looked at again until then.
        # Only a hint, forgotten wholesale past `remember` (then read again).
        self.young_until: dict[tuple[str, str], datetime] = {}
        self.remember = remember

    async def run_forever(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.settings.prune_interval_s)
            try:
                await self.fanout.release_overdue()
                for gateway_id in await self.store.expire_gateways(self.settings.gateway_expiry_s):
                    log(logger, logging.WARNING, "gateway silent: registrations dropped", gateway_id=gateway_id)
                await self.sweep()
                if self.retention is not None:
                    await self.retention.sweep_if_due()
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                if not is_transient(exc):
                    logger.exception("pruning sweep failed")
                else:
                    log(logger, logging.WARNING, "pruning sweep skipped", error=type(exc).__name__)

    async def sweep(self) -> None:
        """A few reads for all queues, then work only where there may be some: the heads and the
        devices in one read each; an agent's acknowledged entries are looked at only when a device
        acknowledged past what is pruned and its oldest entry may have aged past retention; its
        queue is counted only when its head says it may be over the cap. (It used to be three
        reads per queue every minute, a count of every queue among them.)"""
        # One command for every tenant: a device silent past the expiry pins nothing any more.
        expired = await self.store.expire_devices(self.settings.device_expiry_s)
        if expired:
            log(logger, logging.INFO, "unused devices forgotten", devices=expired)
        acks = await self.store.all_device_acks()
        if len(self.young_until) > self.remember:
            self.young_until.clear()
        async for tenant_id, agent_id, head, pruned in self.store.queue_heads():
            await self.prune_agent(tenant_id, agent_id, head, pruned, acks.get((tenant_id, agent_id), {}))

    async def prune_agent(self, tenant_id: str, agent_id: str, head: int, pruned: int,
                          acks: dict[str, int]) -> None:
        cap = self.settings.max_devices_per_agent
        if len(acks) > cap:  # devices that came with ?cursor= are not counted at connect
            forgotten = await self.store.forget_devices(tenant_id, agent_id, keep=cap)
            gone = {device_doc_id(tenant_id, agent_id, f) for f in forgotten}
            acks = {d: c for d, c in acks.items() if d not in gone}
        now = utcnow()
        key = (tenant_id, agent_id)
        if acks and min(acks.values()) > pruned and now >= self.young_until.get(key, now):
            cutoff = now - timedelta(seconds=self.settings.retention_s)
            through = await self.store.last_cursor_where(
                tenant_id, agent_id, {"cursor": {"$lte": min(acks.values())}, "created_at": {"$lt": cutoff}})
            if through is not None:
                await self._prune(tenant_id, agent_id, through, "acknowledged")
                pruned = max(pruned, through)
            else:
                oldest = await self.store.oldest_entry_at(tenant_id, agent_id)
                # Nothing acknowledged is old enough: nothing will be before the oldest entry is.
                self.young_until[key] = (oldest if oldest is not None else now) + timedelta(
                    seconds=self.settings.retention_s)
        if head - pruned > self.settings.queue_cap:  # at most this many entries: count them only then
            excess = await self.store.queue_length(tenant_id, agent_id) - self.settings.queue_cap
            if excess > 0:
                through = await self.store.cursor_at(tenant_id, agent_id, excess - 1)
                if through is not None:
                    await self._prune(tenant_id, agent_id, through, "over_cap")

    async def _prune(self, tenant_id: str, agent_id: str, through: int, why: str) -> None:
        deleted = await self.store.prune_through(tenant_id, agent_id, through)
        PRUNED.labels(why).inc(deleted)
        log(logger, logging.INFO, "queue pruned", tenant_id=tenant_id, agent_id=agent_id, through=through,
            entries=deleted, why=why)
