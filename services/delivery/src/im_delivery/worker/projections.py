"""The fan-out worker's own read models: conversations (participants, related, last message),
the agent directory (active or not) and messages held back until their predecessor arrives.

Collections (owned by delivery; tenant_id first in every document and index):
- `delivery_conversations` {_id compound_id(tenant, conversation), tenant_id, conversation_id, participants,
  participant_ids, related, created_by, created_at, last_seq, last_message, last_message_at,
  read_markers {<agent id, escaped>: seq}}
- `delivery_agents`        {_id compound_id(tenant, agent), tenant_id, agent_id, display_name, role, active}
  (also read by gateways: refuse an inactive agent at connect)
- `delivery_held`          {_id compound_id(tenant, conversation, seq), tenant_id, conversation_id, seq,
  event, held_at} — a message whose predecessor has not been delivered yet.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from im_contracts.events import AgentChanged, MessageChanged, MessagePosted
from im_contracts.models import ConversationSnapshot
from im_runtime.mongo import compound_id, field_name
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from ..store import utcnow


def conversation_id_of(tenant_id: str, conversation_id: str) -> dict[str, str]:
    """The filter of one conversation's projection (tenant_id in every query, also beside the _id)."""
    return {"_id": compound_id(tenant_id, conversation_id), "tenant_id": tenant_id}


def held_id_of(tenant_id: str, conversation_id: str, seq: int) -> dict[str, str]:
    return {"_id": compound_id(tenant_id, conversation_id, str(seq)), "tenant_id": tenant_id}


def agent_id_of(tenant_id: str, agent_id: str) -> dict[str, str]:
    return {"_id": compound_id(tenant_id, agent_id), "tenant_id": tenant_id}


