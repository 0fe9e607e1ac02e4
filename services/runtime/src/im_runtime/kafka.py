"""Kafka for every service: the producer, the dead-letter publisher, and the one consumer policy.

The consumer policy (`Subscription`) is the shared place for what every consumer must do:
decode with the contract, dead-letter what can never be processed (with the reason) and move on,
and on a transient failure (MongoDB or Kafka down) rewind and *pause that partition* with
exponential backoff while the consumer keeps polling — so it never falls out of its group.
Offsets are committed after processing (at-least-once; handlers are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.helpers import create_ssl_context
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from im_contracts.codec import RejectedRecord, dead_letter_for, decode_record
from im_contracts.events import Event
from im_contracts.topics import DEAD_LETTERS, Topic
from prometheus_client import Gauge
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from .logs import log, trace_id
from .settings import CommonSettings

logger = logging.getLogger("im_runtime.kafka")

# Every consumer group of every service: records behind the partition's end after each batch.
CONSUMER_LAG = Gauge("im_consumer_lag_records", "Records between a consumer group's position and the log end",
                     ["group", "topic", "partition"])

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    AutoReconnect,
    ConnectionFailure,
    ServerSelectionTimeoutError,
    NetworkTimeout,
    NotPrimaryError,
    ExecutionTimeout,
    WTimeoutError,
    KafkaError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


class TransientError(Exception):
    """Raise from a handler to say: not now, retry this record later (it is not bad input)."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, *TRANSIENT_ERRORS))


def client_options(settings: CommonSettings) -> dict[str, Any]:
    """What every aiokafka client (producer, consumer, admin) of a service is given: the bootstrap
    servers and, when configured, TLS and the service's SASL credentials."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol
    if protocol != "PLAINTEXT":
        options["security_protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if protocol.startswith("SASL"):
        if not settings.kafka_username or settings.kafka_password is None:
            raise SystemExit(f"IM_KAFKA_SECURITY_PROTOCOL={protocol} needs IM_KAFKA_USERNAME and IM_KAFKA_PASSWORD")
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_username,
                       sasl_plain_password=settings.kafka_password.get_secret_value())
    return options


def fetch_options(settings: CommonSettings) -> dict[str, Any]:
    """What every consumer is given on top: an idle consumer wakes (its fetch routine, the broker
    for its fetch) about once per `kafka_fetch_wait_ms`, not aiokafka's 5 and 2 times a second."""
    return {"fetch_max_wait_ms": settings.kafka_fetch_wait_ms, "consumer_timeout_ms": settings.kafka_fetch_wait_ms}


def broker_security(settings: CommonSettings) -> BaseSecurity | None:
    """The same for a FastStream broker (its own classes for the same options)."""
    options = client_options(settings)
    protocol = settings.kafka_security_protocol
    ssl_context = options.get("ssl_context")
    if protocol.startswith("SASL"):
        kind = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512,
                "PLAIN": SASLPlaintext}[settings.kafka_sasl_mechanism]
        return kind(options["sasl_plain_username"], options["sasl_plain_password"],
                    ssl_context=ssl_context, use_ssl=protocol == "SASL_SSL")
    if protocol == "SSL":
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    return None


