"""Kafka output of presence: `AgentPresence` keyed tenant:agent on the compacted im.presence.v1.

Published only when something a user can see changed: the status, or `last_seen_at` on going
offline. A change in the number of connections alone is not published (no client shows it);
`connections` carries the count at the moment of the visible change.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from im_contracts.codec import event_headers
from im_contracts.events import AgentPresence, utcnow
from im_contracts.topics import PRESENCE, agent_key
from prometheus_client import Counter

from .settings import PresenceSettings
from .store import AgentRecord

PUBLISHED = Counter("im_presence_published_total", "AgentPresence records published", ["status"])


def presence_event(record: AgentRecord) -> AgentPresence:
    """The record's visible presence; a republish after a crash carries the same event id."""
    state = record.state
    shown = state.shown()
    return AgentPresence(
        event_id=record.presence_event_id,
        tenant_id=state.tenant_id,
        occurred_at=record.changed_at or utcnow(),
        agent_id=state.agent_id,
        status=shown.status,
        last_seen_at=shown.last_seen_at,
        connections=len(state.connections),
    )


class PresencePublisher:
    def __init__(self, producer: AIOKafkaProducer, settings: PresenceSettings) -> None:
        self.producer = producer
        self.topic = PRESENCE.name(settings.topic_prefix)

    async def publish(self, record: AgentRecord) -> None:
        event = presence_event(record)
        await self.producer.send_and_wait(
            self.topic,
            event.to_bytes(),
            key=agent_key(event.tenant_id, event.agent_id),
            headers=event_headers(event),
        )
        PUBLISHED.labels(event.status).inc()
