"""MongoDB for presence: one state document per agent and one liveness document per gateway.

Collections (owned by presence only; no other service reads them):
- `presence_agents`: `_id "<tenant>:<agent>"`, tenant_id, agent_id, the connection set (id,
  gateway id + epoch, device, idle), status, last_seen_at, the persisted grace deadline, the
  Kafka partition the agent's events live on (so a process sweeps only the agents it owns), the
  offset of the last event applied (a redelivered record changes nothing), `version` (every write
  is compare-and-set on it) and `dirty` (a visible change not yet published).
- `presence_gateways`: `_id <gateway id>`, tenant_id = SYSTEM_TENANT, the current boot epoch,
  the retired epochs and the last heartbeat (presence clock).

Indexes: tenant-scoped ones lead with tenant_id. The sweeper's three indexes lead with the Kafka
partition instead: a sweep is "every agent of partitions 3 and 7", which spans all tenants by
nature (one partition holds many tenants), so a tenant-first index cannot serve it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from im_contracts.events import SYSTEM_TENANT, new_event_id
from pymongo import ASCENDING
from im_runtime.mongo import compound_id
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .domain import AgentState, Connection

AGENTS = "presence_agents"
GATEWAYS = "presence_gateways"
# Retired epochs kept per gateway: a late event of any recent boot is still recognised.
RETIRED_EPOCHS = 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # below every grace deadline: bounds the sweeper's range
DUE_FIELDS = {"tenant_id": 1, "agent_id": 1, "partition": 1, "grace_deadline": 1}


@dataclass
class AgentRecord:
    """An agent's state as stored, with what the store needs to write it safely."""

    state: AgentState
    partition: int
    applied_offset: int = -1
    version: int = 0
    dirty: bool = False
    presence_event_id: str = field(default_factory=new_event_id)
    changed_at: datetime | None = None

    @property
    def key(self) -> str:
        return agent_doc_id(self.state.tenant_id, self.state.agent_id)


@dataclass(frozen=True)
class GatewayRecord:
    gateway_id: str
    epoch: str
    retired_epochs: tuple[str, ...]
    last_heartbeat_at: datetime


def agent_doc_id(tenant_id: str, agent_id: str) -> str:
    return compound_id(tenant_id, agent_id)


class PresenceStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self._agents = db[AGENTS]
        self._gateways = db[GATEWAYS]

    async def ensure_indexes(self) -> None:
        await self._agents.create_index(
            [("tenant_id", ASCENDING), ("agent_id", ASCENDING)], unique=True, name="tenant_agent"
        )
        # The sweeper's every-second reads lead with what is due, so they examine the due agents
        # only, whatever the number of agents (see `due_query`).
        await self._agents.create_index([("grace_deadline", ASCENDING)], name="sweep_due")
        await self._agents.create_index(
            [("partition", ASCENDING), ("connections.gateway_id", ASCENDING)], name="sweep_gateways"
        )
        await self._agents.create_index([("dirty", ASCENDING), ("partition", ASCENDING)], name="sweep_dirty")
        # Led by the partition, they were one read per partition every second (replaced above).
        existing = await self._agents.index_information()
        for old in ("sweep_deadlines", "sweep_unpublished"):
            if old in existing:
                await self._agents.drop_index(old)
        await self._gateways.create_index(
            [("tenant_id", ASCENDING), ("gateway_id", ASCENDING)], unique=True, name="tenant_gateway"
        )

    # --- agents -----------------------------------------------------------------------------

    async def load(self, tenant_id: str, agent_id: str) -> AgentRecord | None:
        doc = await self._agents.find_one({"_id": agent_doc_id(tenant_id, agent_id), "tenant_id": tenant_id})
        return None if doc is None else _record(doc)

    async def save(self, record: AgentRecord) -> bool:
        """Compare-and-set on `version`; False when someone else wrote first (reload and retry)."""
        doc = _doc(record, record.version + 1)
        try:
            if record.version == 0:
                await self._agents.insert_one(doc)
            else:
                result = await self._agents.replace_one(
                    {"_id": record.key, "tenant_id": record.state.tenant_id, "version": record.version}, doc
                )
                if result.matched_count == 0:
                    return False
        except DuplicateKeyError:
            return False
        record.version += 1
        return True

    async def mark_published(self, record: AgentRecord) -> None:
        # Only if nothing was written since: a newer change stays dirty and is published too.
        await self._agents.update_one(
            {"_id": record.key, "tenant_id": record.state.tenant_id, "version": record.version},
            {"$set": {"dirty": False}},
        )

    # The sweeper's reads run every second, so they must examine only what is due: SecantusDB
    # serves a `$in` over the partitions, or a range after an equality on the partition, by
    # fetching every agent and filtering in Python (10,000 agents kept it at ~1 core while nothing
    # happened). A range on the deadline alone, bounded on both sides (`$lte` alone also walks the
    # nulls there), and an equality on `dirty` before the `$in` stay on their indexes.

    @staticmethod
    def due_query(now: datetime) -> dict:
        return {"grace_deadline": {"$gte": EPOCH, "$lte": now}}

    @staticmethod
    def unpublished_query(partitions: Iterable[int]) -> dict:
        return {"dirty": True, "partition": {"$in": sorted(partitions)}}

    async def due(self, partitions: Iterable[int], now: datetime) -> list[tuple[str, str, int, datetime]]:
        """(tenant, agent, partition, deadline) of every due grace deadline in these partitions, in
        partition order: one read of the due agents (of every partition; others' are skipped here)."""
        owned = set(partitions)
        docs = [d async for d in self._agents.find(self.due_query(now), DUE_FIELDS) if d["partition"] in owned]
        docs.sort(key=lambda d: d["partition"])
        return [(d["tenant_id"], d["agent_id"], d["partition"], d["grace_deadline"]) for d in docs]

    async def unpublished(self, partitions: Iterable[int]) -> list[tuple[str, str]]:
        """Agents whose visible change was saved but not published (a crash in between)."""
        cursor = self._agents.find(self.unpublished_query(partitions), {"tenant_id": 1, "agent_id": 1})
        return [(d["tenant_id"], d["agent_id"]) async for d in cursor]

    async def count_by_status(self, partitions: Iterable[int]) -> dict[str, int]:
        """Agents per status over `partitions` (the owned ones: summed across processes, no overlap)."""
        cursor = await self._agents.aggregate([
            {"$match": {"partition": {"$in": list(partitions)}}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ])
        return {d["_id"]: d["n"] async for d in cursor}

    async def on_gateway(
        self, partitions: Iterable[int], gateway_id: str, epochs: frozenset[str] | None
    ) -> list[tuple[str, str]]:
        """Agents in these partitions holding a connection of this gateway (of these epochs)."""
        match: dict = {"gateway_id": gateway_id}
        if epochs is not None:
            match["epoch"] = {"$in": sorted(epochs)}
        cursor = self._agents.find(
            {"partition": {"$in": list(partitions)}, "connections": {"$elemMatch": match}},
            {"tenant_id": 1, "agent_id": 1},
        )
        return [(d["tenant_id"], d["agent_id"]) async for d in cursor]

    # --- gateways ---------------------------------------------------------------------------

    async def observe_gateway(self, gateway_id: str, epoch: str, now: datetime, heartbeat: bool) -> str:
        """Record a sign of life of (gateway, epoch): "current", "new", "retired" or "unconfirmed".

        Only a heartbeat moves a gateway to a new epoch (retiring the old one): a connection
        event may be a replay of an old boot, and must never retire the boot that is live now.
        """
        for _ in range(10):
            doc = await self._gateways.find_one({"_id": gateway_id, "tenant_id": SYSTEM_TENANT})
            if doc is None:
                try:
                    # Known from now on, so it is judged silent if it never beats at all.
                    await self._gateways.insert_one(
                        {
                            "_id": gateway_id,
                            "tenant_id": SYSTEM_TENANT,
                            "gateway_id": gateway_id,
                            "epoch": epoch,
                            "retired_epochs": [],
                            "last_heartbeat_at": now,
                        }
                    )
                    return "new"
                except DuplicateKeyError:
                    continue
            if doc["epoch"] == epoch:
                if heartbeat:
                    await self._gateways.update_one(
                        {"_id": gateway_id, "tenant_id": SYSTEM_TENANT}, {"$max": {"last_heartbeat_at": now}}
                    )
                return "current"
            if epoch in doc.get("retired_epochs", []):
                return "retired"
            if not heartbeat:
                return "unconfirmed"  # its first beat, seconds away, will retire the old boot
            result = await self._gateways.update_one(
                {"_id": gateway_id, "tenant_id": SYSTEM_TENANT, "epoch": doc["epoch"]},
                {
                    "$set": {"epoch": epoch, "last_heartbeat_at": now},
                    "$push": {"retired_epochs": {"$each": [doc["epoch"]], "$slice": -RETIRED_EPOCHS}},
                },
            )
            if result.matched_count:
                return "new"
        raise RuntimeError(f"gateway {gateway_id} epoch kept changing under us")

    async def forget_gateways(self, silent_since: datetime) -> int:
        """Drop gateways silent since long before: their connections have all been expired."""
        result = await self._gateways.delete_many(
            {"tenant_id": SYSTEM_TENANT, "last_heartbeat_at": {"$lt": silent_since}}
        )
        return result.deleted_count

    async def all_gateways(self) -> list[GatewayRecord]:
        cursor = self._gateways.find({"tenant_id": SYSTEM_TENANT})
        return [
            GatewayRecord(d["gateway_id"], d["epoch"], tuple(d.get("retired_epochs", [])), d["last_heartbeat_at"])
            async for d in cursor
        ]


def _doc(record: AgentRecord, version: int) -> dict:
    s = record.state
    return {
        "_id": record.key,
        "tenant_id": s.tenant_id,
        "agent_id": s.agent_id,
        "partition": record.partition,
        "applied_offset": record.applied_offset,
        "version": version,
        "status": s.status,
        "last_seen_at": s.last_seen_at,
        "left_at": s.left_at,
        "grace_deadline": s.grace_deadline,
        "connections": [
            {
                "id": c.connection_id,
                "gateway_id": c.gateway_id,
                "epoch": c.epoch,
                "device_id": c.device_id,
                "opened_at": c.opened_at,
                "idle": c.idle,
            }
            for c in s.connections.values()
        ],
        "ended": s.ended,
        "recent_events": s.recent_events,
        "dirty": record.dirty,
        "presence_event_id": record.presence_event_id,
        "changed_at": record.changed_at,
    }


def _record(doc: dict) -> AgentRecord:
    state = AgentState(
        tenant_id=doc["tenant_id"],
        agent_id=doc["agent_id"],
        connections={
            c["id"]: Connection(
                connection_id=c["id"],
                gateway_id=c["gateway_id"],
                epoch=c["epoch"],
                device_id=c["device_id"],
                opened_at=c["opened_at"],
                idle=c["idle"],
            )
            for c in doc.get("connections", [])
        },
        status=doc["status"],
        last_seen_at=doc.get("last_seen_at"),
        left_at=doc.get("left_at"),
        grace_deadline=doc.get("grace_deadline"),
        ended=list(doc.get("ended", [])),
        recent_events=list(doc.get("recent_events", [])),
    )
    return AgentRecord(
        state=state,
        partition=doc["partition"],
        applied_offset=doc.get("applied_offset", -1),
        version=doc["version"],
        dirty=doc.get("dirty", False),
        presence_event_id=doc.get("presence_event_id") or new_event_id(),
        changed_at=doc.get("changed_at"),
    )
