"""Every Kafka topic: its name, key rule, default partitions, retention, and the events on it.

Services never spell a topic name: they take a `Topic` from here and call `.name(prefix)`
(the prefix is empty in production; tests give every run its own topics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import (
    AgentChanged,
    AgentPresence,
    AssistanceRequested,
    ConnectionActive,
    ConnectionClosed,
    ConnectionIdle,
    ConnectionOpened,
    ConversationStarted,
    DeadLetter,
    Event,
    GatewayHeartbeat,
    LiveFrame,
    MessageChanged,
    MessagePosted,
    ParticipantsChanged,
    QueueAdvanced,
    QueueAppend,
    ReadMarkerMoved,
    TeamRequestChanged,
    Typing,
)


@dataclass(frozen=True)
class Topic:
    base_name: str
    key_rule: str
    events: tuple[type[Event], ...]
    partitions: int = 12
    compacted: bool = False
    retention_ms: int | None = None
    description: str = ""
    internal: bool = False
    config: dict[str, str] = field(default_factory=dict)
    # Its records carry message bodies (or a question, or a queued frame): a redaction cannot reach
    # them, so their retention is the deployment's `IM_BODY_TOPICS_RETENTION_HOURS`.
    carries_bodies: bool = False

    def name(self, prefix: str = "") -> str:
        return f"{prefix}{self.base_name}"

    def topic_config(self, body_retention_ms: int | None = None) -> dict[str, str]:
        """The broker-side config `imctl topics create` applies; `body_retention_ms`: the
        deployment's retention of the topics that carry message bodies."""
        cfg = dict(self.config)
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        elif self.carries_bodies and body_retention_ms is not None:
            cfg["retention.ms"] = str(body_retention_ms)
        return cfg

    def event_types(self) -> dict[str, type[Event]]:
        return {e.model_fields["type"].default: e for e in self.events}


# --- key rules ------------------------------------------------------------------------------


def conversation_key(conversation_id: str) -> bytes:
    """One conversation → one partition → in order."""
    return conversation_id.encode()


def agent_key(tenant_id: str, agent_id: str) -> bytes:
    """One agent → one partition → one writer of its state (presence, delivery queue)."""
    return f"{tenant_id}:{agent_id}".encode()


def gateway_key(gateway_id: str) -> bytes:
    return gateway_id.encode()


def related_key(tenant_id: str, related_type: str, related_id: str) -> bytes:
    """Recommended for assistance requests; consumers never rely on it."""
    return f"{tenant_id}:{related_type}:{related_id}".encode()


# --- the topics -----------------------------------------------------------------------------

MESSAGES = Topic(
    "im.messages.v1",
    key_rule="conversation id",
    events=(MessagePosted, MessageChanged),
    description="Every message posted, in seq order per conversation, and every edit or deletion of one.",
    carries_bodies=True,
)
CONVERSATIONS = Topic(
    "im.conversations.v1",
    key_rule="conversation id",
    events=(ConversationStarted, ParticipantsChanged, ReadMarkerMoved, TeamRequestChanged),
    description="Thread lifecycle, read markers and team requests (offered, claimed, released).",
    carries_bodies=True,
)
AGENTS = Topic(
    "im.agents.v1",
    key_rule="tenant:agent",
    events=(AgentChanged,),
    compacted=True,
    description="The agents directory as events: upserts and deactivations (compacted).",
)
CONNECTIONS = Topic(
    "im.connections.v1",
    key_rule="tenant:agent",
    events=(ConnectionOpened, ConnectionClosed, ConnectionIdle, ConnectionActive),
    description="WebSocket connections opened/closed/idle/active, from delivery gateways.",
)
GATEWAYS = Topic(
    "im.gateways.v1",
    key_rule="gateway id",
    events=(GatewayHeartbeat,),
    partitions=1,
    retention_ms=60 * 60 * 1000,
    description="Gateway heartbeats with boot epoch; read by every presence process.",
)
PRESENCE = Topic(
    "im.presence.v1",
    key_rule="tenant:agent",
    events=(AgentPresence,),
    compacted=True,
    description="The latest presence of every agent (compacted).",
)
TYPING = Topic(
    "im.typing.v1",
    key_rule="conversation id",
    events=(Typing,),
    retention_ms=10 * 60 * 1000,
    description="Typing indicators; short retention.",
)
ASSISTANCE_REQUESTS = Topic(
    "helpdesk.assistance-requests.v1",
    key_rule="tenant:type:id of the related item (recommended; never relied on)",
    events=(AssistanceRequested,),
    description="From ticketing / live-chat services: open or reuse the related thread and post.",
    carries_bodies=True,
)
DEAD_LETTERS = Topic(
    "im.dead-letters.v1",
    key_rule="original key",
    events=(DeadLetter,),
    partitions=3,
    description="Records a consumer rejected, with the reason.",
    carries_bodies=True,
)
INBOX = Topic(
    "im.inbox.v1",
    key_rule="tenant:agent",
    events=(QueueAppend,),
    internal=True,
    description="Delivery-internal: fan-out worker → the single writer of each agent's queue.",
    carries_bodies=True,
)
DELIVERY_SIGNALS = Topic(
    "im.delivery-signals.v1",
    key_rule="gateway id",
    events=(QueueAdvanced, LiveFrame),
    retention_ms=60 * 60 * 1000,
    internal=True,
    description="Delivery-internal: 'new entries for agent X' and live frames, to one gateway.",
)

ALL_TOPICS: tuple[Topic, ...] = (
    MESSAGES,
    CONVERSATIONS,
    AGENTS,
    CONNECTIONS,
    GATEWAYS,
    PRESENCE,
    TYPING,
    ASSISTANCE_REQUESTS,
    DEAD_LETTERS,
    INBOX,
    DELIVERY_SIGNALS,
)
