"""The maintenance job: releases overdue held messages, expires silent gateways' registrations,
drops queue entries every device acknowledged (and older than retention) and
truncates a queue over its cap; `pruned_through` on the head tells gateways to answer 4409."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from im_runtime.kafka import is_transient
from im_runtime.logs import log
from im_runtime.shutdown import raise_if_cancelled
from prometheus_client import Counter
from pymongo import ASCENDING, DESCENDING

from ..settings import DeliverySettings
from ..store import QueueStore, device_doc_id, utcnow
from .fanout import FanOut

logger = logging.getLogger("im_delivery.pruning")

PRUNED = Counter("im_delivery_entries_pruned_total", "Queue entries pruned", ["why"])


class Pruning:
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
        async for head in self.store.heads.find({}, {"tenant_id": 1, "agent_id": 1}):
            await self.prune_agent(head["tenant_id"], head["agent_id"])

    async def prune_agent(self, tenant_id: str, agent_id: str) -> None:
        scope = {"tenant_id": tenant_id, "agent_id": agent_id}
        devices = [d async for d in self.store.devices.find(scope, {"cursor": 1, "updated_at": 1})]
        cap = self.settings.max_devices_per_agent
        if len(devices) > cap:  # devices that came with ?cursor= are not counted at connect
            forgotten = set(await self.store.forget_devices(tenant_id, agent_id, keep=cap))
            devices = [d for d in devices if d["_id"] not in {device_doc_id(tenant_id, agent_id, f) for f in forgotten}]
        acks = [d["cursor"] for d in devices]
        if acks:
            cutoff = utcnow() - timedelta(seconds=self.settings.retention_s)
            await self._delete_through(scope, {"cursor": {"$lte": min(acks)}, "created_at": {"$lt": cutoff}},
                                       "acknowledged")
        count = await self.store.queue.count_documents(scope)
        excess = count - self.settings.queue_cap
        if excess > 0:
            last = await self.store.queue.find_one(scope, {"cursor": 1}, sort=[("cursor", ASCENDING)], skip=excess - 1)
            if last is not None:
                await self._delete_through(scope, {"cursor": {"$lte": last["cursor"]}}, "over_cap")

    async def _delete_through(self, scope: dict, condition: dict, why: str) -> None:
        top = await self.store.queue.find_one({**scope, **condition}, {"cursor": 1}, sort=[("cursor", DESCENDING)])
        if top is None:
            return
        through = int(top["cursor"])
        # Mark first: a gateway reading in between answers 4409 rather than skipping silently.
        await self.store.heads.update_one(
            self.store.head_filter(scope["tenant_id"], scope["agent_id"]), {"$max": {"pruned_through": through}}
        )
        result = await self.store.queue.delete_many({**scope, "cursor": {"$lte": through}})
        PRUNED.labels(why).inc(result.deleted_count)
        log(logger, logging.INFO, "queue pruned", tenant_id=scope["tenant_id"], agent_id=scope["agent_id"],
            through=through, entries=result.deleted_count, why=why)
