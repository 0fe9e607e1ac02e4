"""Request and response models of the HTTP contract (API.md), with the examples /docs shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from im_contracts.events import to_rfc3339
from im_contracts.models import ASSISTANCE_CLIENT_MSG_PREFIX, QUESTION_PREVIEW_CHARS, TEAMS_PER_REQUEST_MAX
from im_contracts.retention import RETENTION_DAYS_MAX, RETENTION_DAYS_MIN
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer, field_validator

AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@:-]+$",
                               examples=["alice"])]


def _not_reserved(value: str) -> str:
    if value.startswith(ASSISTANCE_CLIENT_MSG_PREFIX):
        raise ValueError(f"must not start with {ASSISTANCE_CLIENT_MSG_PREFIX!r} (reserved for assistance requests)")
    return value


ClientMsgId = Annotated[str, Field(min_length=1, max_length=128, description="The sender's idempotency key "
                                   f"(not starting with {ASSISTANCE_CLIENT_MSG_PREFIX!r}, reserved).",
                                   examples=["c1f3e1d2-5b8a-4a53-9d0e-1f2a3b4c5d6e"]), AfterValidator(_not_reserved)]
Body = Annotated[str, Field(min_length=1, max_length=40_000,
                            description="1 to 10,000 characters after trimming.", examples=["Can you look at this?"])]


class Request(BaseModel):
    """Unknown fields are refused (422): a misspelt field must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    @field_serializer("*", when_used="json")
    def _times(self, value):  # every time on the wire is RFC 3339 UTC with a Z
        return to_rfc3339(value) if isinstance(value, datetime) else value


# --- agents ---------------------------------------------------------------------------------

class AgentUpsert(Request):
    display_name: str = Field(min_length=1, max_length=200, examples=["Alice Martin"])
    email: str | None = Field(default=None, max_length=320, examples=["alice@example.com"])
    role: Literal["agent", "admin"] = "agent"


class Presence(Response):
    status: Literal["online", "away", "offline"]
    last_seen_at: datetime | None = None


class Agent(Response):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "alice", "display_name": "Alice Martin", "email": "alice@example.com", "role": "agent",
        "active": True, "presence": {"status": "online", "last_seen_at": "2026-11-25T22:00:00.000Z"}}]})
    id: str
    display_name: str
    email: str | None = None
    role: str
    active: bool
    presence: Presence


class ListedAgent(Response):
    """An agent as every agent of the tenant sees it in the picker: no email, no active flag (the
    list holds active agents only); the full record is the admins' (PUT's answer)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "alice", "display_name": "Alice Martin", "role": "agent",
        "presence": {"status": "online", "last_seen_at": "2026-11-25T22:00:00.000Z"}}]})
    id: str
    display_name: str
    role: str
    presence: Presence


class AgentPage(Response):
    items: list[ListedAgent]
    next_cursor: str | None = None


# --- messages and conversations -------------------------------------------------------------

class Message(Response):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "5f0c6a8e0d4b4f8e9a1b2c3d4e5f6a7b", "conversation_id": "9a1b2c3d4e5f6a7b5f0c6a8e0d4b4f8e",
        "seq": 7, "sender_id": "alice", "body": "Can you look at ticket 123?", "kind": "text",
        "client_msg_id": "c1f3e1d2", "created_at": "2026-11-25T22:00:00.000Z"}]})
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    body: str = Field(description="Empty only for a deleted message (a tombstone: show \"message deleted\").")
    kind: Literal["text", "system"]
    client_msg_id: str | None = None
    created_at: datetime
    edited_at: datetime | None = Field(default=None, description="When its body last changed (null: never).")
    deleted_at: datetime | None = Field(default=None, description="Set when it was deleted.")
    redacted_at: datetime | None = Field(default=None, description=(
        "Set when a tenant admin redacted it (a tombstone too): its body is gone from every copy the product kept."))


TeamId = Annotated[str, Field(min_length=1, max_length=64, description="A team id (32 hex digits).",
                              examples=["0f1e2d3c4b5a69788796a5b4c3d2e1f0"])]


class RelatedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["ticket", "chat"]
    id: str = Field(min_length=1, max_length=200, examples=["T-123"])
    title: str | None = Field(default=None, max_length=500, examples=["Printer on fire"])


class Participant(Response):
    id: str
    display_name: str


class TeamRef(Response):
    id: str
    name: str = Field(description="The team's name when the request was made.")


class TeamRequest(Response):
    """A thread asked of teams (the same shape as the `team_request.*` frames' `request`)."""

    # Every field always sent, as in the frames (one client type serves both).
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)
    conversation_id: str
    teams: list[TeamRef]
    asked_by: Participant
    related: RelatedItem | None = None
    question: str | None = Field(default=None, description=(
        f"The first {QUESTION_PREVIEW_CHARS} characters of the message the thread started with."))
    status: Literal["open", "claimed"]
    offered_to: list[str] = Field(description="Who may claim it now (empty once taken).")
    claimed_by: Participant | None = None
    claimed_at: datetime | None = None
    opened_at: datetime = Field(description="When it was asked, or last released back.")
    escalate_at: datetime | None = Field(default=None, description=(
        "When it goes to every member, offline ones too, if still open (null: escalated or taken)."))
    escalated: bool = False


