"""The single writer of every agent's delivery queue: appends a batch's entries, then signals.

It consumes `im.inbox.v1` (keyed tenant:agent) in group `delivery-queue`: the partition owner is
the only writer of those agents' queues, so cursors become visible in order. Per agent and batch
it allocates n cursors with one `$inc` of the head and inserts the entries in order; the unique
(tenant, agent, dedupe_key) index makes a re-consumed record a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from im_contracts.events import QueueAppend
from prometheus_client import Counter

from ..bus import DeliveryBus, Item
from ..store import DuplicateAppend, QueueStore

logger = logging.getLogger("im_delivery.queue_writer")

APPENDED = Counter("im_delivery_entries_appended_total", "Queue entries appended")
DUPLICATES = Counter("im_delivery_entries_duplicate_total", "Queue appends dropped as already present")


class QueueWriter:
    def __init__(self, store: QueueStore, bus: DeliveryBus) -> None:
        self.store = store
        self.bus = bus

    async def handle_batch(self, items: list[Item]) -> None:
        by_agent: dict[tuple[str, str], list[QueueAppend]] = defaultdict(list)
        for event, _record in items:
            if isinstance(event, QueueAppend):
                by_agent[(event.tenant_id, event.agent_id)].append(event)
        # Agents are independent queues: write them concurrently, each in its own order.
        await asyncio.gather(*(self.append(t, a, evs) for (t, a), evs in by_agent.items()))
        await self.bus.flush()

    async def append(self, tenant_id: str, agent_id: str, events: list[QueueAppend]) -> None:
        wanted: dict[str, dict] = {}
        for e in events:
            wanted.setdefault(e.dedupe_key, e.frame)
        while True:
            present = await self.store.existing_keys(tenant_id, agent_id, list(wanted))
            fresh = [(k, f) for k, f in wanted.items() if k not in present]
            DUPLICATES.inc(len(wanted) - len(fresh))
            if not fresh:
                head = (await self.store.head(tenant_id, agent_id))["cursor"]
                break
            try:
                head = await self.store.append(tenant_id, agent_id, fresh)
            except DuplicateAppend:
                continue  # a previous owner of the partition raced us: recompute what is missing
            APPENDED.inc(len(fresh))
            break
        # Signal even when nothing was new: a crash may have come between append and signal.
        if head:
            for agent, gateway in sorted(await self.store.gateways_holding(tenant_id, [agent_id])):
                await self.bus.advanced(tenant_id, gateway, agent, int(head))
