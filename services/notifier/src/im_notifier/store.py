"""The notifier's MongoDB: one document per agent (`notifier_agents`, see domain.py), what it knows
of each thread (`notifier_threads`: the related item and participants' names), and read-only the
tenant settings and agent preferences im-api keeps (im_contracts.notifications)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from im_contracts.notifications import (
    PREFS_COLLECTION,
    SETTINGS_COLLECTION,
    TenantNotificationSettings,
    prefs_id,
    settings_id,
)
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .domain import DECISION_FIELDS, EPOCH, NEVER, AgentDoc, Prefs, Thread, agent_doc_id, forget_claimed_previews

AGENTS = "notifier_agents"
THREADS = "notifier_threads"


def thread_doc_id(tenant_id: str, conversation_id: str) -> str:
    return f"{tenant_id}:{conversation_id}"


def to_doc(doc: AgentDoc) -> dict[str, Any]:
    out = asdict(doc)
    out["_id"] = agent_doc_id(doc.tenant_id, doc.agent_id)
    out["threads"] = {cid: {k: v for k, v in asdict(t).items() if k != "conversation_id"}
                      for cid, t in doc.threads.items()}
    return out


def from_doc(raw: dict[str, Any]) -> AgentDoc:
    threads = {cid: Thread(conversation_id=cid, **{k: v for k, v in fields.items() if k in _THREAD_FIELDS})
               for cid, fields in (raw.get("threads") or {}).items()}
    known = {k: raw[k] for k in _AGENT_FIELDS if k in raw and k != "threads"}
    return AgentDoc(**known, threads=threads)


_THREAD_FIELDS = set(Thread.__dataclass_fields__) - {"conversation_id"}
_AGENT_FIELDS = set(AgentDoc.__dataclass_fields__)


class NotifierStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self._agents = db[AGENTS]
        self._threads = db[THREADS]
        self._settings = db[SETTINGS_COLLECTION]
        self._prefs = db[PREFS_COLLECTION]

    async def ensure_indexes(self) -> None:
        # The sweep's one range: agents due by now (NEVER for everyone with nothing to do); and a
        # tenant's agents, in pages (its message retention: retention.py).
        await self._agents.create_indexes([IndexModel([("due_at", ASCENDING)], name="due"),
                                           IndexModel([("tenant_id", ASCENDING), ("_id", ASCENDING)], name="by_tenant")])

    # --- the consumers: raise-only updates ----------------------------------------------------

    async def apply(self, tenant_id: str, ops: list[tuple[str, dict[str, Any], dict[str, Any], bool]]) -> None:
        """(agent id, filter extra, update, upsert) in one ordered bulk write."""
        if not ops:
            return
        await self._agents.bulk_write([
            UpdateOne({"_id": agent_doc_id(tenant_id, agent), "tenant_id": tenant_id, **extra}, update, upsert=upsert)
            for agent, extra, update, upsert in ops
        ], ordered=True)

    async def apply_if_newer(self, tenant_id: str, agent_id: str, stamp: str, at: datetime,
                             update: dict[str, Any]) -> bool:
        """An update applied only when the document's `stamp` time is older than `at` (an older or
        repeated event changes nothing). False: it was not newer."""
        try:
            result = await self._agents.update_one(
                {"_id": agent_doc_id(tenant_id, agent_id), "tenant_id": tenant_id, stamp: {"$lt": at}},
                update, upsert=True)
        except DuplicateKeyError:  # the document exists with a newer (or the same) stamp
            return False
        return bool(result.matched_count or result.upserted_id is not None)

    async def forget_claimed(self, tenant_id: str, agent_id: str, conversation_id: str, tries: int = 5) -> bool:
        """A thread's previews out of the agent's notifications still being sent (a redaction): a
        compare-and-set on the agent's version, read again when a decision wrote meanwhile. False
        when it kept changing (the caller retries later)."""
        for _ in range(tries):
            doc = await self.load(tenant_id, agent_id)
            if doc is None or not forget_claimed_previews(doc, conversation_id):
                return True
            if await self.save(doc):
                return True
        return False

    async def agent_name(self, tenant_id: str, agent_id: str) -> tuple[str | None, datetime]:
        """The agent's display name as known here, and the time of the change it came from."""
        doc = await self._agents.find_one({"_id": agent_doc_id(tenant_id, agent_id), "tenant_id": tenant_id},
                                          {"display_name": 1, "agent_at": 1}) or {}
        return doc.get("display_name"), doc.get("agent_at") or EPOCH

    async def rename_in_threads(self, tenant_id: str, agent_id: str, display_name: str) -> int:
        """An agent's new name (a rename, an erasure) in the names kept with the tenant's threads;
        how many changed. The tenant's threads are an `_id` range (`tenant:conversation`), read
        only when a name changed; agent ids may hold "." so the maps are rewritten whole."""
        cursor = self._threads.find({"_id": {"$gt": f"{tenant_id}:", "$lt": f"{tenant_id};"}, "tenant_id": tenant_id},
                                    {"names": 1})
        ops = [UpdateOne({"_id": doc["_id"], "tenant_id": tenant_id},
                         {"$set": {"names": {**doc["names"], agent_id: display_name}}})
               async for doc in cursor if (doc.get("names") or {}).get(agent_id) not in (None, display_name)]
        if ops:
            await self._threads.bulk_write(ops, ordered=False)
        return len(ops)

    async def save_thread(self, tenant_id: str, conversation_id: str, related: dict[str, Any] | None,
                          names: dict[str, str], at: datetime) -> None:
        try:
            await self._threads.update_one(
                {"_id": thread_doc_id(tenant_id, conversation_id), "tenant_id": tenant_id, "at": {"$lt": at}},
                {"$set": {"conversation_id": conversation_id, "related": related, "names": names, "at": at}},
                upsert=True)
        except DuplicateKeyError:
            pass  # a newer snapshot is stored already

    # --- decisions: whole-document compare-and-set --------------------------------------------

    async def due(self, now: datetime, limit: int) -> list[AgentDoc]:
        cursor = self._agents.find({"due_at": {"$lte": now}}).sort("due_at", ASCENDING).limit(limit)
        return [from_doc(raw) async for raw in cursor]

    async def agents_of(self, tenant_id: str, after: str | None, limit: int) -> list[AgentDoc]:
        """A page of the tenant's agents, in document id order after `after`."""
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if after is not None:
            query["_id"] = {"$gt": after}
        return [from_doc(raw) async for raw in self._agents.find(query).sort("_id", ASCENDING).limit(limit)]

    async def load(self, tenant_id: str, agent_id: str) -> AgentDoc | None:
        raw = await self._agents.find_one({"_id": agent_doc_id(tenant_id, agent_id), "tenant_id": tenant_id})
        return from_doc(raw) if raw is not None else None

    async def save(self, doc: AgentDoc) -> bool:
        """Writes `doc` if nobody changed it since it was read (its version); False otherwise."""
        expected = doc.version
        doc.version = expected + 1
        fields = to_doc(doc)
        # Only what decisions own: the status and the directory's fields are the consumers'.
        result = await self._agents.update_one(
            {"_id": agent_doc_id(doc.tenant_id, doc.agent_id), "tenant_id": doc.tenant_id, "version": expected},
            {"$set": {name: fields[name] for name in DECISION_FIELDS}})
        if not result.matched_count:
            doc.version = expected
            return False
        return True

    # --- what the decision reads besides the agent ------------------------------------------

    async def threads(self, tenant_id: str, conversation_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not conversation_ids:
            return {}
        ids = [thread_doc_id(tenant_id, c) for c in conversation_ids]
        cursor = self._threads.find({"_id": {"$in": ids}, "tenant_id": tenant_id})
        return {raw["conversation_id"]: raw async for raw in cursor}

    async def settings(self, tenant_id: str) -> TenantNotificationSettings:
        raw = await self._settings.find_one({"_id": settings_id(tenant_id), "tenant_id": tenant_id})
        return TenantNotificationSettings.model_validate(raw or {"tenant_id": tenant_id})

    async def prefs(self, tenant_id: str, agent_id: str) -> Prefs:
        raw = await self._prefs.find_one({"_id": prefs_id(tenant_id, agent_id), "tenant_id": tenant_id})
        if raw is None:
            return Prefs()
        return Prefs(bool(raw.get("do_not_disturb")), frozenset(raw.get("muted") or ()))


__all__ = ["EPOCH", "NEVER", "NotifierStore", "from_doc", "to_doc"]
