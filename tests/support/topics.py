"""Reading a Kafka topic in a test, one way: a real consumer without a group, every partition from
the beginning, each record decoded with the contract exactly as the services decode it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from im_contracts.codec import decode_record
from im_contracts.events import Event
from im_contracts.topics import Topic

from .wait import eventually


@dataclass(frozen=True)
class Read:
    record: ConsumerRecord
    event: Event | None  # None: a tombstone

    @property
    def headers(self) -> dict[str, bytes]:
        return dict(self.record.headers)


def _consumer(topic: Topic, prefix: str, bootstrap: str | None, options: dict[str, Any] | None) -> AIOKafkaConsumer:
    """`options`: a service's client options (credentials, TLS) instead of a plain `bootstrap`."""
    return AIOKafkaConsumer(topic.name(prefix), **(options or {"bootstrap_servers": bootstrap}), group_id=None,
                            enable_auto_commit=False, auto_offset_reset="earliest")


def _decoded(topic: Topic, record: ConsumerRecord) -> Read:
    return Read(record, None if record.value is None else decode_record(topic, record.value))


async def read_topic(topic: Topic, prefix: str, *, bootstrap: str | None = None, options: dict[str, Any] | None = None,
                     count: int = 0, until: Callable[[list[Event | None]], bool] | None = None,
                     to_end: bool = False, timeout: float = 30.0, settle_s: float = 0.0) -> list[Read]:
    """Everything on `topic` from the beginning, in partition order, read until either the topic's
    end as it stands now (`to_end`), or at least `count` records arrived and `until(events)` holds
    — then `settle_s` more, to catch a duplicate. Fails the test when that takes over `timeout`."""
    consumer = _consumer(topic, prefix, bootstrap, options)
    name = topic.name(prefix)
    await consumer.start()
    try:
        # No group: subscribing assigns every partition, once the topic's metadata is in.
        tps = sorted(await eventually(consumer.assignment, timeout=10, message=f"{name} has no partitions"))
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps) if to_end else {}
        reads: list[Read] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while True:
            if to_end:
                if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    return reads
            elif len(reads) >= count and (until is None or until([r.event for r in reads])):
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    return reads
            assert time.monotonic() < deadline, \
                f"{name}: {len(reads)} records, condition not met; got {[r.event for r in reads]!r}"[:2000]
            for records in (await consumer.getmany(timeout_ms=200)).values():
                reads.extend(_decoded(topic, r) for r in records)
    finally:
        await consumer.stop()


async def read_events(topic: Topic, prefix: str, **options: Any) -> list[Event | None]:
    """`read_topic`'s events only."""
    return [r.event for r in await read_topic(topic, prefix, **options)]


class TopicTail:
    """Reads a topic from its start in the background, for as long as a test runs: `events` grows."""

    def __init__(self, bootstrap: str, prefix: str, topic: Topic) -> None:
        self.topic = topic
        self.consumer = _consumer(topic, prefix, bootstrap, None)
        self.events: list[Event | None] = []
        self._task: asyncio.Task | None = None

    async def start(self) -> TopicTail:
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for record in self.consumer:
            self.events.append(_decoded(self.topic, record).event)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()