class Conversation(Response):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "9a1b2c3d4e5f6a7b5f0c6a8e0d4b4f8e",
        "participants": [{"id": "alice", "display_name": "Alice Martin"},
                         {"id": "bob", "display_name": "Bob Stone"}],
        "related": {"type": "ticket", "id": "T-123", "title": "Printer on fire"},
        "created_by": "alice", "created_at": "2026-11-25T21:00:00.000Z", "last_seq": 7,
        "last_message": None, "last_message_at": "2026-11-25T22:00:00.000Z", "last_read_seq": 5,
        "unread_count": 2}]})
    id: str
    participants: list[Participant]
    related: RelatedItem | None = None
    created_by: str
    created_at: datetime
    last_seq: int
    last_message: Message | None = None
    last_message_at: datetime
    last_read_seq: int
    unread_count: int
    team_request: TeamRequest | None = Field(default=None, description=(
        "Set when the thread asked teams: its offer and who took it. A member it is offered to sees "
        "the thread in their list until someone claims it, without its history: for them "
        "`last_message` is null and nothing is unread."))


class FirstMessage(Request):
    body: Body
    client_msg_id: ClientMsgId


class ConversationStart(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "participant_ids": ["bob"], "related": {"type": "ticket", "id": "T-123", "title": "Printer on fire"},
        "first_message": {"body": "Can you help with this one?", "client_msg_id": "c1f3e1d2"}}]})
    participant_ids: list[AgentId] = Field(default_factory=list, max_length=100, description=(
        "Agents asked by name (at least one agent besides the caller, or one team)."))
    team_ids: list[TeamId] = Field(default_factory=list, max_length=TEAMS_PER_REQUEST_MAX, description=(
        "Teams asked: offered to their members who are online or away (every member when none is, "
        "if the tenant says so); the first to claim it joins. Part of the start identity."))
    related: RelatedItem | None = None
    first_message: FirstMessage | None = None


class ConversationPage(Response):
    items: list[Conversation]
    next_cursor: str | None = None
    stream_cursor: int = Field(description="Resume the stream after this delivery cursor.")


class RelatedConversations(Response):
    items: list[Conversation]


class MessagePost(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"body": "On it.", "client_msg_id": "3b1d9c"}]})
    body: Body
    client_msg_id: ClientMsgId


class MessagePage(Response):
    items: list[Message]


class ParticipantsAdd(Request):
    agent_ids: list[AgentId] = Field(min_length=1, max_length=100, examples=[["carol"]])


class ReadMarkerMove(Request):
    seq: int = Field(ge=0, le=2**53, examples=[7])


class ReadMarker(Response):
    last_read_seq: int
    unread_count: int


class Unread(Response):
    total: int = Field(description="Unread messages over the caller's most recently active threads "
                                   "(1,000 by default: IM_API_UNREAD_SCAN_MAX).")
    conversations: int = Field(description="Threads with any unread message, over the same threads.")
    capped: bool = Field(default=False, description=(
        "The caller has more threads than were counted. A thread with a new message is always among "
        "the counted (it becomes the most recent), so a count misses unread only when more threads "
        "than that had activity since the caller last read them."))


# --- stream tickets -------------------------------------------------------------------------

class TicketRequest(Request):
    device_id: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", examples=["laptop-7f3a"])


class Ticket(Response):
    ticket: str
    url: str
    expires_at: datetime


