"""The single writer of every agent's delivery queue: appends a batch's entries, then signals.

It consumes `im.inbox.v1` (keyed tenant:agent) in group `delivery-queue`: the partition owner is
the only writer of those agents' queues, so cursors become visible in order. A batch costs a few
commands whatever the number of agents in it: one compare-and-set of every agent's head (n cursors
each, one bulk write), one ordered insert of every entry, one routing read per tenant (plus one
head read per tenant for agents this writer has not seen yet). The unique (tenant, agent,
dedupe_key) index makes a re-consumed record a no-op: an agent whose entry collides, or whose head
had moved, goes through the one-agent path, which reads what is already there. Then each gateway
holding one of the batch's agents is signalled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from im_contracts.events import QueueAppend
from im_runtime.logs import log
from prometheus_client import Counter, Histogram

from ..bus import DeliveryBus, Item, record_origin, record_trace
from ..store import DuplicateAppend, NewEntry, QueueStore, utcnow

logger = logging.getLogger("im_delivery.queue_writer")

APPENDED = Counter("im_delivery_entries_appended_total", "Queue entries appended")
DUPLICATES = Counter("im_delivery_entries_duplicate_total", "Queue appends dropped as already present")
APPEND_SECONDS = Histogram("im_delivery_queue_append_seconds",
                           "One agent's batch appended to its queue (head compare-and-set + ordered insert)")
FANOUT_SECONDS = Histogram("im_delivery_fanout_latency_seconds",
                           "From the domain event's occurred_at to its entry appended to a recipient's queue",
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

# Collisions a retry can resolve: a previous owner of the partition appended the same entries, or
# the head lagged the queue. More in a row means something else is wrong: raised, dead-lettered.
MAX_APPEND_ATTEMPTS = 5


class QueueWriter:
    def __init__(self, store: QueueStore, bus: DeliveryBus, remember: int = 100_000) -> None:
        self.store = store
        self.bus = bus
        # The head each agent had after this writer's last append: the next allocation is a
        # compare-and-set from it (QueueStore.allocate), no read. Only a hint: a stale one costs a
        # read and a retry, never a wrong cursor. Bounded: forgotten wholesale past `remember`.
        self.heads: dict[tuple[str, str], int] = {}
        self.remember = remember

    async def handle_batch(self, items: list[Item]) -> None:
        by_agent: dict[tuple[str, str], list[tuple[QueueAppend, str, float | None]]] = defaultdict(list)
        for event, record in items:
            if isinstance(event, QueueAppend):
                by_agent[(event.tenant_id, event.agent_id)].append(
                    (event, record_trace(record, event), record_origin(record)))
        # Agents are independent queues: write them concurrently, each in its own order. The
        # signals each produces are confirmed before the subscription commits (this task's only).
        async with self.bus.confirmed():
            heads = await self.append_all(by_agent)
            await self.rewrite_changed(items)
            await self.signal(heads)

    async def rewrite_changed(self, items: list[Item]) -> None:
        """An edited or deleted message: the agent's earlier entries that carry it (the message as
        posted, earlier edits, thread updates that previewed it) now carry it as it is, so a replay
        never shows a deleted or replaced body. They were appended before this one (an agent's
        entries keep their order), so they are there to rewrite."""
        for event, _ in items:
            if isinstance(event, QueueAppend) and event.frame.get("type") == "message.updated":
                await self.store.rewrite_message(event.tenant_id, event.agent_id, event.frame["message"],
                                                 drop_question=event.drop_question)

    async def append_all(self, by_agent: dict[tuple[str, str], list[tuple[QueueAppend, str, float | None]]]
                         ) -> dict[tuple[str, str], int]:
        """Every agent's entries of a batch, in three commands for all of them on the usual path;
        each agent's head (0: none)."""
        if not by_agent:
            return {}
        wanted = {agent: _unique(events) for agent, events in by_agent.items()}
        started = time.perf_counter()
        unknown: dict[str, list[str]] = defaultdict(list)
        known: dict[tuple[str, str], int] = {}
        for agent in wanted:
            if agent in self.heads:
                known[agent] = self.heads[agent]
            else:
                unknown[agent[0]].append(agent[1])
        for tenant_id, agent_ids in unknown.items():
            found = await self.store.heads_of(tenant_id, agent_ids)
            for agent_id in agent_ids:
                known[(tenant_id, agent_id)] = int(found.get(agent_id, {}).get("cursor", 0))
        moved = await self.store.allocate_many({agent: (known[agent], len(fresh)) for agent, fresh in wanted.items()})
        at = utcnow()
        docs: list[tuple[tuple[str, str], dict]] = []
        for agent in wanted:
            if agent in moved:
                first = known[agent] + 1
                docs += [(agent, self.store.entry_doc(*agent, first + i, entry, at))
                         for i, (entry, _) in enumerate(wanted[agent])]
        # Ordered: a refused entry stops the insert there. Its agent goes the one-agent way; the
        # entries after it (other agents') are inserted again at the cursors they were given.
        collided: dict[tuple[str, str], bool] = {}
        while docs:
            refused = await self.store.insert_entries([doc for _, doc in docs])
            if refused is None:
                break
            index, on_cursor = refused
            agent = docs[index][0]
            collided[agent] = collided.get(agent, False) or on_cursor
            docs = [(a, doc) for a, doc in docs[index + 1:] if a != agent]
        heads: dict[tuple[str, str], int] = {}
        appended_at = time.time()
        for agent, fresh in wanted.items():
            if agent not in moved or agent in collided:
                continue
            head = known[agent] + len(fresh)
            self._remember(agent, head)
            heads[agent] = head
            APPENDED.inc(len(fresh))
            for _, origin in fresh:
                if origin is not None:
                    FANOUT_SECONDS.observe(max(0.0, appended_at - origin))
        APPEND_SECONDS.observe(time.perf_counter() - started)
        for agent in wanted:
            if agent in heads:
                continue
            # Its head had moved (another writer before a rebalance) or an entry was already there.
            self.heads.pop(agent, None)
            if collided.get(agent):
                await self.store.repair_head(*agent)
            heads[agent] = await self.append(*agent, by_agent[agent], collided=agent in collided)
        log(logger, logging.DEBUG, "queue batch appended", agents=len(wanted), heads_moved=len(moved),
            collided=len(collided))
        return {agent: heads[agent] for agent in by_agent}

    def _remember(self, agent: tuple[str, str], head: int) -> None:
        if len(self.heads) >= self.remember and agent not in self.heads:
            self.heads.clear()
        self.heads[agent] = head

    async def signal(self, heads: dict[tuple[str, str], int]) -> None:
        """One routing read per tenant for the whole batch (not one per agent), then a signal per
        (agent, gateway) holding it. Signalled even when nothing was new: a crash may have come
        between an append and its signal."""
        by_tenant: dict[str, dict[str, int]] = defaultdict(dict)
        for (tenant_id, agent_id), head in heads.items():
            if head:
                by_tenant[tenant_id][agent_id] = head
        holders = await asyncio.gather(*(self.store.gateways_holding(t, sorted(agents))
                                         for t, agents in by_tenant.items()))
        for (tenant_id, agents), pairs in zip(by_tenant.items(), holders, strict=True):
            for agent, gateway in sorted(pairs):
                await self.bus.advanced(tenant_id, gateway, agent, agents[agent])

    async def append(self, tenant_id: str, agent_id: str, events: list[tuple[QueueAppend, str, float | None]],
                     collided: bool = False) -> int:
        """One agent's entries not already queued, in order; returns the agent's head (0: none).

        Optimistic unless `collided`: the entries are inserted straight away and the unique
        dedupe-key index refuses what is already there (a re-consumed record). Only then are the
        present keys read and the rest appended at fresh cursors (the refused ones' cursors stay
        gaps, which readers allow)."""
        wanted = {entry.dedupe_key: (entry, origin) for entry, origin in _unique(events)}
        fresh = list(wanted.values())
        agent = (tenant_id, agent_id)
        for attempt in range(2 if collided else 1, MAX_APPEND_ATTEMPTS + 1):
            if attempt > 1:  # a collision: append only what is missing
                present = await self.store.existing_keys(tenant_id, agent_id, list(wanted))
                fresh = [wanted[k] for k in wanted if k not in present]
                if not fresh:
                    # Signal the highest of these entries, not the head: cursors up to the head may
                    # belong to another writer's append still in flight (the partition's previous
                    # owner during a rebalance), and a gateway reads a signalled range as complete.
                    DUPLICATES.inc(len(wanted))
                    return max(present.values())
            started = time.perf_counter()
            try:
                head = await self.store.append(tenant_id, agent_id, [entry for entry, _ in fresh],
                                               known=self.heads.get(agent))
            except DuplicateAppend as dup:
                self.heads.pop(agent, None)
                if dup.on_cursor:
                    await self.store.repair_head(tenant_id, agent_id)
                if attempt == MAX_APPEND_ATTEMPTS:
                    raise RuntimeError(f"queue append still colliding after {attempt} attempts") from dup
                continue  # recompute what is missing
            self._remember(agent, int(head))
            appended_at = time.time()
            APPEND_SECONDS.observe(time.perf_counter() - started)
            DUPLICATES.inc(len(wanted) - len(fresh))
            APPENDED.inc(len(fresh))
            for _, origin in fresh:
                if origin is not None:
                    FANOUT_SECONDS.observe(max(0.0, appended_at - origin))
            log(logger, logging.DEBUG, "queue appended", tenant_id=tenant_id, agent_id=agent_id, cursor=head,
                entries=len(fresh), trace_ids=sorted({e.trace_id for e, _ in fresh if e.trace_id})[:20])
            return int(head)
        raise AssertionError("unreachable")


def _unique(events: list[tuple[QueueAppend, str, float | None]]) -> list[tuple[NewEntry, float | None]]:
    """The batch's entries for one agent, each dedupe key once, in order."""
    wanted: dict[str, tuple[NewEntry, float | None]] = {}
    for event, trace, origin in events:
        wanted.setdefault(event.dedupe_key, (NewEntry(event.dedupe_key, event.frame, trace), origin))
    return list(wanted.values())
