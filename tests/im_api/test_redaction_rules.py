"""Redaction's pure part: every copy of a message inside a stored event is found by its shape and
replaced by the tombstone, the team question cut from it goes too, and the agents an event reached
are read from it."""

from __future__ import annotations

import copy

from im_api.redaction import question_came_from, reached, scrub
from im_api.team_rules import question_of

SECRET = "the customer's card is 4111 1111 1111 1111"
MSG = {"id": "m2", "conversation_id": "c1", "seq": 2, "sender_id": "alice", "body": SECRET, "kind": "text",
       "created_at": "2026-11-27T09:00:00Z", "deleted_at": None}
TOMB = {**MSG, "body": "", "deleted_at": "2026-11-27T10:00:00Z", "redacted_at": "2026-11-27T10:00:00Z"}


def test_every_shape_of_a_copy_is_replaced_and_nothing_else():
    posted = {"type": "MessagePosted", "message": copy.deepcopy(MSG), "recipients": ["alice", "bob"]}
    assert scrub(posted, "c1", 2, TOMB, question=False)
    assert posted["message"] == TOMB and posted["recipients"] == ["alice", "bob"]

    snapshot = {"type": "ParticipantsChanged", "conversation": {
        "id": "c1", "last_message": copy.deepcopy(MSG), "participants": [{"id": "bob"}]}, "removed": ["carol"]}
    assert scrub(snapshot, "c1", 2, TOMB, question=False)
    assert snapshot["conversation"]["last_message"] == TOMB

    other_seq = {"type": "MessagePosted", "message": {**MSG, "seq": 3, "body": "thanks"}}
    other_thread = {"type": "MessagePosted", "message": {**MSG, "conversation_id": "c2"}}
    before = copy.deepcopy([other_seq, other_thread])
    assert not scrub(other_seq, "c1", 2, TOMB, question=False)
    assert not scrub(other_thread, "c1", 2, TOMB, question=False)
    assert [other_seq, other_thread] == before

    already = {"type": "MessageChanged", "message": dict(TOMB)}
    assert not scrub(already, "c1", 2, TOMB, question=False)  # nothing to rewrite


def test_the_question_goes_only_when_asked_and_only_in_its_thread():
    offer = {"type": "TeamRequestChanged", "request": {"conversation_id": "c1", "question": SECRET[:20]}}
    kept = copy.deepcopy(offer)
    assert not scrub(kept, "c1", 2, TOMB, question=False) and kept == offer
    assert scrub(offer, "c1", 2, TOMB, question=True) and offer["request"]["question"] is None
    elsewhere = {"request": {"conversation_id": "c9", "question": "other"}}
    assert not scrub(elsewhere, "c1", 2, TOMB, question=True)


def test_who_an_event_reached():
    assert reached({"recipients": ["alice", "bob"], "removed": ["carol"], "newly_offered": ["dave"],
                    "withdrawn_from": ["erin"], "added": [], "message": {"sender_id": "zed"}}) == {
        "alice", "bob", "carol", "dave", "erin"}
    assert reached({"type": "AgentChanged"}) == set()


def test_a_question_comes_from_the_askers_message_as_posted_or_any_version():
    long = "x" * 400
    request = {"asked_by": "alice", "question": question_of(long)}
    assert question_came_from(request, "alice", ["edited later", long])
    assert not question_came_from(request, "bob", [long])  # someone else's message
    assert not question_came_from(request, "alice", ["another message"])
    assert not question_came_from({"asked_by": "alice", "question": None}, "alice", [long])
    assert not question_came_from(None, "alice", [long])