class Projections:
    def __init__(self, db: AsyncDatabase) -> None:
        self._conversations = db["delivery_conversations"]
        self._agents = db["delivery_agents"]
        self._held = db["delivery_held"]

    async def ensure_indexes(self) -> None:
        await self._conversations.create_index([("tenant_id", ASCENDING), ("participant_ids", ASCENDING)])
        await self._conversations.create_index(
            [("tenant_id", ASCENDING), ("participant_ids", ASCENDING), ("last_message_at", DESCENDING)],
            name="recent_by_participant")
        # A tenant's previews by age: what its retention clears (worker/retention.py).
        await self._conversations.create_index([("tenant_id", ASCENDING), ("last_message_at", ASCENDING)],
                                               name="by_activity")
        await self._agents.create_index([("tenant_id", ASCENDING), ("agent_id", ASCENDING)])
        await self._held.create_index(
            [("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("seq", ASCENDING)]
        )
        await self._held.create_index([("tenant_id", ASCENDING), ("held_at", ASCENDING)])

    # --- conversations --------------------------------------------------------------------------

    async def conversation(self, tenant_id: str, conversation_id: str) -> dict[str, Any] | None:
        return await self._conversations.find_one(conversation_id_of(tenant_id, conversation_id))

    async def save_snapshot(self, tenant_id: str, snapshot: ConversationSnapshot) -> dict[str, Any]:
        """Participants and related from a conversation event; last_* only ever from messages."""
        doc = snapshot.model_dump(mode="json")
        await self._conversations.update_one(
            conversation_id_of(tenant_id, snapshot.id),
            {
                "$set": {
                    "tenant_id": tenant_id,
                    "conversation_id": snapshot.id,
                    "participants": doc["participants"],
                    "participant_ids": [p["id"] for p in doc["participants"]],
                    "related": doc["related"],
                    "created_by": doc["created_by"],
                    "created_at": doc["created_at"],
                    "known": True,
                },
                "$setOnInsert": {"last_seq": 0, "last_message": None, "last_message_at": None},
            },
            upsert=True,
        )
        return await self.conversation(tenant_id, snapshot.id)  # type: ignore[return-value]

    async def assume_conversation(self, event: MessagePosted) -> dict[str, Any]:
        """A message whose ConversationStarted never came: what the message itself tells."""
        m = event.message
        await self._conversations.update_one(
            conversation_id_of(event.tenant_id, m.conversation_id),
            {
                "$setOnInsert": {
                    "tenant_id": event.tenant_id,
                    "conversation_id": m.conversation_id,
                    "participants": [{"id": a, "display_name": a} for a in event.recipients],
                    "participant_ids": list(event.recipients),
                    "related": None,
                    "created_by": m.sender_id,
                    "created_at": m.created_at.isoformat(),
                    "last_seq": m.seq - 1,
                    "last_message": None,
                    "last_message_at": None,
                    "known": False,
                }
            },
            upsert=True,
        )
        return await self.conversation(event.tenant_id, m.conversation_id)  # type: ignore[return-value]

    async def messages_delivered(self, events: list[MessagePosted]) -> None:
        """Messages of one thread fanned out: one write moves its last message to the highest seq
        and each sender's read marker to its own last message (API.md)."""
        last = max(events, key=lambda e: e.message.seq)
        m = last.message
        message = m.model_dump(mode="json")
        markers: dict[str, int] = {}
        for event in events:
            key = f"read_markers.{field_name(event.message.sender_id)}"
            markers[key] = max(markers.get(key, 0), event.message.seq)
        await self._conversations.update_one(
            {**conversation_id_of(last.tenant_id, m.conversation_id), "last_seq": {"$lt": m.seq}},
            {"$set": {"last_seq": m.seq, "last_message": message, "last_message_at": message["created_at"]},
             "$max": markers},
        )

    async def last_message_changed(self, event: MessageChanged) -> dict[str, Any]:
        """The thread's last message edited or deleted: its preview follows (only while it is
        still the last one)."""
        m = event.message
        await self._conversations.update_one(
            {**conversation_id_of(event.tenant_id, m.conversation_id), "last_seq": m.seq},
            {"$set": {"last_message": m.model_dump(mode="json")}})
        return await self.conversation(event.tenant_id, m.conversation_id)  # type: ignore[return-value]

    async def clear_previews_before(self, tenant_id: str, before: str) -> int:
        """The tenant's thread previews of messages posted before `before` (RFC 3339) are cleared,
        their time too (so the next look skips them on the index); a new message sets both again."""
        result = await self._conversations.update_many(
            {"tenant_id": tenant_id, "last_message_at": {"$lt": before}},
            {"$set": {"last_message": None, "last_message_at": None}})
        return result.modified_count

    async def created_at_of(self, tenant_id: str, conversation_ids: list[str]) -> dict[str, str]:
        """conversation id -> when it was started (ISO 8601), for those projected."""
        if not conversation_ids:
            return {}
        found = self._conversations.find(
            {"_id": {"$in": [compound_id(tenant_id, c) for c in conversation_ids]}, "tenant_id": tenant_id},
            {"conversation_id": 1, "created_at": 1})
        return {d["conversation_id"]: d["created_at"] async for d in found if d.get("created_at")}

    async def read_marker_moved(self, tenant_id: str, conversation_id: str, agent_id: str, seq: int) -> None:
        """Per-agent read markers (only forward): each recipient's conversation.updated carries its own."""
        await self._conversations.update_one(
            conversation_id_of(tenant_id, conversation_id),
            {"$max": {f"read_markers.{field_name(agent_id)}": seq}},
        )  # no upsert: ReadMarkerMoved follows its ConversationStarted on the same partition

    async def accept_gap(self, tenant_id: str, conversation_id: str, seq: int) -> None:
        """Gives up waiting for the messages before `seq` (they never came within hold_back_s)."""
        await self._conversations.update_one(
            {**conversation_id_of(tenant_id, conversation_id), "last_seq": {"$lt": seq - 1}},
            {"$set": {"last_seq": seq - 1}},
        )

    async def co_participants(self, tenant_id: str, agent_id: str, threads: int, partners: int) -> set[str]:
        """Agents who share a thread with `agent_id` (its presence changes go to them): over its
        `threads` most recently active threads, at most `partners` of them — one presence change
        costs a bounded read and fan-out however many threads the agent was ever in (partners of
        older threads see its presence when they next load the agent list). Not hinted: the planner
        picks `recent_by_participant` itself (tests check the plan), and SecantusDB serves a hinted
        find by decoding every document of the collection — with every presence change, that held
        its one process ~100 ms per 1,000 threads stored (issue 19's collapsed step search)."""
        out: set[str] = set()
        async for doc in self.recent_threads(tenant_id, agent_id, threads):
            for other in doc.get("participant_ids", []):
                if other != agent_id and len(out) < partners:
                    out.add(other)
            if len(out) >= partners:
                break
        return out

    def recent_threads(self, tenant_id: str, agent_id: str, threads: int):
        """The agent's `threads` most recently active threads (their participants only)."""
        return (self._conversations.find({"tenant_id": tenant_id, "participant_ids": agent_id}, {"participant_ids": 1})
                .sort("last_message_at", DESCENDING).limit(threads))

    # --- held-back messages ---------------------------------------------------------------------

    async def hold(self, event: MessagePosted) -> None:
        m = event.message
        await self._held.update_one(
            held_id_of(event.tenant_id, m.conversation_id, m.seq),
            {"$setOnInsert": {"tenant_id": event.tenant_id, "conversation_id": m.conversation_id,
                              "seq": m.seq, "event": event.model_dump(mode="json"), "held_at": utcnow()}},
            upsert=True,
        )

    async def held_next(self, tenant_id: str, conversation_id: str, seq: int) -> MessagePosted | None:
        doc = await self._held.find_one({"tenant_id": tenant_id, "conversation_id": conversation_id, "seq": seq})
        return None if doc is None else MessagePosted.model_validate(doc["event"])

    async def release(self, tenant_id: str, conversation_id: str, seq: int) -> None:
        await self._held.delete_one(held_id_of(tenant_id, conversation_id, seq))

    async def held_too_long(self, older_than_s: float, limit: int = 100) -> list[MessagePosted]:
        cutoff: datetime = utcnow() - timedelta(seconds=older_than_s)
        found = self._held.find({"held_at": {"$lt": cutoff}}).sort([("held_at", ASCENDING)]).limit(limit)
        return [MessagePosted.model_validate(doc["event"]) async for doc in found]

    # --- agents ---------------------------------------------------------------------------------

    async def save_agent(self, event: AgentChanged) -> None:
        await self._agents.update_one(
            agent_id_of(event.tenant_id, event.agent_id),
            {"$set": {"tenant_id": event.tenant_id, "agent_id": event.agent_id,
                      "display_name": event.display_name, "role": event.role, "active": event.active}},
            upsert=True,
        )

    async def rename_participant(self, tenant_id: str, agent_id: str, display_name: str,
                                 every_thread: bool = False) -> dict[str, list[str]]:
        """The agent's name in the threads they are in (a rename, an erasure): the frames built
        from the projection from now on carry it. One read and one write, on the participant
        index; directory changes are rare. The threads that named them otherwise (`every_thread`:
        all of theirs, for an erasure, whose queued frames may have been written since the last
        look): each current participant -> those thread ids (whose queued frames name them too)."""
        named = {} if every_thread else {
            "participants": {"$elemMatch": {"id": agent_id, "display_name": {"$ne": display_name}}}}
        threads = await self._conversations.find(
            {"tenant_id": tenant_id, "participant_ids": agent_id, **named},
            {"participants": 1, "conversation_id": 1}).to_list()
        stale = [doc for doc in threads if any(p["id"] == agent_id and p["display_name"] != display_name
                                               for p in doc["participants"])]
        if stale:
            await self._conversations.bulk_write([UpdateOne(
                {"_id": doc["_id"], "tenant_id": tenant_id},
                {"$set": {"participants": [{**p, "display_name": display_name} if p["id"] == agent_id else p
                                           for p in doc["participants"]]}}) for doc in stale], ordered=False)
        readers: dict[str, list[str]] = {}
        for doc in threads:
            for p in doc["participants"]:
                readers.setdefault(p["id"], []).append(doc["conversation_id"])
        return readers
