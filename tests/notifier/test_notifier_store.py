"""The notifier's MongoDB updates against the real server: the consumers' raise-only updates are
accepted (no path conflicts) and commute, a decision's save leaves the consumers' fields alone,
and an agent changed after a decision is still applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from im_notifier.domain import (
    NEVER,
    Policy,
    Prefs,
    decide,
    update_for_agent,
    update_for_presence,
    update_for_read,
    updates_for_changed_message,
    updates_for_message,
    updates_for_team_request,
)
from im_notifier.render import subject
from im_notifier.store import NotifierStore

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)
POLICY = Policy(delay=60 * S, assistance_delay=0 * S, digest_window=600 * S, webhook=True, email=True)


def message(seq: int, at: datetime, sender: str = "bob", preview: str | None = None):
    return updates_for_message(conversation_id="c1", seq=seq, sender_id=sender, recipients=["alice", "bob"], at=at,
                               preview=preview or f"m{seq}", assistance=False, due_after=60 * S)


async def test_updates_commute_and_a_decision_keeps_the_consumers_fields(mongo, mongo_db_name):
    store = NotifierStore(mongo[mongo_db_name])
    await store.ensure_indexes()
    # Out of order and repeated: the read of seq 1 before any message, then 3, 2, 3 again.
    await store.apply("t1", [("alice", {}, update_for_read(agent_id="alice", conversation_id="c1", seq=1), True)])
    for seq in (3, 2, 3):
        await store.apply("t1", message(seq, T0 + seq * S))
    assert await store.apply_if_newer("t1", "alice", "agent_at", T0, update_for_agent(
        agent_id="alice", display_name="Alice", email="alice@old.test", active=True, at=T0))
    assert await store.apply_if_newer("t1", "alice", "status_at", T0 + 5 * S, update_for_presence(
        agent_id="alice", status="away", at=T0 + 5 * S, due_after=60 * S))
    assert not await store.apply_if_newer("t1", "alice", "status_at", T0 + 4 * S, update_for_presence(
        agent_id="alice", status="online", at=T0 + 4 * S, due_after=60 * S)), "an older presence is ignored"

    doc = await store.load("t1", "alice")
    thread = doc.threads["c1"]
    assert (thread.last_seq, thread.read_seq, thread.preview, thread.last_at) == (3, 1, "m3", T0 + 3 * S)
    assert thread.hook_since == T0 + 2 * S, "waiting since the first unread message that arrived"
    assert (doc.status, doc.absent_since, doc.email) == ("away", T0 + 5 * S, "alice@old.test")
    assert doc.due_at == T0 + 62 * S  # the earliest look asked for

    decision = decide(doc, T0 + 65 * S, POLICY, Prefs())
    assert set(decision.claimed) == {"webhook", "email"}
    assert await store.save(doc)
    # The directory changes after the decision: still applied (the save kept agent_at).
    assert await store.apply_if_newer("t1", "alice", "agent_at", T0 + 70 * S, update_for_agent(
        agent_id="alice", display_name="Alice B", email="alice@new.test", active=False, at=T0 + 70 * S))
    again = await store.load("t1", "alice")
    assert (again.email, again.display_name, again.active) == ("alice@new.test", "Alice B", False)
    assert again.outgoing.keys() == {"webhook", "email"} and again.threads["c1"].hook_seq == 3
    # A stale copy cannot be saved over it.
    assert not await store.save(doc)
    # bob's own message marked his copy read; nothing waits for him.
    bob = await store.load("t1", "bob")
    assert bob.threads["c1"].read_seq == 3 and bob.due_at == NEVER


async def test_a_deactivated_agent_is_told_nothing(mongo, mongo_db_name):
    store = NotifierStore(mongo[mongo_db_name])
    await store.apply("t1", message(1, T0))
    await store.apply_if_newer("t1", "alice", "agent_at", T0, update_for_agent(
        agent_id="alice", display_name="Alice", email="a@x.test", active=False, at=T0))
    doc = await store.load("t1", "alice")
    decision = decide(doc, T0 + 61 * S, POLICY, Prefs())
    assert decision.claimed == {} and ("webhook", "inactive", 1) in decision.skipped


def test_a_subject_never_carries_a_line_break_from_a_name():
    claim = {"threads": [{"conversation_id": "c1", "unread": 1, "last_sender": "bob", "assistance": False}]}
    assert subject(claim, {"bob": "Bob\r\nBcc: x@evil.test"}) == "Bob  Bcc: x@evil.test sent you 1 message"


async def test_an_escalated_team_request_notifies_the_offline_member_until_someone_takes_it(mongo, mongo_db_name):
    """Offered at first to the present bob only; escalated to erin, offline since before: she is
    due a notification at once (assistance delay 0); once bob takes it, nothing waits for her."""
    store = NotifierStore(mongo[mongo_db_name])
    await store.ensure_indexes()
    for agent in ("bob", "erin"):
        await store.apply_if_newer("t1", agent, "agent_at", T0, update_for_agent(
            agent_id=agent, display_name=agent.title(), email=f"{agent}@x.test", active=True, at=T0))
        await store.apply_if_newer("t1", agent, "status_at", T0, update_for_presence(
            agent_id=agent, status="offline" if agent == "erin" else "online", at=T0, due_after=0 * S))

    def offer(change: str, newly: list[str], at, withdrawn: list[str] | None = None, seq: int = 1):
        return updates_for_team_request(change=change, conversation_id="c9", seq=seq, asked_by="alice",
                                        newly_offered=newly, withdrawn_from=withdrawn or [], at=at, preview=None,
                                        due_after=0 * S)

    await store.apply("t1", offer("offered", ["bob"], T0 + S))
    erin = await store.load("t1", "erin")
    assert "c9" not in erin.threads  # not offered to her yet
    await store.apply("t1", offer("offered", ["erin"], T0 + 10 * S))  # the escalation
    erin = await store.load("t1", "erin")
    assert erin.threads["c9"].assistance("webhook"), "waiting as an assistance request"
    decision = decide(erin, T0 + 11 * S, POLICY, Prefs())
    assert set(decision.claimed) == {"webhook", "email"}

    # Bob takes it: nothing waits for her any more (in a real run the claim came before a send).
    # alice asked and has a reply of someone else waiting in the thread: the claim leaves it alone.
    await store.apply("t1", updates_for_message(conversation_id="c9", seq=2, sender_id="zoe",
                                                recipients=["alice"], at=T0 + 15 * S, preview=None,
                                                assistance=False, due_after=60 * S))
    await store.apply("t1", offer("claimed", [], T0 + 21 * S, withdrawn=["erin"], seq=3))
    fresh = await store.load("t1", "erin")
    assert fresh.threads["c9"].read_seq == 3
    decision = decide(fresh, T0 + 22 * S, POLICY, Prefs())
    assert decision.claimed == {}
    bob = await store.load("t1", "bob")
    assert bob.threads["c9"].read_seq == 0, "the winner's thread is his to read"
    alice = await store.load("t1", "alice")
    assert (alice.threads["c9"].last_seq, alice.threads["c9"].read_seq) == (2, 0), "the asker's unread reply waits"


async def test_a_deleted_messages_preview_is_dropped_and_an_edits_followed_only_while_it_is_the_latest(
        mongo, mongo_db_name):
    store = NotifierStore(mongo[mongo_db_name])
    await store.apply("t1", message(1, T0, preview="the card number"))
    await store.apply("t1", updates_for_changed_message(conversation_id="c1", seq=1, recipients=["alice", "bob"],
                                                        preview="fixed"))
    assert (await store.load("t1", "alice")).threads["c1"].preview == "fixed"
    await store.apply("t1", updates_for_changed_message(conversation_id="c1", seq=1, recipients=["alice", "bob"],
                                                        preview=None))
    assert (await store.load("t1", "alice")).threads["c1"].preview is None
    await store.apply("t1", message(2, T0 + S, preview="a later one"))
    await store.apply("t1", updates_for_changed_message(conversation_id="c1", seq=1, recipients=["alice"],
                                                        preview=None))  # no longer the latest: untouched
    assert (await store.load("t1", "alice")).threads["c1"].preview == "a later one"
