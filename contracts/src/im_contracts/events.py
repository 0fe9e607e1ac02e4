"""Every Kafka event of Helpdesk IM, v1: one pydantic model per event, a shared envelope."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator
from pydantic_core import PydanticCustomError

from .models import TEAMS_PER_REQUEST_MAX, ConversationSnapshot, Message, PresenceStatus, Related, TeamRequest, to_rfc3339

SCHEMA_VERSION = 1
# Events that concern no single tenant (a gateway serves them all) carry this tenant id.
SYSTEM_TENANT = "_system"


def new_event_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope every event carries. Unknown fields are ignored by consumers."""

    model_config = ConfigDict(extra="ignore")
    # The discriminator: each subclass fixes it to its own class name.
    type: str
    event_id: str = Field(default_factory=new_event_id, description="Unique per event; dedupe key.")
    tenant_id: str = Field(min_length=1, max_length=128, description="The help-desk tenant.")
    occurred_at: datetime = Field(default_factory=utcnow, description="RFC 3339 UTC.")
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, description="Integer major version.")

    @field_serializer("occurred_at")
    def _rfc3339(self, value: datetime) -> str:
        return to_rfc3339(value)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# --- im.messages.v1 -------------------------------------------------------------------------


class MessagePosted(Event):
    type: Literal["MessagePosted"] = "MessagePosted"
    message: Message
    recipients: list[str] = Field(
        description="Agent ids of the participants at send time, fixed in the send transaction."
    )


class MessageChanged(Event):
    """A message was edited (its new body), deleted (a tombstone: no body) or redacted (a tombstone
    whose every kept copy is gone too), or a system line reworded (an erased agent's name gone
    from it), in the thread's order with the messages around it."""

    type: Literal["MessageChanged"] = "MessageChanged"
    change: Literal["edited", "deleted", "redacted", "reworded"]
    message: Message = Field(description="The message as it is now.")
    changed_by: str = Field(description=(
        "Its author, or the tenant admin who deleted, redacted or (erasing an agent) reworded it."))
    version: int = Field(ge=2, description="The message's version after the change (1: as posted).")
    recipients: list[str] = Field(description=(
        "The thread's participants at the change; for a redaction or a rewording also everyone else a "
        "copy of the message may have reached (former participants, agents a team request was offered to)."))
    question_removed: bool = Field(default=False, description=(
        "A redaction of the message a team request's question was taken from: the question is gone "
        "too, and copies of the request drop it."))


# --- im.conversations.v1 --------------------------------------------------------------------


class ConversationStarted(Event):
    type: Literal["ConversationStarted"] = "ConversationStarted"
    conversation: ConversationSnapshot
    recipients: list[str]


class ParticipantsChanged(Event):
    type: Literal["ParticipantsChanged"] = "ParticipantsChanged"
    conversation: ConversationSnapshot
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed_by: str
    recipients: list[str] = Field(description="Participants after the change plus those removed.")


class ReadMarkerMoved(Event):
    type: Literal["ReadMarkerMoved"] = "ReadMarkerMoved"
    conversation_id: str
    agent_id: str
    seq: int = Field(ge=0)
    recipients: list[str]


class TeamRequestChanged(Event):
    """A team request was offered (at the start, or to more members when it escalated), claimed
    by one member, or released back to its teams; ordered with the thread's other events."""

    type: Literal["TeamRequestChanged"] = "TeamRequestChanged"
    change: Literal["offered", "claimed", "released"]
    request: TeamRequest
    newly_offered: list[str] = Field(default_factory=list, description=(
        "Agents it is offered to by this change (all of offered_to at the start; the members added "
        "by an escalation or a release)."))
    withdrawn_from: list[str] = Field(default_factory=list, description=(
        "Agents it was open to who are not in the thread and may no longer claim it (on a claim: "
        "everyone it was offered to but the winner): what waited for them stops."))
    recipients: list[str] = Field(description=(
        "Who gets the frame: the participants (and one who just left it); the members it is open "
        "to; on a claim, everyone it was offered to and every active member of its teams, so that "
        "all of them see that it is handled."))
    seq: int = Field(default=0, ge=0, description=(
        "The thread's message this change is about: the question (seq 1) for a new request, the "
        "thread's last message for an escalation, the system line of a claim or release."))


