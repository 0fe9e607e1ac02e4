"""The local presence cache: reads the compacted im.presence.v1 from the beginning on every
partition (no consumer group) into (tenant, agent) -> status, ready once caught up."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Set
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from im_contracts.codec import RejectedRecord, decode_record
from im_contracts.topics import PRESENCE
from im_runtime.logs import log
from im_runtime.kafka import client_options

from .settings import ApiSettings

logger = logging.getLogger("im_api.presence")


class PresenceCache:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.topic = PRESENCE.name(settings.topic_prefix)
        self._status: dict[tuple[str, str], tuple[str, datetime | None]] = {}
        self._by_status: dict[tuple[str, str], set[str]] = defaultdict(set)  # (tenant, status) -> agents
        self._targets: dict[TopicPartition, int] | None = None  # end offsets seen at start
        self._caught_up = False

    # --- reads (the agent picker) ---------------------------------------------------------

    def get(self, tenant_id: str, agent_id: str) -> tuple[str, datetime | None]:
        return self._status.get((tenant_id, agent_id), ("offline", None))

    def members(self, tenant_id: str, status: str) -> Set[str]:
        """The live set, not a copy: a caller that holds it across an await copies it first."""
        return self._by_status.get((tenant_id, status)) or frozenset()

    async def ready(self) -> bool:
        return self._caught_up

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
        delay = self.settings.retry_initial_s
        while True:
            # No group: subscribing assigns every partition to this process (every im-api reads all).
            consumer = AIOKafkaConsumer(self.topic, **client_options(self.settings), group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        metadata_max_age_ms=int(self.settings.presence_metadata_refresh_s * 1000))
            try:
                await consumer.start()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka away: start over (the topic is compacted)
                log(logger, logging.WARNING, "presence consumer failed; restarting", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
            finally:
                try:
                    await asyncio.wait_for(consumer.stop(), 5)
                except Exception:  # noqa: BLE001
                    pass

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        tps = consumer.assignment()
        while not tps:  # the topic does not exist yet: the metadata refresh will find it
            await asyncio.sleep(self.settings.retry_initial_s)
            tps = consumer.assignment()
        tps = sorted(tps)
        await consumer.seek_to_beginning(*tps)
        if self._targets is None:
            self._targets = await consumer.end_offsets(tps)
        await self._check(consumer)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                for record in records:
                    self._record(record)
            await self._check(consumer)

    def _record(self, record) -> None:
        if record.value is None:  # a tombstone: the agent's presence was forgotten
            try:
                tenant_id, agent_id = record.key.decode().split(":", 1)
                self.apply(tenant_id, agent_id, None, None)
            except (AttributeError, ValueError):
                pass
            return
        try:
            event = decode_record(PRESENCE, record.value)
        except RejectedRecord as rejected:
            # Not ours to dead-letter (the presence service owns the topic); skip and say why.
            log(logger, logging.WARNING, "presence record skipped", reason=rejected.reason,
                partition=record.partition, offset=record.offset)
            return
        self.apply(event.tenant_id, event.agent_id, event.status, event.last_seen_at)

    async def _check(self, consumer: AIOKafkaConsumer) -> None:
        if self._caught_up or self._targets is None:
            return
        for tp, end in self._targets.items():
            if await consumer.position(tp) < end:
                return
        self._caught_up = True
        log(logger, logging.INFO, "presence cache caught up", agents=len(self._status))
