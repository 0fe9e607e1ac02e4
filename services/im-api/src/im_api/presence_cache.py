"""The local presence cache: reads the compacted im.presence.v1 from the beginning on every
partition (no consumer group) into (tenant, agent) -> status, ready once caught up."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Set
from datetime import datetime

from aiokafka import ConsumerRecord
from im_contracts.events import AgentPresence, Event
from im_contracts.topics import PRESENCE
from im_runtime.reader import TopicReader

from .settings import ApiSettings


class PresenceCache:
    def __init__(self, settings: ApiSettings) -> None:
        self._status: dict[tuple[str, str], tuple[str, datetime | None]] = {}
        self._by_status: dict[tuple[str, str], set[str]] = defaultdict(set)  # (tenant, status) -> agents
        # Not ours to dead-letter what the contract refuses: the presence service owns the topic.
        self._reader = TopicReader(settings, PRESENCE, self._record, start_at="beginning",
                                   metadata_max_age_ms=int(settings.presence_metadata_refresh_s * 1000))

    # --- reads (the agent picker) ---------------------------------------------------------

    def get(self, tenant_id: str, agent_id: str) -> tuple[str, datetime | None]:
        return self._status.get((tenant_id, agent_id), ("offline", None))

    def members(self, tenant_id: str, status: str) -> Set[str]:
        """The live set, not a copy: a caller that holds it across an await copies it first."""
        return self._by_status.get((tenant_id, status)) or frozenset()

    async def ready(self) -> bool:
        """Served from only once the whole table, as it was at start, has been read."""
        return self._reader.caught_up

    # --- the consumer ---------------------------------------------------------------------

    def apply(self, tenant_id: str, agent_id: str, status: str | None, seen: datetime | None) -> None:
        key = (tenant_id, agent_id)
        old = self._status.pop(key, None)
        if old is not None:
            self._by_status[(tenant_id, old[0])].discard(agent_id)
        if status is not None and status != "offline":
            self._by_status[(tenant_id, status)].add(agent_id)
        if status is not None:
            self._status[key] = (status, seen)

    async def run(self) -> None:
        """The reader, until cancelled (the process skeleton restarts it after a failure; each
        start reads the compacted topic from the beginning again)."""
        await self._reader.run()

    def _record(self, event: Event | None, record: ConsumerRecord) -> None:
        if event is None:  # a tombstone: the agent's presence was forgotten
            try:
                tenant_id, agent_id = record.key.decode().split(":", 1)
                self.apply(tenant_id, agent_id, None, None)
            except (AttributeError, ValueError):
                pass
            return
        assert isinstance(event, AgentPresence)
        self.apply(event.tenant_id, event.agent_id, event.status, event.last_seen_at)
