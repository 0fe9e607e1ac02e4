"""The worker's maintenance job, once per `prune_interval_s`: releases overdue held messages,
expires silent gateways' registrations, forgets unused devices, drops queue entries every device
acknowledged (and older than retention) and truncates a queue over its cap; `pruned_through` on
the head tells gateways to answer 4409."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from im_runtime.kafka import is_transient
from im_runtime.logs import log
from im_runtime.shutdown import raise_if_cancelled
from prometheus_client import Counter

from ..settings import DeliverySettings
from ..store import QueueStore, device_doc_id, utcnow
from .fanout import FanOut

logger = logging.getLogger("im_delivery.pruning")

PRUNED = Counter("im_delivery_entries_pruned_total", "Queue entries pruned", ["why"])


class Maintenance:
    def __init__(self, store: QueueStore, fanout: FanOut, settings: DeliverySettings) -> None:
        self.store = store
        self.fanout = fanout
        self.settings = settings

    async def run_forever(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.settings.prune_interval_s)
            try:
                await self.fanout.release_overdue()
                for gateway_id in await self.store.expire_gateways(self.settings.gateway_expiry_s):
                    log(logger, logging.WARNING, "gateway silent: registrations dropped", gateway_id=gateway_id)
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                if not is_transient(exc):
                    logger.exception("pruning sweep failed")
                else:
                    log(logger, logging.WARNING, "pruning sweep skipped", error=type(exc).__name__)

    async def sweep(self) -> None:
        # One command for every tenant: a device silent past the expiry pins nothing any more.
        expired = await self.store.expire_devices(self.settings.device_expiry_s)
        if expired:
            log(logger, logging.INFO, "unused devices forgotten", devices=expired)
        async for tenant_id, agent_id in self.store.queue_owners():
            await self.prune_agent(tenant_id, agent_id)

    async def prune_agent(self, tenant_id: str, agent_id: str) -> None:
        acks = await self.store.device_acks(tenant_id, agent_id)
        cap = self.settings.max_devices_per_agent
        if len(acks) > cap:  # devices that came with ?cursor= are not counted at connect
            forgotten = await self.store.forget_devices(tenant_id, agent_id, keep=cap)
            for device in forgotten:
                acks.pop(device_doc_id(tenant_id, agent_id, device), None)
        if acks:
            cutoff = utcnow() - timedelta(seconds=self.settings.retention_s)
            through = await self.store.last_cursor_where(
                tenant_id, agent_id, {"cursor": {"$lte": min(acks.values())}, "created_at": {"$lt": cutoff}})
            if through is not None:
                await self._prune(tenant_id, agent_id, through, "acknowledged")
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
