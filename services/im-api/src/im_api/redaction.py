"""Redaction, pure: finding and replacing every copy of one message inside a stored event (an
outbox record's JSON), and who those events reached. The I/O is in lifecycle.py.

A message travels inside events in several shapes — the message itself (MessagePosted,
MessageChanged), a thread's `last_message` (ConversationStarted, ParticipantsChanged), and the
team request's `question` cut from it (TeamRequestChanged) — so the walk is by shape, not by
event type: any object with the message's conversation id, seq, sender and body is a copy."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .team_rules import question_of

# The fields of an event that name agents it was fanned out to.
REACHED_FIELDS = ("recipients", "newly_offered", "withdrawn_from", "added", "removed")


def is_copy(node: Any, conversation_id: str, seq: int) -> bool:
    return (isinstance(node, dict) and node.get("conversation_id") == conversation_id and node.get("seq") == seq
            and "body" in node and "sender_id" in node)


def scrub(node: Any, conversation_id: str, seq: int, tombstone: dict[str, Any], question: bool) -> bool:
    """Replaces, in place, every copy of the message inside `node` by `tombstone`, and (with
    `question`) the thread's team request question by null. Whether anything changed."""
    changed = False
    if isinstance(node, dict):
        items: Iterable[tuple[Any, Any]] = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return False
    for key, value in items:
        if is_copy(value, conversation_id, seq):
            if value != tombstone:
                node[key] = dict(tombstone)
                changed = True
        elif (question and key == "question" and isinstance(node, dict) and value is not None
              and node.get("conversation_id") == conversation_id):
            node[key] = None
            changed = True
        else:
            changed = scrub(value, conversation_id, seq, tombstone, question) or changed
    return changed


def encode(event: dict[str, Any]) -> bytes:
    """A rewritten event as an outbox record's value (compact JSON, as the record was)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def reached(event: dict[str, Any]) -> set[str]:
    """The agents an event was fanned out to (whose delivery queues may hold a copy)."""
    found: set[str] = set()
    for name in REACHED_FIELDS:
        value = event.get(name)
        if isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def question_came_from(request: dict[str, Any] | None, sender_id: str, bodies: Iterable[str]) -> bool:
    """Whether a thread's team request question was cut from one of the message's bodies (as
    posted, or any later version): then redacting the message removes the question too."""
    if not request or not request.get("question") or request.get("asked_by") != sender_id:
        return False
    return any(question_of(body) == request["question"] for body in bodies if body)
