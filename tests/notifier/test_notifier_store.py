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
    updates_for_message,
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
