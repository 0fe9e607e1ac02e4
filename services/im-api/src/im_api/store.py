"""MongoDB for im-api: its collections, their indexes (tenant_id first) and the queries on them.

Collections owned by im-api:
- `agents`: `{_id: compound_id(tenant, agent), tenant_id, agent_id, display_name, name_lc, email, role,
  active, outbox_seq, created_at, updated_at}` — the directory; `name_lc` serves the prefix search.
- `conversations`: `{_id, tenant_id, participants: [agent ids], start_key, related, created_by,
  created_at, last_seq, last_message, last_message_at, read: {field_name(agent): last_read_seq},
  outbox_seq, list_key, related_key}` — `start_key` (sorted starting agents + related) is unique per tenant, so two
  concurrent starts yield one thread; `read` keys are `im_runtime.mongo.field_name`.
- `messages`: `{_id, tenant_id, conversation_id, seq, sender_id, body, kind, client_msg_id,
  created_at}` — unique per (conversation, seq) and per (conversation, sender, client_msg_id).
- `outbox`: `{tenant_id, shard, conversation_id (the ordering key: a conversation id, or
  "agent:<tenant>:<agent>"), order, topic (base name), key, value, headers (the trace id among
  them), created_at, sent_at, dead_letter (a reason, when set aside)}` and `outbox_leases`
  `{_id: shard, owner, token, expires_at}` plus `outbox_relays` `{_id: owner, expires_at}`. EXCEPTION to "tenant_id first": these indexes are
  keyed by shard, because the relay publishes across tenants; the records still carry tenant_id.
- `assistance_requests`: `{_id: compound_id(tenant, request_id), tenant_id, request_id, fingerprint,
  requested_by, conversation_id, message_id, source: {topic, partition, offset}, created_at}` —
  one per processed AssistanceRequested, written in the transaction of the message it posted;
  unique per (tenant, request_id); kept (a few hundred bytes each, and the audit of what was asked;
  no TTL, since a TTL index cannot lead with tenant_id).
Read-only, owned by delivery: `delivery_heads` `{_id: compound_id(tenant, agent), tenant_id,
agent_id, cursor}` (the `stream_cursor` of the thread list, read by its tenant_id and agent_id).
`compound_id` length-prefixes each part, so ids that contain ":" never make two keys meet.
"""

from __future__ import annotations

import asyncio

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from im_runtime.mongo import compound_id, field_name
from pymongo.asynchronous.database import AsyncDatabase