def make_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    """acks=all, idempotent on real Kafka (Tansu, the dev fallback, rejects idempotence)."""
    options: dict[str, Any] = {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "linger_ms": 1,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def start_with_retry(start: Callable[[], Awaitable[Any]], what: str, settings: CommonSettings) -> None:
    """Keep trying to connect at start-up: in a container stack the broker may come up later."""
    deadline = time.monotonic() + settings.connect_timeout_s
    delay = settings.retry_initial_s
    while True:
        try:
            await start()
            return
        except Exception as exc:  # noqa: BLE001 - anything here means "not reachable yet"
            if time.monotonic() > deadline:
                raise
            log(logger, logging.WARNING, "waiting for dependency", what=what, error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_max_s)


@dataclass
class DeadLetters:
    """Publishes rejected records to `im.dead-letters.v1` (original bytes, place and reason)."""

    producer: AIOKafkaProducer
    settings: CommonSettings
    consumer_name: str
    on_dead_letter: Callable[[str, str], None] | None = None  # (topic, reason) → metrics

    async def publish(self, record: ConsumerRecord, rejected: RejectedRecord) -> None:
        letter = dead_letter_for(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            reason=rejected.reason,
            detail=rejected.detail,
            consumer=self.consumer_name,
            tenant_id=rejected.tenant_id,
        )
        await self.producer.send_and_wait(
            DEAD_LETTERS.name(self.settings.topic_prefix), letter.to_bytes(), key=record.key
        )
        log(
            logger,
            logging.WARNING,
            "record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=rejected.reason,
            detail=rejected.detail,
            consumer=self.consumer_name,
        )
        if self.on_dead_letter:
            self.on_dead_letter(record.topic, rejected.reason)


Handler = Callable[[Event, ConsumerRecord], Awaitable[None]]


@dataclass
class _Backoff:
    initial: float
    maximum: float
    attempts: dict[TopicPartition, int] = field(default_factory=dict)

    def next_delay(self, tp: TopicPartition) -> float:
        n = self.attempts.get(tp, 0)
        self.attempts[tp] = n + 1
        return min(self.initial * (2**n), self.maximum)

    def reset(self, tp: TopicPartition) -> None:
        self.attempts.pop(tp, None)


async def _raw(msg: Any) -> None:
    # The subscription decodes records itself (to dead-letter what is malformed).
    return None


class GroupMembership(ConsumerRebalanceListener):
    """Readiness of a consumer group member: it has joined its group (a rebalance completed,
    possibly with no partitions — a process beyond the partition count is still healthy). Latched:
    a later rebalance (another process starting) must not take every member out of service."""

    def __init__(self) -> None:
        self.joined = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.joined = True


@dataclass
class Subscription:
    """One consumer group on some topics, with one handler per record."""

    name: str
    topics: Sequence[Topic]
    group_id: str
    handle: Handler
    dead_letters: DeadLetters
    settings: CommonSettings
    max_records: int = 500
    # Called before each record with its raw form: e.g. to check an authorization header.
    precheck: Callable[[ConsumerRecord, Event], None] | None = None
    # Topics whose records carry their sender's credentials: the tenant a record rejected before
    # the precheck passed is filed under — the verified sender's (None: the system tenant), never
    # the tenant the record merely claims.
    verified_tenant: Callable[[ConsumerRecord], str | None] | None = None
    on_processed: Callable[[str, float], None] | None = None  # (topic, seconds) → metrics
    # More options for `broker.subscriber` (session timeout, heartbeat, rebalance listener, ...).
    consumer_options: dict[str, Any] = field(default_factory=dict)
    membership: GroupMembership = field(default_factory=GroupMembership)
    _backoff: _Backoff = field(init=False)

    def __post_init__(self) -> None:
        self._backoff = _Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        self.consumer_options = {**self.consumer_options, "listener": self.membership}
        self._by_name = {t.name(self.settings.topic_prefix): t for t in self.topics}

    def register(self, broker: KafkaBroker):
        """Adds the subscriber to `broker` and returns it (its consumer's assignment is readiness)."""
        sub = broker.subscriber(
            *self._by_name,
            group_id=self.group_id,
            batch=True,
            max_records=self.max_records,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=_raw,
            **{**fetch_options(self.settings), **self.consumer_options},
        )

        @sub
        async def on_batch(msg: KafkaMessage) -> None:
            await self.process(msg.raw_message, msg.consumer)

        sub.get_msg = self._poll(sub)
        return sub

    def _poll(self, sub: Any) -> Callable[[Any], Awaitable[tuple[ConsumerRecord, ...]]]:
        """The subscriber's poll. FastStream's batch poll waits `batch_timeout_ms` for records and
        then, when none came, SLEEPS as long again: a record arriving meanwhile waits out the sleep
        on every consumer hop (100 ms put ~200 ms on an idle-time message over two hops), and a
        short timeout makes every idle consumer wake ~100 times a second (issue 19 measured ~0.05
        cores per idle service). aiokafka's `getmany` already returns as soon as a record arrives,
        so this poll waits in it alone: no added latency, one wake-up per `kafka_poll_wait_ms`."""
        wait_ms, max_records = self.settings.kafka_poll_wait_ms, self.max_records

        async def get_msg(consumer: Any) -> tuple[ConsumerRecord, ...]:
            batches = await consumer.getmany(timeout_ms=wait_ms, max_records=max_records)
            return tuple(record for records in batches.values() for record in records)

        return get_msg

    async def process(self, raw: Any, consumer: Any) -> None:
        records: tuple[ConsumerRecord, ...] = raw if isinstance(raw, tuple) else (raw,)
        next_offsets: dict[TopicPartition, int] = {}
        blocked: set[TopicPartition] = set()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp in blocked:
                continue
            started = time.perf_counter()
            try:
                await self._one(record)
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_transient(exc):
                    raise
                blocked.add(tp)
                self._pause(consumer, tp, record.offset, exc)
                continue
            self._backoff.reset(tp)
            next_offsets[tp] = record.offset + 1
            if self.on_processed:
                self.on_processed(record.topic, time.perf_counter() - started)
        self._record_lag(consumer, records, next_offsets)
        if next_offsets:
            try:
                await consumer.commit(next_offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # Partitions moved to another member: it re-reads from the last commit (idempotent).
                log(logger, logging.INFO, "commit skipped after rebalance", error=type(exc).__name__)

    def _record_lag(self, consumer: Any, records: Sequence[ConsumerRecord],
                    next_offsets: dict[TopicPartition, int]) -> None:
        """Lag = the partition's high watermark (from the last fetch) minus where this group is now."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        for tp, first_offset in first.items():
            end = consumer.highwater(tp)
            if end is not None:
                # A partition paused on a transient failure stays at its first unprocessed record.
                position = next_offsets.get(tp, first_offset)
                CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(max(0, end - position))

    async def _one(self, record: ConsumerRecord) -> None:
        topic = self._by_name[record.topic]
        checked = False
        try:
            event = decode_record(topic, record.value)
            token = trace_id.set(event.event_id)
            try:
                if self.precheck:
                    self.precheck(record, event)
                checked = True
                await self.handle(event, record)
            finally:
                trace_id.reset(token)
        except RejectedRecord as rejected:
            if not checked and self.verified_tenant is not None:
                rejected.tenant_id = self.verified_tenant(record)
            await self.dead_letters.publish(record, rejected)
        except Exception as exc:
            if is_transient(exc):
                raise
            # A bug or an unforeseen input: never block the partition; keep the record and reason.
            logger.exception("handler failed; dead-lettering", extra={"fields": {"topic": record.topic}})
            await self.dead_letters.publish(
                record, RejectedRecord("processing_failed", f"{type(exc).__name__} in {self.name}")
            )

    def _pause(self, consumer: Any, tp: TopicPartition, offset: int, exc: BaseException) -> None:
        delay = self._backoff.next_delay(tp)
        log(
            logger,
            logging.WARNING,
            "transient failure: partition paused",
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            retry_in_s=round(delay, 3),
            error=type(exc).__name__,
        )
        consumer.seek(tp, offset)
        consumer.pause(tp)

        def resume() -> None:
            if tp in consumer.assignment():
                consumer.resume(tp)

        asyncio.get_running_loop().call_later(delay, resume)
