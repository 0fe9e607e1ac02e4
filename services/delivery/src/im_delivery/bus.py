"""Delivery's Kafka: the batch consumer policy, the inbox/signal producers and signal partitioning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.partitioner import murmur2
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from im_contracts import topics
from im_contracts.codec import RejectedRecord, decode_record, event_headers
from im_contracts.events import Event, LiveFrame, QueueAdvanced, QueueAppend
from im_runtime.kafka import Subscription, is_transient
from im_runtime.logs import log, trace_id

from .settings import DeliverySettings

logger = logging.getLogger("im_delivery.bus")

Item = tuple[Event, ConsumerRecord]
BatchHandler = Callable[[list[Item]], Awaitable[None]]


def signal_partition(gateway_id: str, partitions: int) -> int:
    """The partition the default producer partitioner picks for key `gateway_key(gateway_id)`."""
    return (murmur2(topics.gateway_key(gateway_id)) & 0x7FFFFFFF) % partitions


@dataclass
class BatchSubscription(Subscription):
    """`Subscription` (decode, dead-letter, pause with backoff, commit) whose handler gets a whole
    poll at once, so the queue writer allocates one cursor range per agent per batch.

    A transient failure pauses every partition of the batch at its first record (the handler is
    idempotent, so the records already handled are simply handled again); a bug in one record
    is narrowed down by handling the records one by one and dead-lettering the culprit.
    """

    handle_batch: BatchHandler | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.handle_batch is not None

        async def one(event: Event, record: ConsumerRecord) -> None:
            await self.handle_batch([(event, record)])  # type: ignore[misc]

        self.handle = one

    def register(self, broker: KafkaBroker) -> None:
        sub = broker.subscriber(
            *self._by_name,
            group_id=self.group_id,
            batch=True,
            max_records=self.max_records,
            batch_timeout_ms=100,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            decoder=_raw,
        )

        @sub
        async def on_batch(msg: KafkaMessage) -> None:
            self.assigned = True
            await self.process(msg.raw_message, msg.consumer)

    async def process(self, raw: Any, consumer: Any) -> None:
        records: tuple[ConsumerRecord, ...] = raw if isinstance(raw, tuple) else (raw,)
        items: list[Item] = []
        first: dict[TopicPartition, int] = {}
        next_offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first.setdefault(tp, record.offset)
            next_offsets[tp] = record.offset + 1
            try:
                items.append((decode_record(self._by_name[record.topic], record.value), record))
            except RejectedRecord as rejected:
                await self.dead_letters.publish(record, rejected)
        try:
            if items:
                await self._handle(items)
        except Exception as exc:  # noqa: BLE001 - transient only (see _handle)
            if not is_transient(exc):
                raise
            for tp, offset in first.items():
                self._pause(consumer, tp, offset, exc)
            return
        for tp in next_offsets:
            self._backoff.reset(tp)
        try:
            await consumer.commit(next_offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log(logger, logging.INFO, "commit skipped after rebalance", error=type(exc).__name__)

    async def _handle(self, items: list[Item]) -> None:
        try:
            await self.handle_batch(items)  # type: ignore[misc]
            return
        except Exception as exc:  # noqa: BLE001
            if is_transient(exc):
                raise
            logger.exception("batch failed; retrying record by record", extra={"fields": {"records": len(items)}})
        for _event, record in items:
            await self._one(record)  # dead-letters a record that fails for good; raises transient


async def _raw(msg: Any) -> None:
    return None


@dataclass
class DeliveryBus:
    """Produces the delivery-internal records: queue appends, queue signals and live frames."""

    producer: AIOKafkaProducer
    settings: DeliverySettings
    pending: list[asyncio.Future] = field(default_factory=list)

    async def _send(self, topic: topics.Topic, key: bytes, event: Event) -> None:
        # Awaiting send() only enqueues the record (in call order, so per-partition order holds);
        # the broker's acknowledgement is awaited in flush(), once per batch.
        headers = event_headers(event, **({"trace-id": trace_id.get()} if trace_id.get() else {}))
        name = topic.name(self.settings.topic_prefix)
        self.pending.append(await self.producer.send(name, event.to_bytes(), key=key, headers=headers))

    async def append(self, tenant_id: str, agent_id: str, dedupe_key: str, frame: dict[str, Any]) -> None:
        event = QueueAppend(tenant_id=tenant_id, agent_id=agent_id, dedupe_key=dedupe_key, frame=frame)
        await self._send(topics.INBOX, topics.agent_key(tenant_id, agent_id), event)

    async def advanced(self, tenant_id: str, gateway_id: str, agent_id: str, cursor: int) -> None:
        event = QueueAdvanced(tenant_id=tenant_id, gateway_id=gateway_id, agent_id=agent_id, cursor=cursor)
        await self._send(topics.DELIVERY_SIGNALS, topics.gateway_key(gateway_id), event)

    async def live(self, tenant_id: str, gateway_id: str, agent_id: str, frame: dict[str, Any]) -> None:
        event = LiveFrame(tenant_id=tenant_id, gateway_id=gateway_id, agent_id=agent_id, frame=frame)
        await self._send(topics.DELIVERY_SIGNALS, topics.gateway_key(gateway_id), event)

    async def flush(self) -> None:
        """Waits until every record produced so far is acknowledged by Kafka (before a commit)."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        await asyncio.gather(*pending)