# --- im.agents.v1 (compacted) ---------------------------------------------------------------


# The display name an erased agent's directory entry takes (POST /v1/admin/agents/{id}/erase).
ERASED_NAME = "Erased agent"


class AgentChanged(Event):
    """The directory entry of an agent after an upsert or deactivation (event-carried state)."""

    type: Literal["AgentChanged"] = "AgentChanged"
    agent_id: str
    display_name: str
    role: str = "agent"
    active: bool
    email: str | None = Field(default=None, description="Where the notifier sends email digests; None: none.")


# --- im.connections.v1 ----------------------------------------------------------------------


class _ConnectionEvent(Event):
    agent_id: str
    connection_id: str
    device_id: str
    gateway_id: str
    gateway_epoch: str


class ConnectionOpened(_ConnectionEvent):
    type: Literal["ConnectionOpened"] = "ConnectionOpened"


class ConnectionClosed(_ConnectionEvent):
    type: Literal["ConnectionClosed"] = "ConnectionClosed"


class ConnectionIdle(_ConnectionEvent):
    type: Literal["ConnectionIdle"] = "ConnectionIdle"


class ConnectionActive(_ConnectionEvent):
    type: Literal["ConnectionActive"] = "ConnectionActive"


# --- im.gateways.v1 -------------------------------------------------------------------------


class GatewayHeartbeat(Event):
    type: Literal["GatewayHeartbeat"] = "GatewayHeartbeat"
    tenant_id: str = SYSTEM_TENANT
    gateway_id: str
    epoch: str = Field(description="Changes on every boot; a new epoch expires the old connections.")
    connection_count: int = Field(ge=0)
    connection_ids: list[str] = Field(
        default_factory=list,
        description="Sent empty: listing every connection outgrew a record at ~29,000 sockets, and "
                    "liveness is per gateway and epoch. Still accepted, from gateways of older versions.",
    )


# --- im.presence.v1 (compacted) -------------------------------------------------------------


class AgentPresence(Event):
    type: Literal["AgentPresence"] = "AgentPresence"
    agent_id: str
    status: PresenceStatus
    last_seen_at: datetime | None = None
    connections: int = Field(ge=0)

    @field_serializer("last_seen_at")
    def _seen(self, value: datetime | None) -> str | None:
        return None if value is None else to_rfc3339(value)


# --- im.typing.v1 ---------------------------------------------------------------------------


class Typing(Event):
    type: Literal["Typing"] = "Typing"
    conversation_id: str
    agent_id: str


# --- helpdesk.assistance-requests.v1 --------------------------------------------------------


class AssistanceRequested(Event):
    """From ticketing / live-chat services: open (or reuse) the related thread and post."""

    type: Literal["AssistanceRequested"] = "AssistanceRequested"
    request_id: str = Field(min_length=1, max_length=200, description="Idempotency key per tenant.")
    requested_by: str = Field(min_length=1, description="The agent asking for help (the sender).")
    agent_ids: list[str] = Field(default_factory=list, description="The agents asked to help.")
    team_ids: list[str] = Field(default_factory=list, max_length=TEAMS_PER_REQUEST_MAX, description=(
        "Teams asked to help: the request is offered to their members and one of them claims it. "
        "At least one agent or one team."))
    related: Related
    message: str = Field(min_length=1, max_length=10_000, description="The message body to post.")

    @model_validator(mode="after")
    def _someone_asked(self) -> "AssistanceRequested":
        if not self.agent_ids and not self.team_ids:
            # The type is what a dead letter's detail shows (never a value of the record).
            raise PydanticCustomError("agent_ids_or_team_ids_required",
                                      "name at least one agent (agent_ids) or team (team_ids)")
        return self


# --- internal to delivery: im.inbox.v1 and im.delivery-signals.v1 ---------------------------


