"""Delivery's MongoDB collections: per-agent queues, heads, devices, live connections, tickets.

Collections (owned by delivery; every document and index starts with tenant_id):
- `delivery_queue`       {tenant_id, agent_id, cursor, dedupe_key, frame, created_at} — the queue;
                         unique (tenant_id, agent_id, cursor) and (tenant_id, agent_id, dedupe_key).
- `delivery_heads`       {_id compound_id(tenant, agent), tenant_id, agent_id, cursor, pruned_through}
                         — the last cursor appended (PUBLIC: im-api reads it read-only as
                         `stream_cursor`, by its tenant_id + agent_id fields, brief-interfaces #1)
                         and the highest cursor pruned.
- `delivery_devices`     {_id compound_id(tenant, agent, device), tenant_id, agent_id, device_id,
                         cursor} — each device's acknowledged cursor (only moves forward).
- `delivery_connections` {_id connection id, tenant_id, agent_id, device_id, gateway_id, epoch}
                         — which gateways hold which agent (routes the signals).
- `delivery_gateways`    {_id gateway id, tenant_id "_system", epoch, seen_at} — the last heartbeat
                         the worker saw; a silent or rebooted gateway's registrations are dropped.
- `delivery_tickets`     {_id compound_id(tenant, ticket), tenant_id, expires_at} — used stream
                         tickets (single use; TTL index on expires_at: TTL indexes are single-field).
Projections of the fan-out worker live in `worker/projections.py`. Ids made of several ids use
`compound_id` (length-prefixed): with "tenant:agent" strings, ("a:b", "c") and ("a", "b:c") met.

"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from im_contracts.events import SYSTEM_TENANT
from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from im_runtime.kafka import TransientError
from im_runtime.mongo import compound_id
from pymongo.errors import BulkWriteError, DuplicateKeyError

DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index violation


def dedupe_key(kind: str, *parts: object) -> str:
    """`kind:part:part...` (brief-interfaces #4) with ':' and '%' escaped inside each part, so
    ids that contain ':' never make two entries' keys meet (and plain ids keep the plain form)."""
    return ":".join([kind, *(str(p).replace("%", "%25").replace(":", "%3A") for p in parts)])


def message_key(conversation_id: str, seq: int) -> str:
    """The dedupe key of a message's `message.created` entry."""
    return dedupe_key("msg", conversation_id, seq)


def utcnow() -> datetime:
    return datetime.now(UTC)


def agent_doc_id(tenant_id: str, agent_id: str) -> str:
    return compound_id(tenant_id, agent_id)


def device_doc_id(tenant_id: str, agent_id: str, device_id: str) -> str:
    return compound_id(tenant_id, agent_id, device_id)


@dataclass(frozen=True)
class Entry:
    cursor: int
    frame: dict[str, Any]
    trace_id: str | None = None  # the request that caused it: the gateway's send log names it

    def wire(self) -> dict[str, Any]:
        return {**self.frame, "cursor": self.cursor}


def _on_cursor_index(error: dict[str, Any]) -> bool:
    """A duplicate on the unique (tenant, agent, cursor) index rather than on the dedupe key."""
    pattern = error.get("keyPattern")
    if pattern:
        return "dedupe_key" not in pattern
    return "dedupe_key" not in str(error.get("errmsg", ""))


class DuplicateAppend(Exception):
    """Another writer appended one of these entries meanwhile (unique dedupe key), or the head lags
    the queue (unique cursor): recompute and retry. Any other write error is raised as it is."""

    def __init__(self, on_cursor: bool) -> None:
        super().__init__("cursor taken" if on_cursor else "entry present")
        self.on_cursor = on_cursor


@dataclass(frozen=True)
class NewEntry:
    dedupe_key: str
    frame: dict[str, Any]
    trace_id: str | None = None


class QueueStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self._queue = db["delivery_queue"]
        self._heads = db["delivery_heads"]
        self._devices = db["delivery_devices"]
        self._connections = db["delivery_connections"]
        self._tickets = db["delivery_tickets"]
        self._gateways = db["delivery_gateways"]
        # Read only, here: the directory projection the worker keeps (worker/projections.py), which
        # the gateways consult to let in and keep only active agents.
        self._agents = db["delivery_agents"]

    async def agent_active(self, tenant_id: str, agent_id: str) -> bool | None:
        """What the directory projection says of an agent: True/False, or None if it never heard of it."""
        doc = await self._agents.find_one({"_id": compound_id(tenant_id, agent_id), "tenant_id": tenant_id},
                                          {"active": 1})
        return None if doc is None else doc.get("active") is not False

    async def deactivated(self, tenant_id: str, agent_ids: list[str]) -> list[str]:
        """Those of `agent_ids` the projection says are deactivated (one indexed read)."""
        found = self._agents.find({"_id": {"$in": [compound_id(tenant_id, a) for a in agent_ids]},
                                   "tenant_id": tenant_id, "active": False}, {"agent_id": 1})
        return [doc["agent_id"] async for doc in found]

    # --- what the maintenance job reads and trims -----------------------------------------

    async def queue_heads(self) -> AsyncIterator[tuple[str, str, int, int]]:
        """(tenant, agent, head cursor, pruned through) of every queue: the pruning job's one read
        of every head (a maintenance scan across tenants). Entries can only be in (pruned, head]."""
        async for head in self._heads.find({}, {"tenant_id": 1, "agent_id": 1, "cursor": 1, "pruned_through": 1}):
            yield (head["tenant_id"], head["agent_id"], int(head.get("cursor", 0)),
                   int(head.get("pruned_through", 0)))

    async def all_device_acks(self) -> dict[tuple[str, str], dict[str, int]]:
        """Every remembered device's acknowledged cursor, by agent then device document id: one
        read per sweep (a maintenance scan across tenants), not one per agent."""
        acks: dict[tuple[str, str], dict[str, int]] = {}
        async for d in self._devices.find({}, {"tenant_id": 1, "agent_id": 1, "cursor": 1}):
            acks.setdefault((d["tenant_id"], d["agent_id"]), {})[d["_id"]] = int(d.get("cursor", 0))
        return acks

    async def oldest_entry_at(self, tenant_id: str, agent_id: str) -> datetime | None:
        """When the oldest entry still queued for the agent was written (None: the queue is empty)."""
        doc = await self._queue.find_one({"tenant_id": tenant_id, "agent_id": agent_id}, {"created_at": 1},
                                        sort=[("cursor", ASCENDING)])
        return None if doc is None else doc["created_at"]

    async def device_acks(self, tenant_id: str, agent_id: str) -> dict[str, int]:
        """Each remembered device's acknowledged cursor, by device document id."""
        found = self._devices.find({"tenant_id": tenant_id, "agent_id": agent_id}, {"cursor": 1})
        return {d["_id"]: d["cursor"] async for d in found}

    async def queue_length(self, tenant_id: str, agent_id: str) -> int:
        return await self._queue.count_documents({"tenant_id": tenant_id, "agent_id": agent_id})

    async def cursor_at(self, tenant_id: str, agent_id: str, index: int) -> int | None:
        """The cursor of the queue's `index`-th entry (0: the oldest), None past its end."""
        doc = await self._queue.find_one({"tenant_id": tenant_id, "agent_id": agent_id}, {"cursor": 1},
                                        sort=[("cursor", ASCENDING)], skip=index)
        return None if doc is None else int(doc["cursor"])

    async def last_cursor_where(self, tenant_id: str, agent_id: str, condition: dict[str, Any]) -> int | None:
        """The highest cursor of the entries that meet `condition` (None: none does)."""
        doc = await self._queue.find_one({"tenant_id": tenant_id, "agent_id": agent_id, **condition}, {"cursor": 1},
                                        sort=[("cursor", DESCENDING)])
        return None if doc is None else int(doc["cursor"])

    async def prune_through(self, tenant_id: str, agent_id: str, through: int) -> int:
        """Deletes the entries up to `through`; the head is marked first, so a gateway reading in
        between answers 4409 rather than skipping silently. How many entries went."""
        await self._heads.update_one(self.head_filter(tenant_id, agent_id), {"$max": {"pruned_through": through}})
        result = await self._queue.delete_many({"tenant_id": tenant_id, "agent_id": agent_id,
                                               "cursor": {"$lte": through}})
        return result.deleted_count

    # --- what a tenant's retention removes (worker/retention.py) -----------------------------

    async def tenant_heads(self, tenant_id: str) -> list[tuple[str, int, int]]:
        """(agent, head cursor, pruned through) of every queue of the tenant."""
        found = self._heads.find({"tenant_id": tenant_id}, {"agent_id": 1, "cursor": 1, "pruned_through": 1})
        return [(d["agent_id"], int(d.get("cursor", 0)), int(d.get("pruned_through", 0))) async for d in found]

    async def entry_times(self, tenant_id: str, agent_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Entries after `after` in cursor order, with only what says how old they are and what
        they carry: when each was queued, the time of the message (or preview) in it, a team
        request's question and thread."""
        found = self._queue.find(
            {"tenant_id": tenant_id, "agent_id": agent_id, "cursor": {"$gt": after}},
            {"cursor": 1, "created_at": 1, "frame.message.created_at": 1,
             "frame.conversation.last_message.created_at": 1, "frame.request.conversation_id": 1,
             "frame.request.question": 1}).sort("cursor", ASCENDING).limit(limit)
        return await found.to_list()

    async def drop_entries(self, tenant_id: str, ids: list[Any]) -> int:
        """Deletes entries in the middle of a queue: gaps, which readers allow."""
        if not ids:
            return 0
        return (await self._queue.delete_many({"_id": {"$in": ids}, "tenant_id": tenant_id})).deleted_count

    async def clear_in_entries(self, tenant_id: str, ids: list[Any], path: str) -> int:
        """Sets `path` of the frames of entries `ids` to null (a preview, a question)."""
        if not ids:
            return 0
        result = await self._queue.update_many({"_id": {"$in": ids}, "tenant_id": tenant_id}, {"$set": {path: None}})
        return result.modified_count

    async def ensure_indexes(self) -> None:
        await self._queue.create_index(
            [("tenant_id", ASCENDING), ("agent_id", ASCENDING), ("cursor", ASCENDING)], unique=True
        )
        await self._queue.create_index(
            [("tenant_id", ASCENDING), ("agent_id", ASCENDING), ("dedupe_key", ASCENDING)], unique=True
        )
        await self._heads.create_index([("tenant_id", ASCENDING), ("agent_id", ASCENDING)])
        await self._devices.create_index([("tenant_id", ASCENDING), ("agent_id", ASCENDING), ("cursor", DESCENDING)])
        await self._devices.create_index([("updated_at", ASCENDING)])  # the pruning job's expiry
        await self._connections.create_index([("tenant_id", ASCENDING), ("agent_id", ASCENDING)])
        await self._connections.create_index([("tenant_id", ASCENDING), ("gateway_id", ASCENDING)])
        await self._tickets.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)

    # --- the queue writer (single writer per agent) ---------------------------------------------

    async def rewrite_message(self, tenant_id: str, agent_id: str, message: dict[str, Any],
                              drop_question: bool = False) -> None:
        """Every entry of the agent's queue that carries the message — as itself (created, earlier
        changes) or as a thread's last message (any conversation.updated, a participant change's
        included) — now holds it as it is; with `drop_question` (a redaction of the message a team
        request's question was cut from) the thread's team request frames lose the question. Each
        write stays within the agent's own entries (the queue's tenant/agent index), however the
        message got into them."""
        base = {"tenant_id": tenant_id, "agent_id": agent_id}
        conversation_id, seq = message["conversation_id"], message["seq"]
        # An edit or a deletion: from the message's own entry on (a cursor range of the agent's
        # queue, not the whole of it); without that entry (pruned, never queued for this agent)
        # there is nothing to rewrite. A redaction, or a system line reworded by an erasure, looks
        # at the whole queue: the agent may have joined later and been shown it as a preview, been
        # offered the request its question came from, or (a system line) got the participant
        # change that carries it before the line itself (they travel on two topics).
        if message.get("redacted_at") is not None or message.get("kind") == "system":
            since = base
        else:
            first = await self._queue.find_one({**base, "dedupe_key": message_key(conversation_id, seq)},
                                               {"cursor": 1})
            if first is None:
                return
            since = {**base, "cursor": {"$gte": first["cursor"]}}
        await self._queue.update_many(
            {**since, "frame.message.conversation_id": conversation_id, "frame.message.seq": seq},
            {"$set": {"frame.message": message}})
        await self._queue.update_many(
            {**since, "frame.conversation.id": conversation_id, "frame.conversation.last_message.seq": seq},
            {"$set": {"frame.conversation.last_message": message}})
        if drop_question:
            await self._queue.update_many(
                {**base, "frame.request.conversation_id": conversation_id, "frame.request.question": {"$ne": None}},
                {"$set": {"frame.request.question": None}})

    async def rename_agent(self, tenant_id: str, agent_id: str, display_name: str,
                           readers: dict[str, list[str]]) -> None:
        """An agent's new name (a rename, an erasure) in the frames already queued for `readers`
        (reader -> the threads they share with the agent): thread updates and team requests that
        name them. Each write within one reader's entries; rare (a directory change)."""
        named = {"$elemMatch": {"id": agent_id, "display_name": {"$ne": display_name}}}
        for reader, conversation_ids in sorted(readers.items()):
            base = {"tenant_id": tenant_id, "agent_id": reader}
            # Read, then each entry's list rewritten whole: SecantusDB refuses the positional `$`
            # after an $elemMatch.
            stale = await self._queue.find(
                {**base, "frame.conversation.id": {"$in": conversation_ids}, "frame.conversation.participants": named},
                {"frame.conversation.participants": 1}).to_list()
            if stale:
                await self._queue.bulk_write([UpdateOne({"_id": doc["_id"], "tenant_id": tenant_id}, {"$set": {
                    "frame.conversation.participants": [
                        {**p, "display_name": display_name} if p["id"] == agent_id else p
                        for p in doc["frame"]["conversation"]["participants"]]}}) for doc in stale], ordered=False)
            for party in ("asked_by", "claimed_by"):
                await self._queue.update_many(
                    {**base, f"frame.request.{party}.id": agent_id,
                     f"frame.request.{party}.display_name": {"$ne": display_name}},
                    {"$set": {f"frame.request.{party}.display_name": display_name}})

    async def existing_keys(self, tenant_id: str, agent_id: str, keys: list[str]) -> dict[str, int]:
        """The entries already queued among `keys`: dedupe key -> its cursor."""
        cursor = self._queue.find(
            {"tenant_id": tenant_id, "agent_id": agent_id, "dedupe_key": {"$in": keys}},
            {"dedupe_key": 1, "cursor": 1, "_id": 0},
        )
        return {doc["dedupe_key"]: int(doc["cursor"]) async for doc in cursor}

    async def allocate(self, tenant_id: str, agent_id: str, n: int, known: int | None = None) -> int:
        """Moves the agent's head by n and returns the new head (the last cursor allocated).

        A compare-and-set from the head the writer last saw (`known`, else read now): one update
        that matches only if nobody moved the head since, so the new head is known + n without
        reading it back. findAndModify would say the same in one command, but on SecantusDB it
        walks the whole collection (~100 ms at 20,000 heads). When the head moved (another
        writer before a rebalance, a repair, a restore), it is read again and the set retried."""
        filter_ = self.head_filter(tenant_id, agent_id)
        for _ in range(3):
            if known is None:
                doc = await self._heads.find_one(filter_, {"cursor": 1})
                known = 0 if doc is None else int(doc.get("cursor", 0))
            try:
                # Upsert: a first append creates the head (cursor known + n, from the filter's value).
                result = await self._heads.update_one({**filter_, "cursor": known}, {"$inc": {"cursor": n}},
                                                     upsert=True)
                if result.matched_count or result.upserted_id is not None:
                    return known + n
            except DuplicateKeyError:
                pass  # the head exists with another cursor: the upsert collided with it
            known = None
        head = await self._heads.find_one_and_update(filter_, {"$inc": {"cursor": n}}, upsert=True,
                                                    return_document=ReturnDocument.AFTER)
        return int(head["cursor"])

    async def append(self, tenant_id: str, agent_id: str, items: list[NewEntry], known: int | None = None) -> int:
        """Allocates len(items) cursors and inserts the entries in order; returns the last cursor."""
        last = await self.allocate(tenant_id, agent_id, len(items), known)
        first = last - len(items) + 1
        now = utcnow()
        docs = [self.entry_doc(tenant_id, agent_id, first + i, item, now) for i, item in enumerate(items)]
        try:
            await self._queue.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            # Cursors allocated but not used are gaps, which readers allow (brief-interfaces #1).
            errors = exc.details.get("writeErrors") or []
            if errors and all(e.get("code") == DUPLICATE_KEY for e in errors):
                raise DuplicateAppend(on_cursor=any(_on_cursor_index(e) for e in errors)) from exc
            if not errors:  # only a write concern failed: the entries may be there; try again later
                raise TransientError("queue append: write concern not satisfied") from exc
            raise  # e.g. an entry too large: never a duplicate, retrying cannot help
        return last

    async def allocate_many(self, wanted: dict[tuple[str, str], tuple[int, int]]) -> set[tuple[str, str]]:
        """`allocate` for many agents in ONE command: (tenant, agent) -> (known head, n). Each head
        moves by n only if it is still at `known` (an unordered bulk of compare-and-sets; a head
        that moved meanwhile makes its upsert collide with the existing head). The agents whose
        head moved: their cursors are known + 1 .. known + n."""
        agents = list(wanted)
        ops = [UpdateOne({**self.head_filter(t, a), "cursor": known}, {"$inc": {"cursor": n}}, upsert=True)
               for (t, a), (known, n) in wanted.items()]
        try:
            await self._heads.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if not errors:  # only a write concern failed: the heads may have moved; retry later
                raise TransientError("head allocation: write concern not satisfied") from exc
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return set(agents) - {agents[e["index"]] for e in errors}
        return set(agents)

    async def insert_entries(self, docs: list[dict[str, Any]]) -> tuple[int, bool] | None:
        """Inserts queue entries (`entry_doc`) in order in ONE command. None when all went in;
        else (index, on_cursor) of the first one refused as a duplicate: those before it are in,
        those after it are not (ordered)."""
        try:
            await self._queue.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if errors and all(e.get("code") == DUPLICATE_KEY for e in errors):
                first = min(errors, key=lambda e: e["index"])
                return first["index"], _on_cursor_index(first)
            if not errors:
                raise TransientError("queue append: write concern not satisfied") from exc
            raise  # e.g. an entry too large: never a duplicate, retrying cannot help
        return None

    @staticmethod
    def entry_doc(tenant_id: str, agent_id: str, cursor: int, item: NewEntry, at: datetime) -> dict[str, Any]:
        return {"tenant_id": tenant_id, "agent_id": agent_id, "cursor": cursor, "dedupe_key": item.dedupe_key,
                "frame": item.frame, "trace_id": item.trace_id, "created_at": at}

    def head_filter(self, tenant_id: str, agent_id: str) -> dict[str, Any]:
        return {"_id": agent_doc_id(tenant_id, agent_id), "tenant_id": tenant_id, "agent_id": agent_id}

    async def head(self, tenant_id: str, agent_id: str) -> dict[str, Any]:
        doc = await self._heads.find_one(self.head_filter(tenant_id, agent_id))
        return doc or {"cursor": 0, "pruned_through": 0}

    async def heads_of(self, tenant_id: str, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The heads of many agents of one tenant in one query (index tenant_id, agent_id): the
        gateway's safety poll, which must not cost one query per held connection."""
        found = self._heads.find({"tenant_id": tenant_id, "agent_id": {"$in": agent_ids}},
                                {"agent_id": 1, "cursor": 1, "pruned_through": 1})
        return {doc["agent_id"]: doc async for doc in found}

    async def repair_head(self, tenant_id: str, agent_id: str) -> None:
        """The head is behind the queue (it was lost or restored from an older backup): move it to
        the highest cursor present, so new cursors never collide with existing ones."""
        top = await self._queue.find_one({"tenant_id": tenant_id, "agent_id": agent_id}, {"cursor": 1},
                                        sort=[("cursor", DESCENDING)])
        if top is not None:
            await self._heads.update_one(self.head_filter(tenant_id, agent_id),
                                        {"$max": {"cursor": int(top["cursor"])}}, upsert=True)

    # --- readers (gateways) ---------------------------------------------------------------------

    async def entries_after(self, tenant_id: str, agent_id: str, cursor: int, limit: int,
                            through: int | None = None) -> list[Entry]:
        """Entries after `cursor` in order, at most `limit`; only up to `through` when given (a
        bounded range: what an open one costs grows with the rest of the queue on some servers)."""
        bounds: dict[str, int] = {"$gt": cursor}
        if through is not None:
            bounds["$lte"] = through
        found = self._queue.find(
            {"tenant_id": tenant_id, "agent_id": agent_id, "cursor": bounds},
            {"cursor": 1, "frame": 1, "trace_id": 1, "_id": 0},
        ).sort("cursor", ASCENDING).limit(limit)
        return [Entry(int(doc["cursor"]), doc["frame"], doc.get("trace_id")) async for doc in found]

    async def device_cursors(self, tenant_id: str, agent_id: str) -> dict[str, int]:
        """Every device of the agent and its acknowledged cursor (an agent has a few devices)."""
        found = self._devices.find({"tenant_id": tenant_id, "agent_id": agent_id}, {"device_id": 1, "cursor": 1})
        return {doc["device_id"]: int(doc["cursor"]) async for doc in found}

    async def forget_devices(self, tenant_id: str, agent_id: str, keep: int) -> list[str]:
        """Forgets all but the agent's `keep` most recently acknowledging devices; their ids."""
        found = self._devices.find({"tenant_id": tenant_id, "agent_id": agent_id}, {"device_id": 1, "updated_at": 1})
        docs = sorted([d async for d in found], key=lambda d: d.get("updated_at") or datetime.min.replace(tzinfo=UTC),
                      reverse=True)
        old = docs[keep:]
        if old:
            await self._devices.delete_many({"_id": {"$in": [d["_id"] for d in old]}, "tenant_id": tenant_id})
        return [d["device_id"] for d in old]

    async def expire_devices(self, unused_for_s: float) -> int:
        """The maintenance job: forgets every device (of any tenant) silent for `unused_for_s`."""
        cutoff = utcnow() - timedelta(seconds=unused_for_s)
        return (await self._devices.delete_many({"updated_at": {"$lt": cutoff}})).deleted_count

    async def acknowledge(self, tenant_id: str, agent_id: str, device_id: str, cursor: int) -> None:
        """Moves the device's cursor forward only ($max); creates the device on first sight."""
        await self._devices.update_one(
            {"_id": device_doc_id(tenant_id, agent_id, device_id), "tenant_id": tenant_id, "agent_id": agent_id,
             "device_id": device_id},
            {"$max": {"cursor": cursor}, "$set": {"updated_at": utcnow()}},
            upsert=True,
        )

    async def acknowledge_many(self, acks: list[tuple[str, str, str, int]]) -> None:
        """`acknowledge` for many devices (tenant, agent, device, cursor) in ONE command."""
        now = utcnow()
        await self._devices.bulk_write([
            UpdateOne({"_id": device_doc_id(t, a, d), "tenant_id": t, "agent_id": a, "device_id": d},
                      {"$max": {"cursor": cursor}, "$set": {"updated_at": now}}, upsert=True)
            for t, a, d, cursor in acks], ordered=False)

    async def use_ticket(self, tenant_id: str, ticket_id: str, expires_at: float, keep_s: float) -> bool:
        """True the first time a ticket id is seen, False on every replay."""
        until = datetime.fromtimestamp(expires_at, UTC) + timedelta(seconds=keep_s)
        try:
            await self._tickets.insert_one({"_id": compound_id(tenant_id, ticket_id), "tenant_id": tenant_id,
                                           "expires_at": until})
        except DuplicateKeyError:
            return False
        return True

    # --- the connection registry ----------------------------------------------------------------

    async def register(self, connection_id: str, tenant_id: str, agent_id: str, device_id: str,
                       gateway_id: str, epoch: str) -> None:
        # An upsert: the heartbeat's re-assertion may have written this connection already.
        await self._connections.update_one(
            {"_id": connection_id},
            {"$set": {"tenant_id": tenant_id, "agent_id": agent_id, "device_id": device_id,
                      "gateway_id": gateway_id, "epoch": epoch},
             "$setOnInsert": {"opened_at": utcnow()}},
            upsert=True,
        )

    async def register_many(self, connections: list[tuple[str, str, str, str]], gateway_id: str, epoch: str) -> None:
        """`register` for many (connection, tenant, agent, device) of this gateway in ONE command."""
        now = utcnow()
        await self._connections.bulk_write([
            UpdateOne({"_id": connection_id},
                      {"$set": {"tenant_id": t, "agent_id": a, "device_id": d, "gateway_id": gateway_id,
                                "epoch": epoch},
                       "$setOnInsert": {"opened_at": now}}, upsert=True)
            for connection_id, t, a, d in connections], ordered=False)

    async def registered_here(self, gateway_id: str, tenant_ids: list[str]) -> set[str]:
        """Connection ids the registry holds for this gateway (index (tenant_id, gateway_id))."""
        found = self._connections.find({"tenant_id": {"$in": tenant_ids}, "gateway_id": gateway_id}, {"_id": 1})
        return {doc["_id"] async for doc in found}

    async def count_registered_here(self, gateway_id: str, tenant_ids: list[str]) -> int:
        return await self._connections.count_documents({"tenant_id": {"$in": tenant_ids}, "gateway_id": gateway_id})

    async def unregister(self, connection_id: str, tenant_id: str) -> None:
        await self._connections.delete_one({"_id": connection_id, "tenant_id": tenant_id})

    async def forget_gateway(self, gateway_id: str) -> None:
        """At boot: registrations a previous process with this gateway id left behind (a crash)."""
        await self._connections.delete_many({"gateway_id": gateway_id})

    async def gateway_seen(self, gateway_id: str, epoch: str, seen_at: datetime, sweep: bool = True) -> None:
        """A heartbeat; with `sweep`, registrations an earlier boot (another epoch) opened before it
        are dropped (a scan of the gateway's registrations: the caller does it when the epoch is new
        to it, and now and then)."""
        await self._gateways.update_one(
            {"_id": gateway_id},
            {"$set": {"tenant_id": SYSTEM_TENANT}, "$max": {"seen_at": seen_at}},
            upsert=True,
        )
        if sweep:
            await self._connections.delete_many(
                {"gateway_id": gateway_id, "epoch": {"$ne": epoch}, "opened_at": {"$lt": seen_at}}
            )

    async def expire_gateways(self, silent_for_s: float) -> list[str]:
        """Gateways silent for `silent_for_s` by the heartbeat clock (the newest beat seen from any
        gateway, so a lagging worker expires nobody): drop their registrations."""
        newest = await self._gateways.find_one({}, {"seen_at": 1}, sort=[("seen_at", DESCENDING)])
        if newest is None:
            return []
        # Silent by both clocks: the heartbeat stream's own and the wall clock.
        cutoff = min(newest["seen_at"], utcnow()) - timedelta(seconds=silent_for_s)
        gone = [doc["_id"] async for doc in self._gateways.find({"seen_at": {"$lt": cutoff}}, {"_id": 1})]
        for gateway_id in gone:
            await self._connections.delete_many({"gateway_id": gateway_id})
            await self._gateways.delete_one({"_id": gateway_id, "seen_at": {"$lt": cutoff}})
        return gone

    async def gateways_holding(self, tenant_id: str, agent_ids: list[str]) -> set[tuple[str, str]]:
        """(agent_id, gateway_id) pairs for the agents' live connections."""
        found = self._connections.find(
            {"tenant_id": tenant_id, "agent_id": {"$in": agent_ids}}, {"agent_id": 1, "gateway_id": 1}
        )
        return {(doc["agent_id"], doc["gateway_id"]) async for doc in found}
