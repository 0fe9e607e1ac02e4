"""A tenant's message retention in delivery, against the real MongoDB: the pruning job reads the
tenant's `retention_days` (im-api's setting) and nothing delivery keeps of an older message stays —
queue entries queued before the cutoff are pruned (the head marked, so a reader behind gets 4409),
copies of older messages in later entries go (a message frame) or are cleared (a preview, a team
request's question), and the projection's older previews are cleared. Newer entries and other
tenants are untouched."""

from __future__ import annotations

from datetime import timedelta

import pytest
from im_contracts.frames import (
    Conversation,
    ConversationUpdatedBody,
    MessageCreatedBody,
    MessageUpdatedBody,
    TeamRequestOfferedBody,
)
from im_contracts.models import Message, TeamRequest
from im_contracts.retention import MESSAGE_SETTINGS_COLLECTION
from im_delivery.settings import DeliverySettings
from im_delivery.store import NewEntry, QueueStore, utcnow
from im_delivery.worker.projections import Projections
from im_delivery.worker.retention import TenantRetention, plan_page
from im_runtime.mongo import compound_id
from pymongo import AsyncMongoClient

from support.plans import stages

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"
NOW = utcnow()
OLD, YOUNG = NOW - timedelta(days=2), NOW - timedelta(hours=1)


def message(conversation_id: str, seq: int, at, body: str = "hello") -> Message:
    return Message(id=f"{conversation_id}-{seq}", conversation_id=conversation_id, seq=seq, sender_id="bob",
                   body=body, created_at=at)


def thread(conversation_id: str, last: Message | None) -> Conversation:
    return Conversation(id=conversation_id, participants=None, created_by="bob", created_at=OLD,
                        last_seq=last.seq if last else 0, last_message=last,
                        last_message_at=last.created_at if last else None)


def offer(conversation_id: str, question: str) -> TeamRequestOfferedBody:
    return TeamRequestOfferedBody(request=TeamRequest(
        conversation_id=conversation_id, teams=[{"id": "t2", "name": "Tier 2"}],
        asked_by={"id": "bob", "display_name": "Bob"}, question=question, status="open", offered_to=["ana"],
        opened_at=YOUNG))


# (queued at, frame): what ana's queue holds, in cursor order.
QUEUE = [
    (OLD, MessageCreatedBody(message=message("c1", 1, OLD, "old secret 1"))),
    (OLD, MessageCreatedBody(message=message("c1", 2, OLD, "old secret 2"))),
    (OLD, ConversationUpdatedBody(conversation=thread("c1", message("c1", 2, OLD, "old secret 2")))),
    # Queued after the cutoff, carrying older messages: a read marker's update of an old thread,
    # an edit of an old message, a message queued late.
    (YOUNG, ConversationUpdatedBody(conversation=thread("c1", message("c1", 2, OLD, "old secret 2")))),
    (YOUNG, MessageUpdatedBody(message=message("c1", 1, OLD, "old secret 1, edited"))),
    (YOUNG, MessageCreatedBody(message=message("c1", 3, OLD, "old secret 3"))),
    (YOUNG, MessageCreatedBody(message=message("c2", 1, YOUNG, "young 1"))),
    (YOUNG, ConversationUpdatedBody(conversation=thread("c2", message("c2", 1, YOUNG, "young 1")))),
    (YOUNG, offer("c-old", "old question")),  # a thread started before the cutoff
    (YOUNG, offer("c2", "young question")),
]


async def seed(db, store: QueueStore, projections: Projections, tenant: str) -> None:
    for agent in ("ana", "ben"):
        await store.append(tenant, agent, [NewEntry(f"k{i}", frame.model_dump(mode="json"))
                                           for i, (_, frame) in enumerate(QUEUE)])
        # Entries are stamped with the worker's clock when queued; a test cannot wait two days.
        for i, (queued, _) in enumerate(QUEUE):
            await db["delivery_queue"].update_one({"tenant_id": tenant, "agent_id": agent, "cursor": i + 1},
                                                  {"$set": {"created_at": queued}})
    for cid, started, last in [("c1", OLD, message("c1", 3, OLD)), ("c2", YOUNG, message("c2", 1, YOUNG)),
                               ("c-old", OLD, message("c-old", 1, OLD))]:
        await db["delivery_conversations"].insert_one({
            "_id": compound_id(tenant, cid), "tenant_id": tenant, "conversation_id": cid, "participant_ids": ["ana", "ben"],
            "created_at": started.isoformat(), "last_seq": last.seq, "last_message": last.model_dump(mode="json"),
            "last_message_at": last.model_dump(mode="json")["created_at"]})


