"""Entry point for im.connections.v1: one consumer group, so each process owns its partitions' agents."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from im_contracts.codec import RejectedRecord
from im_contracts.events import Event
from im_contracts.topics import CONNECTIONS, agent_key
from im_runtime.kafka import DeadLetters, Subscription
from prometheus_client import Counter

from ..service import PresenceService
from ..settings import PresenceSettings

CONNECTION_EVENTS = Counter("im_presence_connection_events_total", "Connection events applied", ["type"])


def key_matches_agent(record: ConsumerRecord, event: Event) -> None:
    """The key decides which process owns the agent: a record keyed otherwise would split its state."""
    expected = agent_key(event.tenant_id, event.agent_id)  # type: ignore[attr-defined]
    if record.key != expected:
        raise RejectedRecord("invalid_event", "the record key is not the event's tenant:agent", event.tenant_id)


def connection_subscription(
    service: PresenceService, dead_letters: DeadLetters, settings: PresenceSettings
) -> Subscription:
    async def on_connection_event(event: Event, record: ConsumerRecord) -> None:
        await service.on_connection_event(event, record.partition, record.offset)  # type: ignore[arg-type]
        CONNECTION_EVENTS.labels(event.type).inc()

    return Subscription(
        name="presence-connections",
        topics=[CONNECTIONS],
        # The topic prefix namespaces the group too (empty in production: "im-presence").
        group_id=f"{settings.topic_prefix}{settings.consumer_group}",
        handle=on_connection_event,
        dead_letters=dead_letters,
        settings=settings,
        max_records=settings.max_batch,
        precheck=key_matches_agent,
    )
