"""Delivery's Kafka: the batch consumer policy, the inbox/signal producers and signal partitioning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.partitioner import murmur2
from im_contracts import topics
from im_contracts.codec import RejectedRecord, decode_record, event_headers, header
from im_contracts.events import Event, LiveFrame, QueueAdvanced, QueueAppend
from im_contracts.frames import LiveBody, QueuedBody
from im_runtime.kafka import Subscription, is_transient
from im_runtime.logs import log, trace_id
from prometheus_client import Counter

from .settings import DeliverySettings

logger = logging.getLogger("im_delivery.bus")

Item = tuple[Event, ConsumerRecord]
BatchHandler = Callable[[list[Item]], Awaitable[None]]

TRACE_HEADER = "trace-id"  # brief-interfaces #5: the HTTP request id that follows a message
# When the domain event behind a queue append happened (epoch seconds): fan-out latency metric.
ORIGIN_HEADER = "origin-occurred-at"

DEAD_LETTERS = Counter("im_delivery_dead_letters_total", "Records this worker sent to the dead-letter topic",
                       ["group", "topic", "reason"])

# The records produced by the consuming task that runs now (each task its own list: see confirmed()).
_outgoing: ContextVar[list[asyncio.Future] | None] = ContextVar("delivery_outgoing", default=None)
_origin: ContextVar[float | None] = ContextVar("delivery_origin", default=None)


def signal_partition(gateway_id: str, partitions: int) -> int:
    """The partition the default producer partitioner picks for key `gateway_key(gateway_id)`."""
    return (murmur2(topics.gateway_key(gateway_id)) & 0x7FFFFFFF) % partitions


def record_trace(record: ConsumerRecord | None, event: Event) -> str:
    """The trace id a record carries (im-api's request id), else the event's own id."""
    value = header(record.headers, TRACE_HEADER) if record is not None and record.headers else None
    return value or event.event_id


def record_origin(record: ConsumerRecord | None) -> float | None:
    value = header(record.headers, ORIGIN_HEADER) if record is not None and record.headers else None
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


@contextlib.contextmanager
def event_scope(event: Event, record: ConsumerRecord | None = None) -> Iterator[None]:
    """Logs and the records produced for `event` carry its trace id and its occurred_at."""
    trace = trace_id.set(record_trace(record, event))
    origin = _origin.set(event.occurred_at.timestamp())
    try:
        yield
    finally:
        _origin.reset(origin)
        trace_id.reset(trace)


@dataclass
class BatchSubscription(Subscription):
    """`Subscription` (decode, dead-letter, pause with backoff, commit) whose handler gets a whole
    poll at once, so the queue writer allocates one cursor range per agent per batch.

    A transient failure pauses every partition of the batch at its first record (the handler is
    idempotent, so the records already handled are simply handled again); a bug in one record
    is narrowed down by handling the records one by one and dead-lettering the culprit.
    """

    handle_batch: BatchHandler | None = None
    # Per partition, the highest offset this process dead-lettered: a rewind (a transient failure
    # later in the same batch pauses the partition at the batch's first record) re-reads a bad
    # record, and it must not be dead-lettered twice. Only a crash between the dead letter and the
    # commit can still repeat one (at-least-once, inherent); a dead letter names its topic,
    # partition and offset, so a reader of im.dead-letters.v1 can drop such a repeat.
    _dead_lettered: dict[TopicPartition, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.handle_batch is not None

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
                await self._dead_letter_once(record, rejected)
        try:
            if items:
                await self._handle(items)
        except Exception as exc:  # noqa: BLE001 - transient only (see _handle)
            if not is_transient(exc):
                raise
            for tp, offset in first.items():
                self._pause(consumer, tp, offset, exc)
            self._record_lag(consumer, records, {})
            return
        for tp in next_offsets:
            self._backoff.reset(tp)
        self._record_lag(consumer, records, next_offsets)
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
        for item in items:
            try:
                await self.handle_batch([item])  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - transient: raised; anything else: this record's fault
                if is_transient(exc):
                    raise
                logger.exception("record failed; dead-lettering", extra={"fields": {"topic": item[1].topic}})
                await self._dead_letter_once(
                    item[1], RejectedRecord("processing_failed", f"{type(exc).__name__} in {self.name}"))

    async def _dead_letter_once(self, record: ConsumerRecord, rejected: RejectedRecord) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if record.offset <= self._dead_lettered.get(tp, -1):
            return  # re-read after a rewind: dead-lettered already by this process
        await self.dead_letters.publish(record, rejected)
        self._dead_lettered[tp] = record.offset


def count_dead_letters(group: str, prefix: str) -> Callable[[str, str], None]:
    """DeadLetters' metrics hook: topic names without the deployment's prefix."""

    def on_dead_letter(topic: str, reason: str) -> None:
        DEAD_LETTERS.labels(group, topic.removeprefix(prefix), reason).inc()

    return on_dead_letter


@dataclass
class DeliveryBus:
    """Produces the delivery-internal records: queue appends, queue signals and live frames.

    Records are sent without waiting for each acknowledgement; a consuming task wraps its batch in
    `confirmed()`, which waits for exactly the records that task produced before it commits. (One
    list shared by the fan-out consumer, the heartbeat consumer and the pruning job let one task's
    flush take another's futures, so a consumer could commit before its own sends were confirmed.)
    """

    producer: AIOKafkaProducer
    settings: DeliverySettings

    @contextlib.asynccontextmanager
    async def confirmed(self) -> AsyncIterator[None]:
        """Every record produced inside the scope (in this task and the tasks it starts) is
        acknowledged by Kafka when the scope exits normally."""
        futures: list[asyncio.Future] = []
        token = _outgoing.set(futures)
        try:
            yield
        except BaseException:
            for future in futures:  # the batch is retried: only keep their errors from being "never retrieved"
                future.add_done_callback(_retrieve)
            raise
        finally:
            _outgoing.reset(token)
        if futures:
            await asyncio.gather(*futures)

    async def _send(self, topic: topics.Topic, key: bytes, event: Event) -> None:
        # Awaiting send() only enqueues the record (in call order, so per-partition order holds);
        # the broker's acknowledgement is awaited by the task's confirmed() scope.
        extra = {}
        if trace_id.get():
            extra[TRACE_HEADER] = trace_id.get()
        if _origin.get() is not None:
            extra[ORIGIN_HEADER] = repr(_origin.get())
        name = topic.name(self.settings.topic_prefix)
        future = await self.producer.send(name, event.to_bytes(), key=key, headers=event_headers(event, **extra))
        pending = _outgoing.get()
        if pending is None:
            await future  # outside a scope: confirmed at once
        else:
            pending.append(future)

    async def append(self, tenant_id: str, agent_id: str, dedupe_key: str, frame: QueuedBody,
                     drop_question: bool = False) -> None:
        event = QueueAppend(tenant_id=tenant_id, agent_id=agent_id, dedupe_key=dedupe_key,
                            frame=frame.model_dump(mode="json"), drop_question=drop_question)
        await self._send(topics.INBOX, topics.agent_key(tenant_id, agent_id), event)

    async def advanced(self, tenant_id: str, gateway_id: str, agent_id: str, cursor: int) -> None:
        event = QueueAdvanced(tenant_id=tenant_id, gateway_id=gateway_id, agent_id=agent_id, cursor=cursor)
        await self._send(topics.DELIVERY_SIGNALS, topics.gateway_key(gateway_id), event)

    async def live(self, tenant_id: str, gateway_id: str, agent_id: str, frame: LiveBody) -> None:
        event = LiveFrame(tenant_id=tenant_id, gateway_id=gateway_id, agent_id=agent_id,
                          frame=frame.model_dump(mode="json"))
        await self._send(topics.DELIVERY_SIGNALS, topics.gateway_key(gateway_id), event)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
