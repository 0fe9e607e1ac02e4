"""Operator tools that speak Kafka: publish an assistance request, list dead letters."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from im_contracts.codec import RejectedRecord, decode_record, event_headers
from im_contracts.events import AssistanceRequested, DeadLetter
from im_contracts.models import Related
from im_contracts.topics import ASSISTANCE_REQUESTS, DEAD_LETTERS, related_key

from .text import printable
from .tokens import KAFKA_AUDIENCE, mint
from .topics import kafka_options


def assistance_request(tenant: str, requested_by: str, agent_ids: list[str], related: Related,
                       message: str, request_id: str | None = None,
                       team_ids: list[str] | None = None) -> AssistanceRequested:
    return AssistanceRequested(
        tenant_id=tenant,
        request_id=request_id or uuid.uuid4().hex,
        requested_by=requested_by,
        agent_ids=agent_ids,
        team_ids=team_ids or [],
        related=related,
        message=message,
    )


async def publish_assistance(bootstrap: str, prefix: str, secret: str, request: AssistanceRequested,
                             idempotence: bool = True) -> tuple[int, int]:
    """Publishes with the service JWT header the consumer requires; returns (partition, offset)."""
    token = mint(secret, request.tenant_id, "imctl", role="service", ttl_s=300, audience=KAFKA_AUDIENCE)
    producer = AIOKafkaProducer(**kafka_options(bootstrap), acks="all", enable_idempotence=idempotence)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            ASSISTANCE_REQUESTS.name(prefix),
            request.to_bytes(),
            key=related_key(request.tenant_id, request.related.type, request.related.id),
            headers=event_headers(request, authorization=f"Bearer {token}"),
        )
        return meta.partition, meta.offset
    finally:
        await producer.stop()


async def read_dead_letters(bootstrap: str, prefix: str, follow: bool = False,
                            on_letter: Callable[[DeadLetter | None, bytes], None] = lambda d, raw: None,
                            idle_timeout_s: float = 1.0) -> int:
    """Reads the dead-letter topic from the beginning (to its end, or forever with `follow`)."""
    topic = DEAD_LETTERS.name(prefix)
    partitions = await topic_partitions(bootstrap, topic)
    if not partitions:
        return 0
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    count = 0
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout_s * 1000))
            for records in batch.values():
                for record in records:
                    count += 1
                    try:
                        letter = decode_record(DEAD_LETTERS, record.value)
                    except RejectedRecord:
                        letter = None
                    on_letter(letter, record.value or b"")  # type: ignore[arg-type]
            if not follow and await _caught_up(consumer, end):
                return count
    finally:
        await consumer.stop()


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        described = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described[0]["partitions"])
    finally:
        await admin.close()


async def _caught_up(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


def describe_letter(letter: DeadLetter) -> str:
    size = letter.original_value_size
    if size is None:  # a letter written before sizes were recorded
        size = len(base64.b64decode(letter.original_value_b64)) if letter.original_value_b64 else 0
    return (f"{letter.occurred_at:%Y-%m-%dT%H:%M:%SZ} {printable(letter.reason):<28} "
            f"{printable(letter.original_topic)}[{letter.original_partition}]@{letter.original_offset} "
            f"tenant={printable(letter.tenant_id or '')} consumer={printable(letter.consumer)} bytes={size} "
            f"{printable(letter.detail or '')}")


def run(coro):
    return asyncio.run(coro)
