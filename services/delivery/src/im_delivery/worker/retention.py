"""A tenant's message retention, in delivery: nothing delivery keeps of a message outlives the
tenant's `retention_days`. The setting is im-api's (`message_settings`); delivery reads it from the
same database (im_contracts.retention) rather than hearing of it by an event, because it must hold
whatever happened to the event: a queue entry kept under a limit the worker never heard of would
outlive the message it copies.

Once every `tenant_retention_interval_s`, for each tenant with retention on, the maintenance job:
- prunes each queue through its last entry queued before the cutoff (the head is marked first, as
  for any pruning, so a reader behind it gets 4409 rather than a silent gap);
- removes copies of older messages from the later entries: a message frame of a message posted
  before the cutoff (queued late, or an edit or deletion of it) is deleted — a gap, which readers
  allow —, and a thread preview or a team request's question (a copy of the thread's first
  message) older than the cutoff is cleared in the frame that carries it;
- clears the thread previews of the worker's projection that are older than the cutoff.
Each step removes only what is past the cutoff, so a worker killed in the middle leaves work the
next sweep finishes. The cost is a read of every queue of those tenants per interval, which is
why the interval is long (a limit is in days).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from im_contracts.models import to_rfc3339
from im_contracts.retention import MESSAGE_SETTINGS_COLLECTION, RETENTION_ON, tenant_cutoffs
from im_runtime.logs import log
from prometheus_client import Counter as Metric
from pymongo.asynchronous.database import AsyncDatabase

from ..settings import DeliverySettings
from ..store import QueueStore, utcnow
from .projections import Projections

logger = logging.getLogger("im_delivery.retention")

COPIES_REMOVED = Metric("im_delivery_retention_copies_removed_total",
                        "Copies of messages past their tenant's retention removed", ["what"])
# Entries read per query while a queue is looked through: bounds the worker's memory per read.
PAGE = 1000


def parse_time(value: Any) -> datetime | None:
    """A frame's time (RFC 3339 text) or a stored one (a datetime); None when absent."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None


@dataclass
class PagePlan:
    """What one page of a queue needs: `through` (prune up to it), entries to delete, frames whose
    preview or question to clear."""

    through: int | None = None
    drop: list[Any] = field(default_factory=list)
    previews: list[Any] = field(default_factory=list)
    questions: list[Any] = field(default_factory=list)


def plan_page(entries: Sequence[Mapping[str, Any]], cutoff: datetime, started: Mapping[str, datetime | None],
              leading: bool) -> tuple[PagePlan, bool]:
    """Pure. `entries` in cursor order (`QueueStore.entry_times`); `started`: thread -> when it was
    started (for team request frames); `leading`: no entry queued after the cutoff came before
    this page. Returns the plan and whether that still holds after it."""
    plan = PagePlan()
    for entry in entries:
        queued = parse_time(entry.get("created_at"))
        if queued is not None and queued < cutoff:
            if leading:
                plan.through = int(entry["cursor"])
            else:  # queued out of order: deleted like any other copy
                plan.drop.append(entry["_id"])
            continue
        leading = False
        frame = entry.get("frame") or {}
        message = parse_time((frame.get("message") or {}).get("created_at"))
        if message is not None and message < cutoff:
            plan.drop.append(entry["_id"])
            continue
        preview = parse_time(((frame.get("conversation") or {}).get("last_message") or {}).get("created_at"))
        if preview is not None and preview < cutoff:
            plan.previews.append(entry["_id"])
        request = frame.get("request") or {}
        asked = started.get(request.get("conversation_id") or "")
        if request.get("question") is not None and asked is not None and asked < cutoff:
            plan.questions.append(entry["_id"])
    return plan, leading


class TenantRetention:
    def __init__(self, db: AsyncDatabase, store: QueueStore, projections: Projections,
                 settings: DeliverySettings) -> None:
        self._settings = db[MESSAGE_SETTINGS_COLLECTION]
        self.store = store
        self.projections = projections
        self.interval_s = settings.tenant_retention_interval_s
        self.next_at = 0.0  # monotonic: the first sweep comes at once after a start

    async def sweep_if_due(self) -> dict[str, Counter] | None:
        if time.monotonic() < self.next_at:
            return None
        self.next_at = time.monotonic() + self.interval_s
        return await self.sweep()

    async def sweep(self) -> dict[str, Counter]:
        """Every tenant with retention on: what was removed, per tenant."""
        at = utcnow()
        docs = await self._settings.find(RETENTION_ON, {"tenant_id": 1, "retention_days": 1}).to_list()
        done: dict[str, Counter] = {}
        for tenant_id, (days, cutoff) in sorted(tenant_cutoffs(docs, at).items()):
            counts: Counter = Counter()
            for agent_id, head, pruned in await self.store.tenant_heads(tenant_id):
                if head > pruned:
                    await self.agent(tenant_id, agent_id, pruned, cutoff, counts)
            counts["previews"] += await self.projections.clear_previews_before(tenant_id, to_rfc3339(cutoff))
            for what, n in counts.items():
                COPIES_REMOVED.labels(what).inc(n)
            if any(counts.values()):
                log(logger, logging.INFO, "tenant retention applied", tenant_id=tenant_id, retention_days=days,
                    **dict(counts))
            done[tenant_id] = counts
        return done

    async def agent(self, tenant_id: str, agent_id: str, pruned: int, cutoff: datetime, counts: Counter) -> None:
        """One queue, a page at a time."""
        after, leading = pruned, True
        while True:
            entries = await self.store.entry_times(tenant_id, agent_id, after, PAGE)
            if not entries:
                return
            asked = sorted({request["conversation_id"] for e in entries
                            if (request := (e.get("frame") or {}).get("request") or {}).get("question") is not None
                            and request.get("conversation_id")})
            started = {c: parse_time(t) for c, t in (await self.projections.created_at_of(tenant_id, asked)).items()}
            plan, leading = plan_page(entries, cutoff, started, leading)
            if plan.through is not None:
                counts["entries"] += await self.store.prune_through(tenant_id, agent_id, plan.through)
            counts["messages"] += await self.store.drop_entries(tenant_id, plan.drop)
            counts["entry_previews"] += await self.store.clear_in_entries(
                tenant_id, plan.previews, "frame.conversation.last_message")
            counts["questions"] += await self.store.clear_in_entries(tenant_id, plan.questions,
                                                                     "frame.request.question")
            if len(entries) < PAGE:
                return
            after = int(entries[-1]["cursor"])