class ErrorDetail(BaseModel):
    field: str | None = None
    code: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    errors: list[ErrorDetail] = []
    request_id: str | None = None
    details: dict | None = Field(default=None, description=(
        "Machine-readable facts of some errors, absent otherwise: `already_claimed` carries "
        "`claimed_by` {id, display_name}; `edit_window_passed` carries `edit_window_s` and `posted_at`."))


class Error(BaseModel):
    error: ErrorBody


def errors_doc(*statuses: int) -> dict[int | str, dict]:
    """`responses=` for a route: the error shape under each status it may answer."""
    return {s: {"model": Error} for s in statuses}


# --- notifications --------------------------------------------------------------------------

DelaySeconds = Annotated[int, Field(ge=0, le=24 * 3600)]


class NotificationSettingsBody(Request):
    """The tenant's whole notification settings (PUT replaces them; a missing `webhook_secret`
    keeps the stored one, `null` removes it)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "webhook_url": "https://helpdesk.example.com/hooks/im", "webhook_secret": "a-long-random-secret-value",
        "email_enabled": True, "delay_s": 60, "assistance_delay_s": 0, "digest_window_s": 900,
        "include_bodies": False}]})
    webhook_url: str | None = Field(default=None, max_length=2048,
                                    description="https; public addresses only unless the operator allows a network.")
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=256,
                                       description="HMAC-SHA256 key of `X-IM-Signature`. Write-only.")
    email_enabled: bool = False
    delay_s: DelaySeconds = Field(default=60, description="How long a message stays unread by an away or "
                                                          "offline agent before they are notified.")
    assistance_delay_s: DelaySeconds = Field(default=60, description="The same for assistance requests (0: at once).")
    digest_window_s: int = Field(default=900, ge=60, le=24 * 3600, description="At most one email per agent "
                                                                               "in this window.")
    include_bodies: bool = Field(default=False, description="False: notifications carry metadata only.")


class NotificationSettings(Response):
    tenant_id: str
    webhook_url: str | None
    webhook_secret_set: bool = Field(description="The secret itself is never returned.")
    email_enabled: bool
    delay_s: int
    assistance_delay_s: int
    digest_window_s: int
    include_bodies: bool
    updated_at: datetime | None = None
    updated_by: str | None = None


class DoNotDisturbBody(Request):
    do_not_disturb: bool


class NotificationPreferences(Response):
    do_not_disturb: bool
    muted_conversation_ids: list[str]
    message_previews: bool = Field(description="The tenant lets notifications show message text (its "
                                               "include_bodies); a console shows only who wrote when it is false.")


# --- teams ----------------------------------------------------------------------------------

TeamName = Annotated[str, Field(min_length=1, max_length=200, examples=["Tier 2"],
                                description="1 to 100 characters after trimming; unique in the tenant, whatever the case.")]
ClaimTimeout = Annotated[int, Field(ge=1, le=7 * 24 * 3600, description=(
    "Seconds an unclaimed request waits before it is offered to every member, offline ones too."))]


class TeamCreate(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "Tier 2", "member_ids": ["bob", "carol"], "claim_timeout_s": 300}]})
    name: TeamName
    member_ids: list[AgentId] = Field(default_factory=list, max_length=1000)
    claim_timeout_s: ClaimTimeout | None = Field(default=None, description="null: the tenant's.")


class TeamUpdate(Request):
    """Rename it and/or change its claim timeout (fields left out stay as they are)."""

    name: TeamName | None = None
    claim_timeout_s: ClaimTimeout | None = None


class TeamMember(Response):
    id: str
    display_name: str
    status: Literal["online", "away", "offline"]


class Team(Response):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "name": "Tier 2", "member_count": 3, "online_count": 1,
        "away_count": 1, "is_member": False, "claim_timeout_s": None, "created_at": "2026-11-25T21:00:00.000Z",
        "updated_at": "2026-11-25T21:00:00.000Z"}]})
    id: str
    name: str
    member_count: int
    online_count: int = Field(description="Members online now: who an offer reaches at once.")
    away_count: int
    is_member: bool = Field(description="The caller is a member.")
    claim_timeout_s: int | None = Field(description="null: the tenant's (GET /v1/admin/team-settings).")
    created_at: datetime
    updated_at: datetime
    members: list[TeamMember] | None = Field(default=None, description="In GET /v1/teams/{team_id} and admin answers.")


class TeamPage(Response):
    items: list[Team]


class TeamSettingsBody(Request):
    offer_offline_when_none_online: bool = Field(default=True, description=(
        "A team request none of whose members is online or away goes to the offline ones at once "
        "(false: to nobody until it escalates)."))
    claim_timeout_s: ClaimTimeout = 300


class TeamSettings(Response):
    offer_offline_when_none_online: bool
    claim_timeout_s: int
    updated_at: datetime | None = None
    updated_by: str | None = None


# --- a message's life: edit, delete, settings, audit ----------------------------------------

REASON_MAX_CHARS = 500


class MessageEdit(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"body": "On it (ticket 123)."}]})
    body: Body


class MessageRedaction(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"reason": "customer card number pasted by mistake (ticket 4521)"}]})
    reason: str = Field(min_length=1, max_length=REASON_MAX_CHARS, pattern=r"\S", description=(
        "Why the message is redacted: kept in the audit log (so never the redacted text itself)."))


class ErasureRequest(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"messages": "keep", "reason": "former employee's request (HR-2291)"}]})
    messages: Literal["keep", "redact"] = Field(description=(
        "keep: their messages stay, shown as from \"Erased agent\"; redact: every message they "
        "posted is redacted too (the tenant's choice)."))
    reason: str = Field(min_length=1, max_length=REASON_MAX_CHARS, pattern=r"\S",
                        description="Why: kept in the audit log.")


class ErasureCounts(Response):
    messages_redacted: int = 0
    lines_rewritten: int = Field(default=0, description="System lines that named them, reworded.")
    records_rewritten: int = Field(default=0, description="Outbox records that named them, rewritten.")


class Erasure(Response):
    agent_id: str
    messages: Literal["keep", "redact"]
    status: Literal["running", "done"] = Field(description=(
        "running: the directory entry is erased; their messages and threads are being worked through."))
    requested_by: str
    started_at: datetime
    finished_at: datetime | None = None
    counts: ErasureCounts


class MessageVersion(Response):
    version: int = Field(description="1 is the body as first posted.")
    body: str
    replaced_at: datetime = Field(description="When this body was replaced (edited) or the message deleted.")
    replaced_by: str
    redacted_at: datetime | None = Field(default=None, description="Set when a redaction emptied this body.")


class MessageVersions(Response):
    message: Message
    versions: list[MessageVersion] = Field(description="Earlier bodies, oldest first.")


class MessageSettingsBody(Request):
    """The settings to change; a setting left out keeps its value."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"retention_days": 365}, {"edit_window_s": 600, "retention_days": 90}]})
    edit_window_s: int | None = Field(default=None, ge=0, le=7 * 24 * 3600, description=(
        "How long after posting its author may edit or delete a message (0: never). Admins delete any time. "
        "Not null: leave it out to keep the current window."))
    retention_days: int | None = Field(default=None, ge=RETENTION_DAYS_MIN, le=RETENTION_DAYS_MAX, description=(
        "Messages older than this many days are deleted, with their earlier versions, the thread's preview of "
        "them and every copy the services keep (queued frames, notification previews): im-api within "
        "seconds of passing it, delivery and the notifier at their next retention look (hourly by default). "
        "null: kept for ever (the default)."))

    @field_validator("edit_window_s")
    @classmethod
    def _a_window_is_a_number(cls, value: int | None) -> int:
        if value is None:  # only when given: a left-out field is not validated
            raise ValueError("a number of seconds (leave it out to keep the current window)")
        return value


class MessageSettings(Response):
    edit_window_s: int
    retention_days: int | None = Field(default=None, description="Days messages are kept; null: for ever.")
    updated_at: datetime | None = None
    updated_by: str | None = None


class AuditRecord(Response):
    id: str
    at: datetime
    actor: str
    role: str
    action: str = Field(description="message.edit, message.delete, message.redact, message.versions.read, "
                                    "export.conversation, agent.erase, settings.change, retention.delete (actor "
                                    "`system:retention`), ...")
    target: dict = Field(description="What it acted on: {type, conversation_id, seq, ...}.")
    request_id: str | None = None
    details: dict = Field(default_factory=dict)


class AuditPage(Response):
    items: list[AuditRecord]
    next_cursor: str | None = None
