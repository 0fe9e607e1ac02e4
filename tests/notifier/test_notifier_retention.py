"""A tenant's message retention in the notifier, against the real MongoDB: the previews it keeps of
messages posted before the tenant's cutoff are cleared (a thread's latest, and one in a
notification still being sent); newer previews, the threads themselves and other tenants stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from im_contracts.retention import MESSAGE_SETTINGS_COLLECTION
from im_notifier.domain import AgentDoc, Policy, Prefs, Thread, decide, updates_for_message
from im_notifier.retention import PreviewRetention, forget_old_previews
from im_notifier.store import NotifierStore

from support.plans import stages

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
OLD, YOUNG = NOW - timedelta(days=3), NOW - timedelta(hours=2)
CUTOFF = NOW - timedelta(days=1)


async def claim_webhook(store: NotifierStore, tenant_id: str, agent_id: str) -> None:
    """The agent's unread threads claimed for a webhook, as a decision makes it (in flight)."""
    doc = await store.load(tenant_id, agent_id)
    policy = Policy(delay=timedelta(seconds=60), assistance_delay=timedelta(0), digest_window=timedelta(minutes=10),
                    webhook=True, email=False)
    assert "webhook" in decide(doc, NOW, policy, Prefs()).claimed
    assert await store.save(doc)


def test_only_previews_of_messages_posted_before_the_cutoff_are_forgotten():
    doc = AgentDoc("acme", "alice", threads={
        "old": Thread("old", last_seq=4, last_at=OLD, preview="card 4111"),
        "young": Thread("young", last_seq=2, last_at=YOUNG, preview="hello"),
        "none": Thread("none", last_seq=1, last_at=OLD, preview=None)})
    doc.outgoing["webhook"] = {"key": "k", "threads": [{"conversation_id": "old", "last_at": OLD, "preview": "card 4111"},
                                                       {"conversation_id": "young", "last_at": YOUNG, "preview": "hi"}]}
    assert forget_old_previews(doc, CUTOFF) == 2
    assert [doc.threads[c].preview for c in ("old", "young", "none")] == [None, "hello", None]
    assert doc.threads["old"].last_seq == 4  # the thread and what waits on it stay
    assert [i["preview"] for i in doc.outgoing["webhook"]["threads"]] == [None, "hi"]
    assert forget_old_previews(doc, CUTOFF) == 0


async def test_a_look_clears_the_old_previews_of_the_tenants_with_retention_only(mongo, mongo_db_name):
    db = mongo[mongo_db_name]
    store = NotifierStore(db)
    await store.ensure_indexes()
    for tenant in ("acme", "globex"):
        for cid, at, text in [("c-old", OLD, "card 4111"), ("c-young", YOUNG, "hello")]:
            await store.apply(tenant, updates_for_message(
                conversation_id=cid, seq=1, sender_id="bob", recipients=["alice", "bob"], at=at, preview=text,
                assistance=False, due_after=timedelta(seconds=60)))
    await claim_webhook(store, "acme", "alice")  # a notification in flight about both threads
    await db[MESSAGE_SETTINGS_COLLECTION].insert_one({"_id": "acme", "tenant_id": "acme", "retention_days": 1})

    retention = PreviewRetention(db, store, lambda: NOW)
    assert await retention.sweep() == {"acme": 2}  # alice's thread and her claim (bob sent them: no preview)
    alice = await store.load("acme", "alice")
    assert alice.threads["c-old"].preview is None and alice.threads["c-young"].preview == "hello"
    assert {i["conversation_id"]: i["preview"] for i in alice.outgoing["webhook"]["threads"]} == {
        "c-old": None, "c-young": "hello"}
    assert (await store.load("globex", "alice")).threads["c-old"].preview == "card 4111"
    assert await retention.sweep() == {"acme": 0}

    explained = await db["notifier_agents"].find({"tenant_id": "acme", "_id": {"$gt": "acme:alice"}}).sort(
        "_id", 1).limit(200).explain()
    assert "IXSCAN" in stages(explained) and "COLLSCAN" not in stages(explained)


async def test_a_redaction_clears_its_threads_previews_from_notifications_being_sent(mongo, mongo_db_name):
    """A redacted message may be the preview of a notification already claimed for sending (a
    webhook retried for an hour): that copy goes too, and nothing else of the claim."""
    from im_notifier.domain import updates_for_redaction

    store = NotifierStore(mongo[mongo_db_name])
    await store.ensure_indexes()
    for cid, text in [("c-secret", "card 4111"), ("c-other", "hello")]:
        await store.apply("acme", updates_for_message(
            conversation_id=cid, seq=1, sender_id="bob", recipients=["alice"], at=YOUNG, preview=text,
            assistance=False, due_after=timedelta(seconds=60)))
    await claim_webhook(store, "acme", "alice")

    await store.apply("acme", updates_for_redaction(conversation_id="c-secret", seq=1, recipients=["alice"],
                                                    question_removed=False))
    assert await store.forget_claimed("acme", "alice", "c-secret")
    alice = await store.load("acme", "alice")
    assert alice.threads["c-secret"].preview is None and alice.threads["c-other"].preview == "hello"
    claim = alice.outgoing["webhook"]
    assert {i["conversation_id"]: i["preview"] for i in claim["threads"]} == {"c-secret": None, "c-other": "hello"}
    assert [i["unread"] for i in claim["threads"]] == [1, 1]  # the notification itself still goes
    assert await store.forget_claimed("acme", "alice", "c-secret")  # nothing left: no write
    assert await store.forget_claimed("acme", "nobody", "c-secret")
