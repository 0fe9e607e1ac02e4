"""The WebSocket frames of `GET /v1/stream` (API.md), server → client and client → server.

The gateway and the worker build these frames; clients (clients/js) get their TypeScript types
generated from the JSON Schema exported here (`make contracts`), so a change on either side that
is not made on both fails a test. Queued frames carry a `cursor` (increasing per agent); live
frames carry none and are never replayed.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .models import ConversationSnapshot, Message, Participant, PresenceStatus, TeamRequest, UtcTime

# Clients ignore fields they do not know (API.md: add fields freely, never rename or drop); a
# field with a default is still always sent, so the schema marks it required (the `type` of
# every frame above all: clients switch on it).
FRAME_CONFIG = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)


class Frame(BaseModel):
    model_config = FRAME_CONFIG


class Conversation(ConversationSnapshot):
    """A conversation as one reader sees it: the shared snapshot plus that reader's read state."""

    model_config = FRAME_CONFIG

    participants: list[Participant] | None = Field(default=None, description=(
        "The thread's agents when they are new or changed (the thread started, someone was added "
        "or left); null on the update a message causes: they are what the last update that listed "
        "them said (or GET /v1/conversations/{id}). Listing them on every message made each "
        "message cost the square of the thread's size."))

    last_read_seq: int = Field(default=0, description="The reader's read marker (seq).")
    unread_count: int = Field(default=0, description="last_seq − last_read_seq.")


Cursor = Annotated[int, Field(ge=1, description="The frame's position in the agent's queue (opaque, increasing).")]


# --- server → client: queued (carry a cursor, replayed on resume) -------------------------------
# The fan-out queues each frame's body (`...Body`); the gateway adds the cursor the queue gave it
# when it sends the frame.

class MessageCreatedBody(Frame):
    type: Literal["message.created"] = "message.created"
    message: Message


class ConversationUpdatedBody(Frame):
    type: Literal["conversation.updated"] = "conversation.updated"
    conversation: Conversation


class ReadUpdatedBody(Frame):
    type: Literal["read.updated"] = "read.updated"
    conversation_id: str
    agent_id: str = Field(description="Whose read marker moved.")
    seq: int = Field(ge=0)


class MessageUpdatedBody(Frame):
    """A message was edited (`edited_at`, its new body), deleted (`deleted_at`, no body), redacted
    by an admin (`redacted_at` too), or a system line reworded (an erased agent's name gone): the
    reader replaces the one it has of that seq. Earlier frames of the message still queued are
    rewritten too, so a replay never shows a deleted body."""

    type: Literal["message.updated"] = "message.updated"
    message: Message


class TeamRequestOfferedBody(Frame):
    """A team request is open to the reader (asked of one of its teams, escalated to it, or
    released back): shown with a Claim button. Participants get it too, to follow the request."""

    type: Literal["team_request.offered"] = "team_request.offered"
    request: TeamRequest


class TeamRequestClaimedBody(Frame):
    """Someone took the request (`request.claimed_by`): the others stop offering it."""

    type: Literal["team_request.claimed"] = "team_request.claimed"
    request: TeamRequest


class TeamRequestReleasedBody(Frame):
    """The request went back to its teams, open again to `request.offered_to`."""

    type: Literal["team_request.released"] = "team_request.released"
    request: TeamRequest


QueuedBody = (MessageCreatedBody | MessageUpdatedBody | ConversationUpdatedBody | ReadUpdatedBody
              | TeamRequestOfferedBody | TeamRequestClaimedBody | TeamRequestReleasedBody)


class MessageCreated(MessageCreatedBody):
    cursor: Cursor


class MessageUpdated(MessageUpdatedBody):
    cursor: Cursor


class TeamRequestOffered(TeamRequestOfferedBody):
    cursor: Cursor


class TeamRequestClaimed(TeamRequestClaimedBody):
    cursor: Cursor


class TeamRequestReleased(TeamRequestReleasedBody):
    cursor: Cursor


class ConversationUpdated(ConversationUpdatedBody):
    cursor: Cursor


class ReadUpdated(ReadUpdatedBody):
    cursor: Cursor


