"""A tenant's message retention, in the notifier: the message previews it keeps (each thread's
latest, and those in a notification still being sent) never outlive the tenant's `retention_days`.

The setting is im-api's (`message_settings`); the notifier reads it from the same database, as it
reads the tenant's notification settings (im_contracts.retention), so a preview is never kept
under a limit it has not heard of. Every `retention_interval_s` it looks through the agents of each
tenant with retention on and clears the previews of messages posted before the cutoff (the thread
itself stays: its unread count and the notification about it do not need the body). A clearing
is a compare-and-set on the agent's version like any decision: a document changed meanwhile is
left to the next look.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from im_contracts.retention import MESSAGE_SETTINGS_COLLECTION, RETENTION_ON, tenant_cutoffs
from im_runtime.logs import log
from prometheus_client import Counter
from pymongo.asynchronous.database import AsyncDatabase

from .domain import AgentDoc, agent_doc_id
from .store import NotifierStore

logger = logging.getLogger("im_notifier.retention")

PREVIEWS_CLEARED = Counter("im_notifier_retention_previews_cleared_total",
                           "Message previews cleared for being older than their tenant's retention")
# Agent documents read per query: bounds the memory of a look at a big tenant.
PAGE = 200


def forget_old_previews(doc: AgentDoc, cutoff: datetime) -> int:
    """Pure: clears in `doc` every preview of a message posted before `cutoff`; how many."""
    cleared = 0
    for thread in doc.threads.values():
        if thread.preview is not None and (thread.last_at is None or thread.last_at < cutoff):
            thread.preview = None
            cleared += 1
    for claim in doc.outgoing.values():
        for item in claim.get("threads", []):
            if item.get("preview") is not None and item["last_at"] < cutoff:
                item["preview"] = None
                cleared += 1
    return cleared


class PreviewRetention:
    def __init__(self, db: AsyncDatabase, store: NotifierStore, now: Callable[[], datetime]) -> None:
        self._settings = db[MESSAGE_SETTINGS_COLLECTION]
        self.store = store
        self.now = now

    async def run(self, interval_s: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - MongoDB away: the next look tries again
                log(logger, logging.WARNING, "retention look failed", error=type(exc).__name__)
            await sleep(interval_s)

    async def sweep(self) -> dict[str, int]:
        """tenant -> previews cleared, for every tenant with retention on."""
        at = self.now()
        docs = await self._settings.find(RETENTION_ON, {"tenant_id": 1, "retention_days": 1}).to_list()
        done = {}
        for tenant_id, (days, cutoff) in sorted(tenant_cutoffs(docs, at).items()):
            cleared, after = 0, None
            while page := await self.store.agents_of(tenant_id, after, PAGE):
                for doc in page:
                    n = forget_old_previews(doc, cutoff)
                    if n and await self.store.save(doc):
                        cleared += n
                after = agent_doc_id(page[-1].tenant_id, page[-1].agent_id)
                if len(page) < PAGE:
                    break
            PREVIEWS_CLEARED.inc(cleared)
            if cleared:
                log(logger, logging.INFO, "tenant retention applied", tenant_id=tenant_id, retention_days=days,
                    previews=cleared)
            done[tenant_id] = cleared
        return done
