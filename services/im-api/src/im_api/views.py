"""What a reader sees of the stored documents: the API shape of a message and of a thread, with
that reader's read state. Pure: the service reads the documents and the names, these shape them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from im_contracts.models import Message
from im_runtime.mongo import field_name


def message_model(doc: Mapping[str, Any]) -> Message:
    """The contract's message from its stored document (the one shape events and the API share)."""
    return Message(id=doc["_id"], conversation_id=doc["conversation_id"], seq=doc["seq"],
                   sender_id=doc["sender_id"], body=doc["body"], kind=doc["kind"],
                   client_msg_id=doc.get("client_msg_id"), created_at=doc["created_at"],
                   edited_at=doc.get("edited_at"), deleted_at=doc.get("deleted_at"),
                   redacted_at=doc.get("redacted_at"))


def message_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return message_model(doc).model_dump()


def last_read(conversation: Mapping[str, Any], reader: str) -> int:
    """The reader's read marker in a stored thread (0: nothing read yet)."""
    return conversation.get("read", {}).get(field_name(reader), 0)


def read_state(last_seq: int, last_read_seq: int) -> dict[str, int]:
    """A read marker and the unread count it leaves (API.md: unread = last_seq − last_read_seq)."""
    return {"last_read_seq": last_read_seq, "unread_count": max(0, last_seq - last_read_seq)}


def conversation_view(doc: Mapping[str, Any], reader: str, names: Mapping[str, str]) -> dict[str, Any]:
    """A thread as `reader` sees it; `names`: display names by agent id (an agent not in it shows
    its id, e.g. one deleted from the directory)."""
    return {
        "id": doc["_id"],
        "participants": [{"id": p, "display_name": names.get(p, p)} for p in doc["participants"]],
        "related": doc.get("related"),
        "created_by": doc["created_by"],
        "created_at": doc["created_at"],
        "last_seq": doc["last_seq"],
        "last_message": message_view(doc["last_message"]) if doc.get("last_message") else None,
        "last_message_at": doc["last_message_at"],
        **read_state(doc["last_seq"], last_read(doc, reader)),
    }
