"""MongoDB for im-api: its collections, their indexes (tenant_id first) and the queries on them.

Collections owned by im-api:
- `agents`: `{_id: compound_id(tenant, agent), tenant_id, agent_id, display_name, name_lc, email, role,
  active, outbox_seq, created_at, updated_at}` — the directory; `name_lc` serves the prefix search.
- `conversations`: `{_id, tenant_id, participants: [agent ids], start_key, related, created_by,
  created_at, last_seq, last_message, last_message_at, read: {field_name(agent): last_read_seq},
  outbox_seq, list_key, related_key, team_request, offered_to, escalate_at}` — a thread asked of teams
  carries its request (`team_request`: teams, asker, question, status, everyone it was ever offered
  to, holder, opened_at, timeout), `offered_to` (who may claim it now; indexed, flat) and
  `escalate_at` (set only while an escalation is due); `start_key` (sorted starting agents + related,
  + teams when asked) is unique per tenant, so two concurrent starts yield one thread; `read` keys are `im_runtime.mongo.field_name`.
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
- `directory_versions`: `{_id: compound_id(tenant, bucket), tenant_id, bucket, version}` — sixteen
  counters per tenant, one moved in the transaction of each change of an agent of its bucket: what
  each process's memory of the agent check (`active_agents.py`) is checked against.
Read-only, owned by delivery: `delivery_heads` `{_id: compound_id(tenant, agent), tenant_id,
agent_id, cursor}` (the `stream_cursor` of the thread list, read by its tenant_id and agent_id).
`compound_id` length-prefixes each part, so ids that contain ":" never make two keys meet.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from im_runtime.mongo import compound_id, field_name
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError


def now() -> datetime:
    """UTC now at MongoDB's millisecond precision, so cursors and stored times compare equal."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def directory_bucket(agent_id: str) -> int:
    return zlib.crc32(agent_id.encode()) % DIRECTORY_BUCKETS


def list_key(last_message_at: datetime, conversation_id: str) -> str:
    """The thread list's one sort key, (last_message_at, _id) as sortable text: a keyset walk on a
    single field is a plain index range (an $or of two bounds made SecantusDB scan the collection)."""
    return last_message_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z|" + conversation_id


def message_doc(tenant_id: str, conversation_id: str, seq: int, sender_id: str, body: str, kind: str,
                client_msg_id: str | None, at: datetime) -> dict[str, Any]:
    """A new message as stored (the one place its shape is written)."""
    return {"_id": uuid.uuid4().hex, "tenant_id": tenant_id, "conversation_id": conversation_id, "seq": seq,
            "sender_id": sender_id, "body": body, "kind": kind, "client_msg_id": client_msg_id, "created_at": at}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DIRECTORY_BUCKETS = 16
# The order the relay reads unsent records in: per shard, each conversation's records in order.
PENDING_ORDER = [("shard", ASCENDING), ("conversation_id", ASCENDING), ("order", ASCENDING)]
# The highest code point: every string with the prefix sorts below prefix + this.
PREFIX_END = "\U0010ffff"


def related_key(related_type: str, related_id: str) -> str:
    return f"{related_type}:{related_id}"


def agent_doc_id(tenant_id: str, agent_id: str) -> str:
    return compound_id(tenant_id, agent_id)


