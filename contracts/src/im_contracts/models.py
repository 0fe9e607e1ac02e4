"""The resources that travel inside events: a message, a conversation, the Related tag."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

RelatedType = Literal["ticket", "chat"]
MessageKind = Literal["text", "system"]
PresenceStatus = Literal["online", "away", "offline"]

BODY_MAX_CHARS = 10_000
# The client_msg_id of a message posted for an assistance request starts with this (im-api makes
# it from the request id; HTTP refuses it): the notifier tells such messages apart by it.
ASSISTANCE_CLIENT_MSG_PREFIX = "assist:"


def to_rfc3339(value: datetime) -> str:
    """UTC with millisecond precision and a `Z`, the one time format on the wire."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# A time as every JSON document of the product spells it (HTTP, frames, events alike).
UtcTime = Annotated[
    datetime,
    PlainSerializer(to_rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]


class Resource(BaseModel):
    """Consumers ignore fields they do not know (API.md: add fields freely). A field with a default
    is still always serialized, so the (serialization) schema marks it required."""

    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)


class Related(Resource):
    type: RelatedType = Field(description="What the thread is about: a ticket or a live chat.")
    id: str = Field(min_length=1, max_length=200, description="The ticket's or chat's id.")
    title: str | None = Field(default=None, max_length=500, description="Shown in the Related tag.")


class Participant(Resource):
    id: str = Field(description="Agent id.")
    display_name: str = Field(description="The agent's name at the time of the event.")


class Message(Resource):
    id: str
    conversation_id: str
    seq: int = Field(ge=1, description="Gap-free position inside the conversation.")
    sender_id: str
    body: str = Field(min_length=1, max_length=BODY_MAX_CHARS)
    kind: MessageKind = "text"
    client_msg_id: str | None = Field(default=None, description="The sender's idempotency key.")
    created_at: UtcTime


class ConversationSnapshot(Resource):
    """The shared part of a conversation (no per-reader fields such as unread_count)."""

    id: str
    participants: list[Participant]
    related: Related | None = None
    created_by: str
    created_at: UtcTime
    last_seq: int = 0
    last_message: Message | None = None
    last_message_at: UtcTime | None = None
