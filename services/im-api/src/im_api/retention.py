"""The retention job: a tenant's messages older than its `retention_days` are deleted, with what
derives from them here (their earlier versions, the thread's preview, a team request's question,
the tenant's sent outbox records), a bounded number per round. The rules are retention_rules.py.

Collections owned here: `retention_lease` `{_id: "messages", owner, expires_at}` — which im-api
process runs the rounds (any may; one at a time, so two do not delete and audit the same messages).

Nothing of it needs a transaction, so a process killed at any point leaves no lock behind and a
state the next round finishes: what derives from a message is removed before the message, every
step removes only what is past the limit (so a re-run repeats nothing that matters), and the
messages past the limit are found again from the data itself — there is no progress to lose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from im_contracts.models import to_rfc3339
from im_contracts.retention import MESSAGE_SETTINGS_COLLECTION, RETENTION_ON, tenant_cutoffs
from im_runtime.logs import log
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from . import retention_rules as rules
from .lifecycle import Actor, Audit
from .metrics import RETENTION_DERIVED_DELETED, RETENTION_MESSAGES_DELETED
from .store import EPOCH, now

logger = logging.getLogger("im_api.retention")

SYSTEM = Actor("system:retention", "system")
LEASE_ID = "messages"


async def create_indexes(db: AsyncDatabase) -> None:
    """The job's reads: a tenant's messages by age, the versions of a list of messages, a tenant's
    sent outbox records by age (im-api at start, and imctl migrate)."""
    await db["messages"].create_indexes([
        IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING)], name="by_age"),
    ])
    await db["message_versions"].create_indexes([
        IndexModel([("tenant_id", ASCENDING), ("message_id", ASCENDING)], name="by_message"),
    ])
    # SecantusDB serves a query from an index only when the index holds every field it filters
    # on: `sent_ttl` (sent_at alone) plus a tenant_id filter was a scan of the whole outbox. One
    # more key per record write (measured within the noise of 10,000 inserts and sends).
    await db["outbox"].create_indexes([
        IndexModel([("tenant_id", ASCENDING), ("sent_at", ASCENDING)], name="sent_by_tenant"),
    ])


class Retention:
    def __init__(self, db: AsyncDatabase, audit: Audit, owner: str, *, budget: int, lease_s: float,
                 outbox_retention_s: float) -> None:
        self._settings = db[MESSAGE_SETTINGS_COLLECTION]
        self._messages = db["messages"]
        self._versions = db["message_versions"]
        self._conversations = db["conversations"]
        self._outbox = db["outbox"]
        self._lease = db["retention_lease"]
        self.audit = audit
        self.owner = owner
        self.budget = budget
        self.lease_s = lease_s
        self.outbox_retention_s = outbox_retention_s
        # tenant -> (days, until): nothing of it can pass its limit before then (retention_rules).
        self.quiet: dict[str, tuple[int, datetime]] = {}
        self.turn = 0

    # --- the lease ----------------------------------------------------------------------------

    async def hold(self, at: datetime) -> bool:
        """Takes or renews the lease (one single-document write); False while another process holds
        it. A holder that dies keeps it until it expires, then the next process to look takes it."""
        until = at + timedelta(seconds=self.lease_s)
        taken = await self._lease.update_one(
            {"_id": LEASE_ID, "$or": [{"owner": self.owner}, {"expires_at": {"$lt": at}}]},
            {"$set": {"owner": self.owner, "expires_at": until}})
        if taken.matched_count:
            return True
        try:
            await self._lease.insert_one({"_id": LEASE_ID, "owner": self.owner, "expires_at": until})
        except DuplicateKeyError:
            return False
        return True

    async def release(self) -> None:
        """At a clean stop: another process may take the rounds over at once."""
        await self._lease.update_one({"_id": LEASE_ID, "owner": self.owner}, {"$set": {"expires_at": EPOCH}})

    # --- a round --------------------------------------------------------------------------------

    async def run(self, interval_s: float) -> None:
        """A round every `interval_s`, until cancelled (every im-api runs it; the lease picks one)."""
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round finds what this one left
                log(logger, logging.WARNING, "retention round failed", error=type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def round(self) -> dict[str, Counter]:
        """One round: at most `budget` messages and sent outbox records deleted, shared fairly among
        the tenants that have some past their limit. What was deleted, per tenant."""
        started, at = time.monotonic(), now()
        if not await self.hold(at):
            return {}
        retention = tenant_cutoffs(await self._settings.find(RETENTION_ON, {"tenant_id": 1, "retention_days": 1})
                                   .to_list(), at)
        self.quiet = {t: hint for t, hint in self.quiet.items() if t in retention}
        order = rules.turn_order(rules.due_tenants(retention, self.quiet, at), self.turn)
        found: dict[str, tuple[list[dict], list[Any]]] = {}
        for tenant in order:
            days, cutoff = retention[tenant]
            found[tenant] = (await self.expired_messages(tenant, cutoff, self.budget),
                             await self.expired_outbox(tenant, days, cutoff, self.budget))
            if not any(found[tenant]):
                self.quiet[tenant] = (days, rules.quiet_until(days, await self.oldest(tenant, days), at))
        shares = rules.fair_shares([(t, len(m) + len(o)) for t, (m, o) in found.items()], self.budget)
        self.turn = rules.next_turn(self.turn, len(order), sum(1 for s in shares.values() if s))
        done: dict[str, Counter] = {}
        for tenant, (messages, outbox) in found.items():
            if shares[tenant]:
                days, cutoff = retention[tenant]
                m, o = rules.split_share(shares[tenant], len(messages), len(outbox))
                done[tenant] = await self.delete(tenant, days, cutoff, messages[:m], outbox[:o])
        total = sum(done.values(), Counter())
        log(logger, logging.INFO if total else logging.DEBUG, "retention round", tenants_due=len(order),
            tenants_served=len(done), **dict(total), took_ms=round((time.monotonic() - started) * 1000, 1))
        return done

    async def expired_messages(self, tenant_id: str, cutoff: datetime, limit: int) -> list[dict]:
        """The tenant's oldest messages past the cutoff (the `by_age` index)."""
        return await (self._messages.find({"tenant_id": tenant_id, "created_at": {"$lt": cutoff}},
                                          {"conversation_id": 1, "seq": 1})
                      .sort("created_at", ASCENDING).limit(limit).to_list())

    def outbox_expires_first(self, days: int) -> bool:
        """Whether the outbox's own TTL removes the tenant's sent records before its limit does
        (then this job leaves them alone)."""
        return days * 86_400 >= self.outbox_retention_s

    async def expired_outbox(self, tenant_id: str, days: int, cutoff: datetime, limit: int) -> list[Any]:
        """Ids of the tenant's records sent before the cutoff (never an unsent one: null is not
        below a time), when the outbox's TTL would keep them longer than the tenant's limit."""
        if self.outbox_expires_first(days):
            return []
        rows = await (self._outbox.find({"tenant_id": tenant_id, "sent_at": {"$lt": cutoff}}, {"_id": 1})
                      .sort("sent_at", ASCENDING).limit(limit).to_list())
        return [r["_id"] for r in rows]

    async def oldest(self, tenant_id: str, days: int) -> list[datetime | None]:
        """When the oldest of what the job deletes for the tenant was written (None: there is none)."""
        message = await self._messages.find_one({"tenant_id": tenant_id}, {"created_at": 1},
                                                sort=[("created_at", ASCENDING)])
        times = [message["created_at"] if message else None]
        if not self.outbox_expires_first(days):
            record = await self._outbox.find_one({"tenant_id": tenant_id, "sent_at": {"$gte": EPOCH}},
                                                 {"sent_at": 1}, sort=[("sent_at", ASCENDING)])
            times.append(record["sent_at"] if record else None)
        return times

    # --- one tenant's share -----------------------------------------------------------------------

    async def delete(self, tenant_id: str, days: int, cutoff: datetime, messages: list[dict],
                     outbox: list[Any]) -> Counter:
        """Audited first (a kill after it leaves a record and work the next round does and records
        again; the other way round, deleted messages with no record); then what derives from the
        messages, then the messages."""
        seqs = rules.by_conversation(messages)
        ids = [m["_id"] for m in messages]
        await self.audit.record(tenant_id, SYSTEM, "retention.delete",
                                {"type": "messages", "before": to_rfc3339(cutoff)},
                                {"retention_days": days, "messages": len(ids), "conversations": len(seqs),
                                 "outbox_records": len(outbox)})
        counts: Counter = Counter()
        await self._derived(tenant_id, ids, seqs, cutoff, counts)
        if outbox:
            gone = await self._outbox.delete_many({"_id": {"$in": outbox}, "tenant_id": tenant_id,
                                                   "sent_at": {"$lt": cutoff}})
            counts["outbox"] += gone.deleted_count
        if ids:
            gone = await self._messages.delete_many({"_id": {"$in": ids}, "tenant_id": tenant_id})
            counts["messages"] += gone.deleted_count
            # Once more: an admin's deletion of one of them that committed in between wrote a
            # version and a tombstone preview after the first pass (it cannot commit after the
            # message is gone: its transaction changes the message, and conflicts).
            await self._derived(tenant_id, ids, seqs, cutoff, counts)
        RETENTION_MESSAGES_DELETED.inc(counts["messages"])
        for what in ("versions", "previews", "questions", "outbox"):
            RETENTION_DERIVED_DELETED.labels(what).inc(counts[what])
        return counts

    async def _derived(self, tenant_id: str, ids: list[Any], seqs: dict[str, list[int]], cutoff: datetime,
                       counts: Counter) -> None:
        """The messages' earlier versions, their threads' previews past the cutoff, the questions
        of the team requests whose first message goes. Single-document writes on threads: a
        multi-document update on rows the send path changes in transactions has wedged SecantusDB
        (store.py, the relay's leases)."""
        if not ids:
            return
        gone = await self._versions.delete_many({"tenant_id": tenant_id, "message_id": {"$in": ids}})
        counts["versions"] += gone.deleted_count
        threads = await self._conversations.find(
            {"_id": {"$in": list(seqs)}, "tenant_id": tenant_id},
            {"last_message.seq": 1, "last_message.created_at": 1, "team_request.question": 1}).to_list()
        previews, questions = rules.stale_derived(threads, seqs, cutoff)
        for conversation_id, seq in previews:
            # Only while it is still that message: a message posted meanwhile is the new preview.
            changed = await self._conversations.update_one(
                {"_id": conversation_id, "tenant_id": tenant_id, "last_message.seq": seq,
                 "last_message.created_at": {"$lt": cutoff}}, {"$set": {"last_message": None}})
            counts["previews"] += changed.modified_count
        for conversation_id in questions:
            changed = await self._conversations.update_one(
                {"_id": conversation_id, "tenant_id": tenant_id, "team_request.question": {"$ne": None}},
                {"$set": {"team_request.question": None}})
            counts["questions"] += changed.modified_count