class Store:
    def __init__(self, db: AsyncDatabase, *, outbox_retention_s: int) -> None:
        self._db = db
        self._agents = db["agents"]
        self._conversations = db["conversations"]
        self._messages = db["messages"]
        self._outbox = db["outbox"]
        self._outbox_leases = db["outbox_leases"]
        self._outbox_relays = db["outbox_relays"]
        self._delivery_heads = db["delivery_heads"]
        self._assistance_requests = db["assistance_requests"]
        self._directory_versions = db["directory_versions"]
        self._buckets_made: set[str] = set()  # tenants whose version buckets exist (seen by this process)
        self._retention = outbox_retention_s

    async def create_indexes(self) -> None:
        """Idempotent: creating an existing index with the same spec is a no-op."""
        await self._agents.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("agent_id", ASCENDING)], unique=True, name="agent"),
            IndexModel([("tenant_id", ASCENDING), ("active", ASCENDING), ("name_lc", ASCENDING),
                        ("agent_id", ASCENDING)], name="directory_by_name"),
        ])
        await self._conversations.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("start_key", ASCENDING)], unique=True, name="start_identity"),
            IndexModel([("tenant_id", ASCENDING), ("participants", ASCENDING), ("list_key", DESCENDING)],
                       name="thread_list"),
            # A flat "type:id" field: SecantusDB's planner does not pick indexes on dotted paths.
            IndexModel([("tenant_id", ASCENDING), ("related_key", ASCENDING), ("list_key", DESCENDING)],
                       name="related"),
            # Team requests open to an agent (top-level `offered_to`: the planner skips dotted paths).
            IndexModel([("tenant_id", ASCENDING), ("offered_to", ASCENDING), ("list_key", DESCENDING)],
                       name="offers"),
            # EXCEPTION to "tenant_id first", like the outbox: the escalation round looks across
            # tenants for open requests whose time has come (set only while one is due, else null).
            IndexModel([("escalate_at", ASCENDING)], name="escalation"),
            # A tenant's threads by last activity, whoever is in them: the admins' export.
            IndexModel([("tenant_id", ASCENDING), ("list_key", ASCENDING)], name="by_activity"),
        ])
        await self._messages.create_indexes([
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
        await self._outbox.create_indexes([
            # `sent_at` first: the relay's one read over all the shards it holds is an equality on
            # null then a `$in` on the shard, and examines unsent records only. (Led by the shard,
            # that `$in` was a COLLSCAN of the whole outbox on SecantusDB.)
            IndexModel([("sent_at", ASCENDING), ("shard", ASCENDING), ("conversation_id", ASCENDING),
                        ("order", ASCENDING)], name="pending"),
            # Only sent records expire (sent_at is null until then, and TTL ignores nulls).
            IndexModel([("sent_at", ASCENDING)], expireAfterSeconds=self._retention, name="sent_ttl"),
            # A redaction finds the records of one thread that may carry a message (sent or not).
            IndexModel([("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("created_at", ASCENDING)],
                       name="by_conversation"),
        ])
        # `pending` replaced it: a deployment from before would otherwise pay for it on every write.
        if "pending_by_shard" in await self._outbox.index_information():
            await self._outbox.drop_index("pending_by_shard")
        await self._directory_versions.create_index([("tenant_id", ASCENDING), ("bucket", ASCENDING)],
                                                    unique=True, name="tenant_bucket")
        await self._assistance_requests.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("request_id", ASCENDING)], unique=True, name="request"),
        ])
        # A relay that died without saying goodbye drops out of the fair-share count by expires_at;
        # the TTL only tidies the rows up later.
        await self._outbox_relays.create_index([("expires_at", ASCENDING)], expireAfterSeconds=3600,
                                              name="relay_ttl")

    # --- agents ---------------------------------------------------------------------------

    async def agent(self, tenant_id: str, agent_id: str, session: Any = None) -> dict | None:
        return await self._agents.find_one({"tenant_id": tenant_id, "agent_id": agent_id}, session=session)

    async def conversation_ids_of(self, tenant_id: str, agent_id: str) -> list[str]:
        """Every thread the agent is in or has a team request offered to (the list's indexes)."""
        ids = [d["_id"] async for d in self._conversations.find({"tenant_id": tenant_id, "participants": agent_id},
                                                                {"_id": 1})]
        return ids + [d["_id"] async for d in self._conversations.find({"tenant_id": tenant_id, "offered_to": agent_id},
                                                                       {"_id": 1})]

    async def is_active_agent(self, tenant_id: str, agent_id: str) -> bool:
        doc = await self._agents.find_one(
            {"tenant_id": tenant_id, "agent_id": agent_id}, projection={"active": 1, "_id": 0}
        )
        return bool(doc and doc.get("active"))

    async def agents_by_id(self, tenant_id: str, agent_ids: list[str], active_only: bool = False,
                           session: Any = None) -> dict[str, dict]:
        query: dict[str, Any] = {"tenant_id": tenant_id, "agent_id": {"$in": list(agent_ids)}}
        if active_only:
            query["active"] = True
        return {d["agent_id"]: d async for d in self._agents.find(query, session=session)}

    async def display_names(self, tenant_id: str, agent_ids: set[str]) -> dict[str, str]:
        if not agent_ids:
            return {}
        cursor = self._agents.find(
            {"tenant_id": tenant_id, "agent_id": {"$in": sorted(agent_ids)}},
            projection={"agent_id": 1, "display_name": 1, "_id": 0},
        )
        return {d["agent_id"]: d["display_name"] async for d in cursor}

    # --- conversations --------------------------------------------------------------------

    async def conversation(self, tenant_id: str, conversation_id: str, session: Any = None) -> dict | None:
        return await self._conversations.find_one({"_id": conversation_id, "tenant_id": tenant_id}, session=session)

    async def advance(self, conv: dict, last: dict, *, outbox_seq: int, read: dict[str, int],
                      also: dict[str, Any] | None = None, session: Any) -> bool:
        """A conversation moves to its new `last` message, in the caller's transaction: a
        compare-and-set on the (last_seq, outbox_seq) the transaction read; read markers only move
        forward (`read`: agent id -> seq); `also` sets more fields. False when the conversation
        changed meanwhile (nothing written: re-run the transaction)."""
        at, conversation_id = last["created_at"], conv["_id"]
        result = await self._conversations.update_one(
            {"_id": conversation_id, "tenant_id": conv["tenant_id"], "last_seq": conv["last_seq"],
             "outbox_seq": conv.get("outbox_seq", 0)},
            {"$set": {"last_seq": last["seq"], "outbox_seq": outbox_seq, "last_message": last, "last_message_at": at,
                      "list_key": list_key(at, conversation_id), **(also or {})},
             **({"$max": {f"read.{field_name(a)}": seq for a, seq in read.items()}} if read else {})},
            session=session)
        return bool(result.matched_count)

    async def due_escalations(self, at: datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant, conversation) of open team requests due to escalate by `at`, oldest first."""
        return [(d["tenant_id"], d["_id"]) async for d in self.escalations_cursor(at, limit)]

    async def defer_escalation(self, tenant_id: str, conversation_id: str, until: datetime) -> None:
        """A due request whose escalation failed waits until `until`, behind the others."""
        await self._conversations.update_one(
            {"_id": conversation_id, "tenant_id": tenant_id, "escalate_at": {"$ne": None}},
            {"$set": {"escalate_at": until}})

    def escalations_cursor(self, at: datetime, limit: int):
        # Both bounds: the index holds a null for every thread without a due request.
        return (self._conversations.find({"escalate_at": {"$gte": EPOCH, "$lte": at}}, {"tenant_id": 1})
                .sort("escalate_at", ASCENDING).limit(limit))

    async def conversation_by_start_key(self, tenant_id: str, start_key: str) -> dict | None:
        return await self._conversations.find_one({"tenant_id": tenant_id, "start_key": start_key})

    async def insert_conversation(self, doc: dict, session: Any) -> None:
        """A new thread (a concurrent start of the same identity raises DuplicateKeyError)."""
        await self._conversations.insert_one(doc, session=session)

    async def move_read_marker(self, conv: dict, agent_id: str, seq: int, outbox_seq: int, session: Any) -> bool:
        """An agent's read marker forward to `seq` (never back), by a compare-and-set on the
        outbox_seq the transaction read; False when the conversation changed meanwhile."""
        result = await self._conversations.update_one(
            {"_id": conv["_id"], "tenant_id": conv["tenant_id"], "outbox_seq": conv.get("outbox_seq", 0)},
            {"$max": {f"read.{field_name(agent_id)}": seq}, "$set": {"outbox_seq": outbox_seq}}, session=session)
        return bool(result.matched_count)

    # --- the directory --------------------------------------------------------------------

    async def save_agent(self, tenant_id: str, agent_id: str, fields: dict[str, Any], at: datetime,
                         session: Any) -> dict:
        """Creates or updates (`fields`) an agent and counts the change (outbox_seq); the stored
        agent. Update + read rather than findAndModify: the same atomic result in the transaction,
        and findAndModify walks the whole collection on SecantusDB (~100 ms at 20,000 agents)."""
        key = {"_id": agent_doc_id(tenant_id, agent_id)}
        await self._agents.update_one(
            key, {"$set": {"tenant_id": tenant_id, "agent_id": agent_id, **fields, "updated_at": at},
                  "$setOnInsert": {"created_at": at}, "$inc": {"outbox_seq": 1}},
            upsert=True, session=session)
        return await self._agents.find_one(key, session=session)

    async def deactivate_agent(self, tenant_id: str, agent_id: str, at: datetime, session: Any) -> dict | None:
        """The agent, deactivated (and its change counted); None when there is no such agent."""
        key = {"_id": agent_doc_id(tenant_id, agent_id), "tenant_id": tenant_id}
        result = await self._agents.update_one(
            key, {"$set": {"active": False, "updated_at": at}, "$inc": {"outbox_seq": 1}}, session=session)
        if not result.matched_count:
            return None
        return await self._agents.find_one(key, session=session)

    # --- the directory's change counters (what the agent check's memory is checked against) ------

    async def make_directory_buckets(self, tenant_id: str) -> None:
        """The tenant's version counters, created before any transaction moves one: two first
        changes of a tenant at once would otherwise race to insert the same counter inside their
        transactions (a duplicate key is not a retried conflict)."""
        if tenant_id in self._buckets_made:
            return
        docs = [{"_id": compound_id(tenant_id, str(b)), "tenant_id": tenant_id, "bucket": b, "version": 0}
                for b in range(DIRECTORY_BUCKETS)]
        try:
            await self._directory_versions.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors") or [{}]):
                raise
        self._buckets_made.add(tenant_id)

    async def count_directory_change(self, tenant_id: str, agent_id: str, session: Any) -> None:
        """In the transaction of a change of the agent: its bucket's version moves, so every
        process's remembered answers for that bucket's agents are read again (ActiveAgents).
        Sixteen buckets: concurrent changes of one tenant's agents rarely write the same counter."""
        await self._directory_versions.update_one(
            {"_id": compound_id(tenant_id, str(directory_bucket(agent_id))), "tenant_id": tenant_id},
            {"$inc": {"version": 1}}, session=session)

    async def directory_versions(self, tenant_id: str) -> dict[int, int]:
        return {d["bucket"]: d["version"] async for d in self._directory_versions.find(
            {"tenant_id": tenant_id}, {"bucket": 1, "version": 1, "_id": 0})}

    async def has_agents(self, tenant_id: str) -> bool:
        return await self._agents.find_one({"tenant_id": tenant_id}, projection={"_id": 1}) is not None

    async def active_agents_page(self, tenant_id: str, prefix: str | None, after: tuple[str, str] | None,
                                 limit: int) -> list[dict]:
        """Active agents in (name_lc, agent_id) order after `after`, names starting with `prefix`."""
        query: dict[str, Any] = {"tenant_id": tenant_id, "active": True}
        if prefix:
            query["name_lc"] = {"$gte": prefix, "$lt": prefix + PREFIX_END}
        if after is not None:
            name, agent = after
            query["$or"] = [{"name_lc": {"$gt": name}}, {"name_lc": name, "agent_id": {"$gt": agent}}]
        return await self._agents.find(query).sort([("name_lc", 1), ("agent_id", 1)]).limit(limit).to_list()

    # --- assistance requests --------------------------------------------------------------

    async def assistance_request(self, tenant_id: str, request_id: str) -> dict | None:
        return await self._assistance_requests.find_one({"tenant_id": tenant_id, "request_id": request_id})

    async def record_assistance_request(self, record: dict, session: Any = None) -> None:
        """The processed request (DuplicateKeyError when another consumer recorded it first)."""
        await self._assistance_requests.insert_one(record, session=session)

    async def insert_outbox(self, records: list[dict], session: Any) -> None:
        await self._outbox.insert_many(records, session=session)

    # --- the relay's leases and the records it publishes ------------------------------------
    # One single-document write per lease, never one update_many over several: SecantusDB's
    # multi-document update keeps the collection lock while it retries write conflicts without end,
    # and deadlocked against the transactional update of a lease row in mark_sent (every client of
    # the server hung). Owner ids are unique per process start, so a lease taken over by anyone
    # else no longer matches the owner's filters.

    async def relay_alive(self, owner: str, until: datetime) -> None:
        await self._outbox_relays.update_one({"_id": owner}, {"$set": {"expires_at": until}}, upsert=True)

    async def live_relays(self, at: datetime) -> int:
        return await self._outbox_relays.count_documents({"expires_at": {"$gt": at}})

    async def relay_gone(self, owner: str) -> None:
        await self._outbox_relays.delete_one({"_id": owner})

    async def renew_lease(self, shard: int, owner: str, token: int, until: datetime) -> bool:
        renewed = await self._outbox_leases.update_one({"_id": shard, "owner": owner, "token": token},
                                                      {"$set": {"expires_at": until}})
        return bool(renewed.matched_count)

    async def release_lease(self, shard: int, owner: str, token: int) -> None:
        """Expired at once, so another relay may take the shard without waiting."""
        await self._outbox_leases.update_one({"_id": shard, "owner": owner, "token": token},
                                            {"$set": {"expires_at": EPOCH}})

    async def claim_lease(self, shard: int, owner: str, at: datetime, until: datetime) -> int | None:
        """The fencing token of the shard's lease, taken if it expired before `at` (or never
        existed); None when another relay holds it. Update + read rather than findAndModify: the
        same outcome (the row still owned by us carries the token we were given), and SecantusDB's
        findAndModify retried a write conflict with a killed process's open transaction while
        holding the collection, wedging the server for every client."""
        claimed = await self._outbox_leases.update_one(
            {"_id": shard, "expires_at": {"$lt": at}},
            {"$set": {"owner": owner, "expires_at": until}, "$inc": {"token": 1}})
        if claimed.matched_count:
            doc = await self._outbox_leases.find_one({"_id": shard, "owner": owner}, {"token": 1})
            return None if doc is None else doc["token"]  # None: taken over already (ours expired)
        try:
            await self._outbox_leases.insert_one({"_id": shard, "owner": owner, "token": 1, "expires_at": until})
        except DuplicateKeyError:
            return None
        return 1

    async def pending(self, shards: list[int], limit: int) -> list[dict]:
        """The unsent records of `shards`, in (shard, conversation, order) order: one read."""
        return await (self._outbox.find(self.pending_query(shards)).sort(PENDING_ORDER).limit(limit).to_list())

    async def mark_sent(self, leases: dict[int, int], owner: str, ids: list[Any],
                        set_aside: dict[Any, str], session: Any) -> bool:
        """Fenced, in the caller's transaction: the lease row of every shard in `leases` (shard →
        token) is written too, so a takeover conflicts with it; False (the caller aborts, nothing
        written) when one of them is no longer ours. `set_aside`: records dead-lettered instead
        (id → reason), kept marked for operators."""
        for shard, token in leases.items():  # single-document writes (see above)
            held = await self._outbox_leases.update_one({"_id": shard, "owner": owner, "token": token},
                                                       {"$set": {"last_sent_at": now()}}, session=session)
            if not held.matched_count:
                return False
        await self._outbox.update_many({"_id": {"$in": ids}, "shard": {"$in": list(leases)}},
                                      {"$set": {"sent_at": now()}}, session=session)
        for record_id, reason in set_aside.items():
            await self._outbox.update_one({"_id": record_id}, {"$set": {"dead_letter": reason}}, session=session)
        return True

    async def leases_held(self, leases: dict[int, int], owner: str) -> set[int]:
        """Which of `leases` (shard → token) are still this owner's."""
        rows = await self._outbox_leases.find({"_id": {"$in": list(leases)}, "owner": owner},
                                              {"token": 1}).to_list()
        return {row["_id"] for row in rows if leases.get(row["_id"]) == row["token"]}

    async def insert_messages(self, messages: list[dict], session: Any) -> None:
        """New messages (`message_doc`), in the transaction that advanced their conversations.
        DuplicateKeyError when one is already stored (its client_msg_id, or its seq)."""
        try:
            await self._messages.insert_many(messages, session=session)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if errors and all(e.get("code") == 11000 for e in errors):
                raise DuplicateKeyError(errors[0].get("errmsg", "duplicate key"), 11000, errors[0]) from exc
            raise

    def thread_list_query(self, tenant_id: str, agent_id: str, snapshot: datetime,
                          after: str | None) -> dict[str, Any]:
        """Threads not changed after `snapshot`, below the list key `after` (the previous page's last)."""
        bound = list_key(snapshot, "\uffff")
        if after is not None and after < bound:
            return {"tenant_id": tenant_id, "participants": agent_id, "list_key": {"$lt": after}}
        return {"tenant_id": tenant_id, "participants": agent_id, "list_key": {"$lte": bound}}

    THREAD_ORDER = [("list_key", DESCENDING)]

    # No index hints where the planner finds the index itself (tests/im_api/test_indexes.py checks
    # each plan): SecantusDB serves a hinted find by decoding and sorting every document of the
    # collection (~250 ms at 3,000 threads, growing with it, against ~1 ms unhinted on the same
    # index). Only the related lookup for an agent, which the planner would scan, keeps its hint.
    def thread_cursor(self, tenant_id: str, agent_id: str, snapshot: datetime, after: str | None, limit: int):
        return (self._conversations.find(self.thread_list_query(tenant_id, agent_id, snapshot, after))
                .sort(self.THREAD_ORDER).limit(limit))

    async def thread_page(self, tenant_id: str, agent_id: str, snapshot: datetime,
                          after: str | None, limit: int) -> list[dict]:
        """The agent's threads and the team requests open to it, merged on the one list key: two
        index walks of at most `limit` each (an `$or` of the two made SecantusDB scan)."""
        mine, offers = await asyncio.gather(
            self.thread_cursor(tenant_id, agent_id, snapshot, after, limit).to_list(),
            self.offers_cursor(tenant_id, agent_id, snapshot, after, limit).to_list())
        merged = {d["_id"]: d for d in [*mine, *offers]}
        return sorted(merged.values(), key=lambda d: d["list_key"], reverse=True)[:limit]

    def offers_cursor(self, tenant_id: str, agent_id: str, snapshot: datetime, after: str | None, limit: int):
        query = self.thread_list_query(tenant_id, agent_id, snapshot, after)
        query["offered_to"] = query.pop("participants")
        return self._conversations.find(query).sort(self.THREAD_ORDER).limit(limit)

    def related_query(self, tenant_id: str, related_type: str, related_id: str,
                      agent_id: str | None) -> dict[str, Any]:
        query: dict[str, Any] = {"tenant_id": tenant_id, "related_key": related_key(related_type, related_id)}
        if agent_id is not None:
            query["participants"] = agent_id
        return query

    def related_cursor(self, tenant_id: str, related_type: str, related_id: str, agent_id: str | None,
                       limit: int):
        cursor = (self._conversations.find(self.related_query(tenant_id, related_type, related_id, agent_id))
                  .sort(self.THREAD_ORDER).limit(limit))
        # With the participant too, two indexes fit and SecantusDB's planner scans the collection.
        return cursor.hint("related") if agent_id is not None else cursor

    async def related(self, tenant_id: str, related_type: str, related_id: str, agent_id: str | None,
                      limit: int) -> list[dict]:
        return await self.related_cursor(tenant_id, related_type, related_id, agent_id, limit).to_list()

    async def unread_rows(self, tenant_id: str, agent_id: str, limit: int) -> list[dict]:
        """The agent's `limit` most recently active threads (last_seq and the agent's read marker)."""
        cursor = (self._conversations.find({"tenant_id": tenant_id, "participants": agent_id},
                                          projection={"last_seq": 1, f"read.{field_name(agent_id)}": 1})
                  .sort(self.THREAD_ORDER).limit(limit))
        return await cursor.to_list()

    async def stream_cursor(self, tenant_id: str, agent_id: str) -> int:
        """Delivery's last appended cursor for the agent (absent = 0); read-only, owned by delivery."""
        doc = await self._delivery_heads.find_one({"tenant_id": tenant_id, "agent_id": agent_id},
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
        return self._messages.find(query).sort("seq", ASCENDING if forward else DESCENDING).limit(limit)

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
        found = await asyncio.gather(*(self._messages.find(q).to_list() for q in self.client_id_queries(keys)))
        return {(d["tenant_id"], d["conversation_id"], d["sender_id"], d["client_msg_id"]): d
                for docs in found for d in docs}

    async def message_at(self, tenant_id: str, conversation_id: str, seq: int, session: Any = None) -> dict | None:
        return await self._messages.find_one({"tenant_id": tenant_id, "conversation_id": conversation_id, "seq": seq},
                                             session=session)

    async def change_message(self, message: dict, fields: dict[str, Any], session: Any) -> bool:
        """A message's new body (an edit) or tombstone (a deletion), by a compare-and-set on the
        `version` the transaction read (an edit and a deletion at once: one wins, one re-runs)."""
        version = message.get("version", 1)
        result = await self._messages.update_one(
            {"_id": message["_id"], "tenant_id": message["tenant_id"], "version": message.get("version")},
            {"$set": {**fields, "version": version + 1}}, session=session)
        return bool(result.matched_count)

    def outbox_since_cursor(self, tenant_id: str, conversation_id: str, since: datetime, session: Any = None):
        """A thread's outbox records (sent or not) written since `since`: `_id` and `value`."""
        return self._outbox.find(
            {"tenant_id": tenant_id, "conversation_id": conversation_id, "created_at": {"$gte": since}},
            {"value": 1}, session=session)

    async def outbox_since(self, tenant_id: str, conversation_id: str, since: datetime, session: Any) -> list[dict]:
        return await self.outbox_since_cursor(tenant_id, conversation_id, since, session).to_list()

    async def rewrite_outbox(self, values: dict[ObjectId, bytes], session: Any) -> None:
        """New values for outbox records (a redaction's), in one command."""
        if values:
            await self._outbox.bulk_write([UpdateOne({"_id": _id}, {"$set": {"value": value}})
                                           for _id, value in values.items()], ordered=False, session=session)

    async def swap_outbox_values(self, tenant_id: str, swaps: list[tuple[Any, bytes, bytes]]) -> int:
        """(id, value read, new value) compare-and-sets outside a transaction, in one command; how
        many matched (a record rewritten meanwhile — a redaction, another erasure — is not)."""
        if not swaps:
            return 0
        result = await self._outbox.bulk_write(
            [UpdateOne({"_id": _id, "tenant_id": tenant_id, "value": old}, {"$set": {"value": new}})
             for _id, old, new in swaps], ordered=False)
        return result.matched_count

    async def touch_conversation(self, conv: dict, outbox_seq: int, fields: dict[str, Any], session: Any) -> bool:
        """A change of the thread that posts no message (an edit, a deletion): its outbox order
        moves, by a compare-and-set on the (last_seq, outbox_seq) the transaction read."""
        result = await self._conversations.update_one(
            {"_id": conv["_id"], "tenant_id": conv["tenant_id"], "last_seq": conv["last_seq"],
             "outbox_seq": conv.get("outbox_seq", 0)},
            {"$set": {**fields, "outbox_seq": outbox_seq}}, session=session)
        return bool(result.matched_count)

    async def outbox_backlog(self, shards: list[int]) -> tuple[int, datetime | None]:
        """Unsent outbox records over `shards` and the oldest one's created_at (on the `pending`
        index: unsent records are examined, never the sent ones)."""
        query = self.pending_query(shards)
        count = await self._outbox.count_documents(query)
        if not count:
            return 0, None
        doc = await self._outbox.find_one(query, projection={"created_at": 1}, sort=[("created_at", 1)])
        return count, None if doc is None else doc["created_at"]

    @staticmethod
    def pending_query(shards: list[int]) -> dict:
        return {"sent_at": None, "shard": {"$in": list(shards)}}