def now() -> datetime:
    """UTC now at MongoDB's millisecond precision, so cursors and stored times compare equal."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def list_key(last_message_at: datetime, conversation_id: str) -> str:
    """The thread list's one sort key, (last_message_at, _id) as sortable text: a keyset walk on a
    single field is a plain index range (an $or of two bounds made SecantusDB scan the collection)."""
    return last_message_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z|" + conversation_id


def related_key(related_type: str, related_id: str) -> str:
    return f"{related_type}:{related_id}"


def agent_doc_id(tenant_id: str, agent_id: str) -> str:
    return compound_id(tenant_id, agent_id)


class Store:
    def __init__(self, db: AsyncDatabase, *, outbox_retention_s: int) -> None:
        self.db = db
        self.agents = db["agents"]
        self.conversations = db["conversations"]
        self.messages = db["messages"]
        self.outbox = db["outbox"]
        self.outbox_leases = db["outbox_leases"]
        self.outbox_relays = db["outbox_relays"]
        self.delivery_heads = db["delivery_heads"]
        self.assistance_requests = db["assistance_requests"]
        self._retention = outbox_retention_s

    async def create_indexes(self) -> None:
        """Idempotent: creating an existing index with the same spec is a no-op."""
        await self.agents.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("agent_id", ASCENDING)], unique=True, name="agent"),
            IndexModel([("tenant_id", ASCENDING), ("active", ASCENDING), ("name_lc", ASCENDING),
                        ("agent_id", ASCENDING)], name="directory_by_name"),
        ])
        await self.conversations.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("start_key", ASCENDING)], unique=True, name="start_identity"),
            IndexModel([("tenant_id", ASCENDING), ("participants", ASCENDING), ("list_key", DESCENDING)],
                       name="thread_list"),
            # A flat "type:id" field: SecantusDB's planner does not pick indexes on dotted paths.
            IndexModel([("tenant_id", ASCENDING), ("related_key", ASCENDING), ("list_key", DESCENDING)],
                       name="related"),
        ])
        await self.messages.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("seq", ASCENDING)],
                       unique=True, name="history"),
            IndexModel([("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("sender_id", ASCENDING),
                        ("client_msg_id", ASCENDING)], unique=True, name="idempotency",
                       partialFilterExpression={"client_msg_id": {"$type": "string"}}),
            # The same keys, whole: what the send path's idempotency read uses. A server may only
            # use a partial index when it can prove the query implies its filter; SecantusDB cannot
            # for `$type` (nor for `$in`), so that read would be a COLLSCAN of every message.
            # (`seq` last: a key pattern of its own, as some MongoDB versions refuse a second index
            # on the same keys that differs only by being whole.)
            IndexModel([("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("sender_id", ASCENDING),
                        ("client_msg_id", ASCENDING), ("seq", ASCENDING)], name="idempotency_lookup"),
        ])
        await self.outbox.create_indexes([
            IndexModel([("shard", ASCENDING), ("sent_at", ASCENDING), ("conversation_id", ASCENDING),
                        ("order", ASCENDING)], name="pending_by_shard"),
            # Only sent records expire (sent_at is null until then, and TTL ignores nulls).
            IndexModel([("sent_at", ASCENDING)], expireAfterSeconds=self._retention, name="sent_ttl"),
        ])
        await self.assistance_requests.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("request_id", ASCENDING)], unique=True, name="request"),
        ])
        # A relay that died without saying goodbye drops out of the fair-share count by expires_at;
        # the TTL only tidies the rows up later.
        await self.outbox_relays.create_index([("expires_at", ASCENDING)], expireAfterSeconds=3600,
                                              name="relay_ttl")

    # --- agents ---------------------------------------------------------------------------

    async def agent(self, tenant_id: str, agent_id: str, session: Any = None) -> dict | None:
        return await self.agents.find_one({"tenant_id": tenant_id, "agent_id": agent_id}, session=session)

    async def is_active_agent(self, tenant_id: str, agent_id: str) -> bool:
        doc = await self.agents.find_one(
            {"tenant_id": tenant_id, "agent_id": agent_id}, projection={"active": 1, "_id": 0}
        )
        return bool(doc and doc.get("active"))

    async def agents_by_id(self, tenant_id: str, agent_ids: list[str], active_only: bool = False,
                           session: Any = None) -> dict[str, dict]:
        query: dict[str, Any] = {"tenant_id": tenant_id, "agent_id": {"$in": list(agent_ids)}}
        if active_only:
            query["active"] = True
        return {d["agent_id"]: d async for d in self.agents.find(query, session=session)}

    async def display_names(self, tenant_id: str, agent_ids: set[str]) -> dict[str, str]:
        if not agent_ids:
            return {}
        cursor = self.agents.find(
            {"tenant_id": tenant_id, "agent_id": {"$in": sorted(agent_ids)}},
            projection={"agent_id": 1, "display_name": 1, "_id": 0},
        )
        return {d["agent_id"]: d["display_name"] async for d in cursor}

    # --- conversations --------------------------------------------------------------------

    async def conversation(self, tenant_id: str, conversation_id: str, session: Any = None) -> dict | None:
        return await self.conversations.find_one({"_id": conversation_id, "tenant_id": tenant_id}, session=session)

    def thread_list_query(self, tenant_id: str, agent_id: str, snapshot: datetime,
                          after: str | None) -> dict[str, Any]:
        """Threads not changed after `snapshot`, below the list key `after` (the previous page's last)."""
        bound = list_key(snapshot, "\uffff")
        if after is not None and after < bound:
            return {"tenant_id": tenant_id, "participants": agent_id, "list_key": {"$lt": after}}
        return {"tenant_id": tenant_id, "participants": agent_id, "list_key": {"$lte": bound}}

    THREAD_ORDER = [("list_key", DESCENDING)]

    # Queries name their index: with two candidate indexes SecantusDB's planner falls back to a
    # collection scan (seen in explain()); the hint keeps every hot query on its index.
    def thread_cursor(self, tenant_id: str, agent_id: str, snapshot: datetime, after: str | None, limit: int):
        return (self.conversations.find(self.thread_list_query(tenant_id, agent_id, snapshot, after))
                .sort(self.THREAD_ORDER).limit(limit).hint("thread_list"))

    async def thread_page(self, tenant_id: str, agent_id: str, snapshot: datetime,
                          after: str | None, limit: int) -> list[dict]:
        return await self.thread_cursor(tenant_id, agent_id, snapshot, after, limit).to_list()

    def related_query(self, tenant_id: str, related_type: str, related_id: str,
                      agent_id: str | None) -> dict[str, Any]:
        query: dict[str, Any] = {"tenant_id": tenant_id, "related_key": related_key(related_type, related_id)}
        if agent_id is not None:
            query["participants"] = agent_id
        return query

    def related_cursor(self, tenant_id: str, related_type: str, related_id: str, agent_id: str | None,
                       limit: int):
        return (self.conversations.find(self.related_query(tenant_id, related_type, related_id, agent_id))
                .sort(self.THREAD_ORDER).limit(limit).hint("related"))

    async def related(self, tenant_id: str, related_type: str, related_id: str, agent_id: str | None,
                      limit: int) -> list[dict]:
        return await self.related_cursor(tenant_id, related_type, related_id, agent_id, limit).to_list()

    async def unread_rows(self, tenant_id: str, agent_id: str, limit: int) -> list[dict]:
        """The agent's `limit` most recently active threads (last_seq and the agent's read marker)."""
        cursor = (self.conversations.find({"tenant_id": tenant_id, "participants": agent_id},
                                          projection={"last_seq": 1, f"read.{field_name(agent_id)}": 1})
                  .sort(self.THREAD_ORDER).limit(limit).hint("thread_list"))
        return await cursor.to_list()

    async def stream_cursor(self, tenant_id: str, agent_id: str) -> int:
        """Delivery's last appended cursor for the agent (absent = 0); read-only, owned by delivery."""
        doc = await self.delivery_heads.find_one({"tenant_id": tenant_id, "agent_id": agent_id},
                                                 projection={"cursor": 1})
        value = doc.get("cursor") if doc else 0
        return value if isinstance(value, int) else 0

    # --- messages -------------------------------------------------------------------------

    def history_query(self, tenant_id: str, conversation_id: str, before_seq: int | None,
                      after_seq: int | None) -> dict[str, Any]:
        query: dict[str, Any] = {"tenant_id": tenant_id, "conversation_id": conversation_id}
        bounds: dict[str, int] = {}
        if before_seq is not None:
            bounds["$lt"] = before_seq
        if after_seq is not None:
            bounds["$gt"] = after_seq
        if bounds:
            query["seq"] = bounds
        return query

    def history_cursor(self, tenant_id: str, conversation_id: str, before_seq: int | None,
                       after_seq: int | None, limit: int):
        query = self.history_query(tenant_id, conversation_id, before_seq, after_seq)
        # after_seq alone walks forward from it; otherwise the newest `limit` below before_seq.
        forward = after_seq is not None and before_seq is None
        return self.messages.find(query).sort("seq", ASCENDING if forward else DESCENDING).limit(limit).hint("history")

    async def history(self, tenant_id: str, conversation_id: str, before_seq: int | None,
                      after_seq: int | None, limit: int) -> list[dict]:
        rows = await self.history_cursor(tenant_id, conversation_id, before_seq, after_seq, limit).to_list()
        forward = after_seq is not None and before_seq is None
        return rows if forward else rows[::-1]

    @staticmethod
    def client_id_queries(keys: list[tuple[str, str, str, str]]) -> list[dict]:
        """One query per (tenant, conversation, sender) with `$in` on client_msg_id: an index range
        on `idempotency_lookup`. (A `$or` of the keys is a COLLSCAN of every message on SecantusDB
        — ~440 ms at 20,000 messages, on every group commit.)"""
        groups: dict[tuple[str, str, str], set[str]] = {}
        for t, c, s, m in keys:
            groups.setdefault((t, c, s), set()).add(m)
        return [{"tenant_id": t, "conversation_id": c, "sender_id": s, "client_msg_id": {"$in": sorted(ms)}}
                for (t, c, s), ms in groups.items()]

    async def messages_by_client_ids(self, keys: list[tuple[str, str, str, str]]) -> dict[tuple, dict]:
        """(tenant, conversation, sender, client_msg_id) -> the stored message, for those that exist."""
        found = await asyncio.gather(*(self.messages.find(q).to_list() for q in self.client_id_queries(keys)))
        return {(d["tenant_id"], d["conversation_id"], d["sender_id"], d["client_msg_id"]): d
                for docs in found for d in docs}

    async def outbox_backlog(self, shards: list[int]) -> tuple[int, datetime | None]:
        """Unsent outbox records over `shards` and the oldest one's created_at: per shard, on the
        `pending_by_shard` index (a `$in` over the shards is a COLLSCAN of the whole outbox — sent
        records included — on SecantusDB, every lease round)."""
        async def one(shard: int) -> tuple[int, datetime | None]:
            query = self.pending_query(shard)
            count = await self.outbox.count_documents(query)
            oldest = None
            if count:
                doc = await self.outbox.find_one(query, projection={"created_at": 1}, sort=[("created_at", 1)])
                oldest = None if doc is None else doc["created_at"]
            return count, oldest

        per_shard = await asyncio.gather(*(one(s) for s in shards))
        dates = [o for _, o in per_shard if o is not None]
        return sum(n for n, _ in per_shard), (min(dates) if dates else None)

    @staticmethod
    def pending_query(shard: int) -> dict:
        return {"shard": shard, "sent_at": None}