class QueueAppend(Event):
    """Fan-out worker → the single writer of one agent's delivery queue (keyed tenant:agent)."""

    type: Literal["QueueAppend"] = "QueueAppend"
    agent_id: str
    dedupe_key: str = Field(description="e.g. msg:<conversation>:<seq>; appended at most once.")
    frame: dict[str, Any] = Field(description="The client frame, without its cursor.")
    drop_question: bool = Field(default=False, description=(
        "With a redacted message's `message.updated`: the agent's queued team request frames of the "
        "thread drop their question too (it was cut from that message)."))


class QueueAdvanced(Event):
    """Queue writer → the gateway holding a connection of the agent: new entries to send."""

    type: Literal["QueueAdvanced"] = "QueueAdvanced"
    gateway_id: str
    agent_id: str
    cursor: int = Field(ge=1)


class LiveFrame(Event):
    """A live-only frame (presence.changed, typing) for one agent's connections on a gateway."""

    type: Literal["LiveFrame"] = "LiveFrame"
    gateway_id: str
    agent_id: str
    frame: dict[str, Any]


# --- im.dead-letters.v1 ---------------------------------------------------------------------


class DeadLetter(Event):
    type: Literal["DeadLetter"] = "DeadLetter"
    reason: str = Field(description="snake_case: malformed_json, invalid_event, unauthorized, ...")
    detail: str = Field(default="", description="A human sentence; never a message body or token.")
    original_topic: str
    original_partition: int
    original_offset: int
    original_key_b64: str | None = Field(
        default=None, description="The original key, base64; its first KEPT_KEY_BYTES when longer.")
    original_value_b64: str = Field(
        description="The original record bytes, base64; only the first KEPT_VALUE_BYTES when longer "
                    "(original_value_size and original_value_sha256 describe the whole).")
    original_value_size: int | None = Field(
        default=None, description="The original value's length in bytes (None: no value).")
    original_value_sha256: str | None = Field(
        default=None, description="Hex SHA-256 of the whole original value, to match it to its source.")
    original_value_truncated: bool = Field(
        default=False, description="True when original_value_b64 holds only the value's beginning.")
    original_headers: list[tuple[str, str]] = Field(
        default_factory=list,
        description="Original headers (base64 values), less authorization; at most KEPT_HEADERS, "
                    "each value cut to KEPT_HEADER_BYTES.",
    )
    consumer: str = Field(description="The consumer group or service that rejected it.")

    KNOWN_REASONS: ClassVar[tuple[str, ...]] = (
        "malformed_json",
        "invalid_event",
        "unknown_event_type",
        "unsupported_schema_version",
        "unauthorized",
        "unknown_tenant",
        "unknown_agent",
        "unknown_team",
        "too_many_participants",
        "record_too_large",
        "rejected",
    )
    # A dead letter must always fit in a record (Kafka's default limit is 1 MiB) whatever it holds:
    # an oversized original would otherwise make its dead letter unsendable too, and the partition
    # would be retried forever. Base64 grows by 4/3: 256 KiB of value is ~342 KiB in the letter.
    KEPT_VALUE_BYTES: ClassVar[int] = 256 * 1024
    KEPT_KEY_BYTES: ClassVar[int] = 1024
    KEPT_HEADERS: ClassVar[int] = 32
    KEPT_HEADER_BYTES: ClassVar[int] = 1024
    KEPT_DETAIL_CHARS: ClassVar[int] = 1000


ALL_EVENTS: tuple[type[Event], ...] = (
    MessagePosted,
    MessageChanged,
    AgentChanged,
    ConversationStarted,
    ParticipantsChanged,
    ReadMarkerMoved,
    TeamRequestChanged,
    ConnectionOpened,
    ConnectionClosed,
    ConnectionIdle,
    ConnectionActive,
    GatewayHeartbeat,
    AgentPresence,
    Typing,
    AssistanceRequested,
    QueueAppend,
    QueueAdvanced,
    LiveFrame,
    DeadLetter,
)