QueuedFrame = Annotated[MessageCreated | MessageUpdated | ConversationUpdated | ReadUpdated | TeamRequestOffered
                        | TeamRequestClaimed | TeamRequestReleased, Field(discriminator="type")]


class Batch(Frame):
    """Several queued frames in one WebSocket message (replay), in cursor order."""

    type: Literal["batch"] = "batch"
    frames: list[QueuedFrame]


# --- server → client: live only (no cursor, never replayed) ------------------------------------

class PresenceChanged(Frame):
    type: Literal["presence.changed"] = "presence.changed"
    agent_id: str
    status: PresenceStatus
    last_seen_at: UtcTime | None = None


class TypingStarted(Frame):
    """Another participant is typing in the conversation (live; shown for a few seconds)."""

    type: Literal["typing"] = "typing"
    conversation_id: str
    agent_id: str


class AuthRevoked(Frame):
    """Never sent to a client: tells the gateways holding the agent's sockets that the agent was
    deactivated, and they close them with 4401 at once."""

    type: Literal["auth.revoked"] = "auth.revoked"


# What the fan-out sends the gateways as a live frame (im.delivery-signals.v1, `LiveFrame`).
LiveBody = PresenceChanged | TypingStarted | AuthRevoked

ServerFrame = Annotated[MessageCreated | MessageUpdated | ConversationUpdated | ReadUpdated | TeamRequestOffered
                        | TeamRequestClaimed | TeamRequestReleased | Batch | PresenceChanged | TypingStarted,
                        Field(discriminator="type")]


# --- client → server -------------------------------------------------------------------------

class Ack(Frame):
    """Everything up to `cursor` is processed on this device (acks only move forward)."""

    type: Literal["ack"] = "ack"
    cursor: int = Field(ge=0)


class Typing(Frame):
    type: Literal["typing"] = "typing"
    conversation_id: str = Field(min_length=1)


class Idle(Frame):
    type: Literal["idle"] = "idle"


class Active(Frame):
    type: Literal["active"] = "active"


ClientFrame = Annotated[Ack | Typing | Idle | Active, Field(discriminator="type")]

SERVER_FRAMES: TypeAdapter = TypeAdapter(ServerFrame)
CLIENT_FRAMES: TypeAdapter = TypeAdapter(ClientFrame)

class CloseCode(IntEnum):
    """The WebSocket close codes of the stream (API.md); CLOSE_CODES says what a client does on each."""

    RESTART = 1012
    BAD_REQUEST = 4400
    AUTH = 4401
    ORIGIN = 4403
    NOT_RETAINED = 4409
    TOO_SLOW = 4429


CLOSE_CODES: dict[CloseCode, str] = {
    CloseCode.RESTART: "server restarting: reconnect with your cursor",
    CloseCode.BAD_REQUEST: "bad request: a query parameter or a client frame the stream cannot read (a frame must be"
                           " a JSON object with a string type); fix the client, do not retry as is",
    CloseCode.AUTH: "authentication: get a fresh token, then reconnect",
    CloseCode.ORIGIN: "origin not allowed: this page's origin is not in the gateway's allow-list (do not retry)",
    CloseCode.NOT_RETAINED: "cursor no longer retained: reload over HTTP, reconnect with its stream_cursor",
    CloseCode.TOO_SLOW: "too slow, too many frames, or too many sockets: reconnect with your cursor, after a pause",
}


def frames_schema() -> dict:
    """One JSON Schema document: `ServerFrame` and `ClientFrame` (unions), every frame in `$defs`."""
    server = SERVER_FRAMES.json_schema(mode="serialization", ref_template="#/$defs/{model}")
    client = CLIENT_FRAMES.json_schema(mode="serialization", ref_template="#/$defs/{model}")
    defs = {**server.pop("$defs", {}), **client.pop("$defs", {})}
    defs["ServerFrame"] = server
    defs["ClientFrame"] = client
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Helpdesk IM stream frames",
        "description": "GET /v1/stream: server → client frames (ServerFrame) and client → server frames (ClientFrame).",
        "x-close-codes": {str(int(k)): v for k, v in CLOSE_CODES.items()},
        "$defs": dict(sorted(defs.items())),
    }