def test_a_page_plan_prunes_the_leading_old_entries_and_removes_later_copies_of_older_messages():
    entries = [{"_id": i + 1, "cursor": i + 1, "created_at": queued, "frame": frame.model_dump(mode="json")}
               for i, (queued, frame) in enumerate(QUEUE)]
    cutoff = NOW - timedelta(days=1)
    plan, leading = plan_page(entries[:2], cutoff, {}, True)
    assert (plan.through, leading) == (2, True)  # still old: the next page may prune further
    plan, leading = plan_page(entries[2:], cutoff, {"c-old": OLD, "c2": YOUNG}, leading)
    assert (plan.through, plan.drop, plan.previews, plan.questions, leading) == (3, [5, 6], [4], [9], False)
    # An old entry after a young one (queued out of order) is deleted, not pruned through.
    plan, _ = plan_page([entries[0]], cutoff, {}, False)
    assert plan.through is None and plan.drop == [1]


async def test_the_tenants_retention_removes_every_copy_of_older_messages_and_only_those(mongo_uri, mongo_db_name):
    client = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        db = client[mongo_db_name]
        store, projections = QueueStore(db), Projections(db)
        await store.ensure_indexes()
        await projections.ensure_indexes()
        for tenant in (T, OTHER):
            await seed(db, store, projections, tenant)
        await db[MESSAGE_SETTINGS_COLLECTION].insert_many([
            {"_id": T, "tenant_id": T, "retention_days": 1, "edit_window_s": 900},
            {"_id": OTHER, "tenant_id": OTHER, "retention_days": None, "edit_window_s": 900}])
        retention = TenantRetention(db, store, projections, DeliverySettings(tenant_retention_interval_s=3600.0))

        done = await retention.sweep_if_due()
        assert done is not None and set(done) == {T}
        assert dict(done[T]) == {"entries": 6, "messages": 4, "entry_previews": 2, "questions": 2, "previews": 2}
        for agent in ("ana", "ben"):
            head = await store.head(T, agent)
            assert head["pruned_through"] == 3 and head["cursor"] == len(QUEUE)  # readers behind 3: 4409
            left = {e.cursor: e.frame for e in await store.entries_after(T, agent, 0, 100)}
            assert sorted(left) == [4, 7, 8, 9, 10]
            assert left[4]["conversation"]["last_message"] is None and left[4]["conversation"]["id"] == "c1"
            assert left[7]["message"]["body"] == "young 1" and left[8]["conversation"]["last_message"]["seq"] == 1
            assert left[9]["request"]["question"] is None and left[9]["request"]["conversation_id"] == "c-old"
            assert left[10]["request"]["question"] == "young question"
            assert "old secret" not in str(left)
        threads = {d["conversation_id"]: d async for d in db["delivery_conversations"].find({"tenant_id": T})}
        assert threads["c1"]["last_message"] is None and threads["c-old"]["last_message"] is None
        assert threads["c2"]["last_message"]["seq"] == 1 and threads["c2"]["last_message_at"]

        # The other tenant keeps everything.
        assert len(await store.entries_after(OTHER, "ana", 0, 100)) == len(QUEUE)
        assert (await store.head(OTHER, "ana")).get("pruned_through", 0) == 0
        assert await db["delivery_conversations"].count_documents({"tenant_id": OTHER, "last_message": None}) == 0

        # Not again before the interval; and a sweep that finds nothing more removes nothing.
        assert await retention.sweep_if_due() is None
        assert not any((await retention.sweep())[T].values())

        # Its reads are index walks of the tenant's (queues, threads), never the whole collection.
        plans = {
            "heads": db["delivery_heads"].find({"tenant_id": T}),
            "a queue's entries": db["delivery_queue"].find({"tenant_id": T, "agent_id": "ana", "cursor": {"$gt": 3}})
            .sort("cursor", 1).limit(1000),
            "old previews": db["delivery_conversations"].find({"tenant_id": T, "last_message_at": {"$lt": "2030"}}),
        }
        for name, cursor in plans.items():
            found = stages(await cursor.explain())
            assert "IXSCAN" in found and "COLLSCAN" not in found, (name, found)
    finally:
        await client.drop_database(mongo_db_name)
        await client.close()
