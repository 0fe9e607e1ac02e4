"""The resources that travel inside events: a message, a conversation, the Related tag."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

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
    body: str = Field(max_length=BODY_MAX_CHARS, description="Empty only for a deleted message (a tombstone).")
    kind: MessageKind = "text"
    client_msg_id: str | None = Field(default=None, description="The sender's idempotency key.")
    created_at: UtcTime
    edited_at: UtcTime | None = Field(default=None, description="When its body last changed (null: never).")
    deleted_at: UtcTime | None = Field(default=None, description=(
        "Set when it was deleted: a tombstone, shown as \"message deleted\", with no body."))
    redacted_at: UtcTime | None = Field(default=None, description=(
        "Set when a tenant admin redacted it: a tombstone (`deleted_at` is set too) whose body, earlier "
        "versions and every copy the product kept are gone."))

    @model_validator(mode="after")
    def _a_body_unless_deleted(self) -> "Message":
        if not self.body and self.deleted_at is None:
            raise PydanticCustomError("body_required", "a message that is not deleted has a body")
        return self


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


# --- teams: a thread may ask a team, and one of its members claims the request ----------------

TEAMS_PER_REQUEST_MAX = 5
QUESTION_PREVIEW_CHARS = 280
TeamRequestStatus = Literal["open", "claimed"]


class TeamRef(Resource):
    id: str = Field(description="The team's id.")
    name: str = Field(description="The team's name when the request was made.")


class TeamRequest(Resource):
    """A thread asked of teams: who it is offered to and who, if anyone, took it."""

    conversation_id: str
    teams: list[TeamRef]
    asked_by: Participant
    related: Related | None = None
    question: str | None = Field(default=None, description=(
        f"The beginning (at most {QUESTION_PREVIEW_CHARS} characters) of the message the thread "
        "started with: what the offered members decide on before they claim it."))
    status: TeamRequestStatus = Field(description="open: offered, nobody took it yet; claimed: taken.")
    offered_to: list[str] = Field(default_factory=list, description=(
        "Agent ids it is open to now (empty once claimed): any of them may claim it."))
    claimed_by: Participant | None = None
    claimed_at: UtcTime | None = None
    opened_at: UtcTime = Field(description="When it was asked (or last released back to the teams).")
    escalate_at: UtcTime | None = Field(default=None, description=(
        "When it goes to every member, offline ones too, if still open (null: escalated or taken)."))
    escalated: bool = False
