"""The one reader of a topic without a consumer group.

Some topics are read by *every* process of a service rather than shared out by a group: presence
hears every gateway heartbeat, im-api keeps the whole presence table, a gateway reads the signal
partition its id hashes to. None of them commits offsets: each starts from the beginning (a
compacted table) or from the end (only what happens from now on matters).

`run()` is the whole reader; it raises when Kafka fails under it, and the process skeleton's
`supervise` starts it again after a backoff. Readiness (`ready`) is true only while it is
reading. A reader that starts at the end misses what was sent while it was down: `on_restart`
is told when it is reading again, so its owner can catch up another way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from im_contracts.codec import RejectedRecord, decode_record
from im_contracts.events import Event
from im_contracts.topics import Topic

from .kafka import TransientError, client_options, fetch_options
from .logs import log
from .settings import CommonSettings
from .shutdown import raise_if_cancelled

logger = logging.getLogger("im_runtime.reader")

# (the decoded event, or None for a tombstone of a compacted topic; the record) → None or an awaitable
OnEvent = Callable[[Event | None, ConsumerRecord], Awaitable[None] | None]
OnRejected = Callable[[ConsumerRecord, RejectedRecord], Awaitable[None]]


class TopicReader:
    def __init__(
        self,
        settings: CommonSettings,
        topic: Topic,
        on_event: OnEvent,
        *,
        start_at: Literal["beginning", "end"],
        partitions: Callable[[int], Iterable[int]] | None = None,
        on_rejected: OnRejected | None = None,
        on_restart: Callable[[], None] | None = None,
        max_records: int = 1000,
        poll_timeout_ms: int | None = None,
        **consumer_options: Any,
    ) -> None:
        """`partitions`: which of the topic's N partitions to read (default: all of them).
        `on_rejected`: what to do with a record the contract refuses (default: log and skip —
        many processes read the same record, so dead-lettering it would multiply the letter)."""
        self.settings = settings
        self.topic = topic
        self.name = topic.name(settings.topic_prefix)
        self.on_event = on_event
        self.start_at = start_at
        self.partitions = partitions
        self.on_rejected = on_rejected
        self.on_restart = on_restart
        self.max_records = max_records
        # A poll returns as soon as a record arrives: the wait only bounds an idle reader's wake-ups.
        self.poll_timeout_ms = poll_timeout_ms or settings.kafka_poll_wait_ms
        self.consumer_options = consumer_options
        self.ready = False
        # End offsets when the reader first started: reading from the beginning, it has "caught
        # up" once its position reaches them (a table read whole before it is served from). Set
        # by the first open that succeeds, so a later open is a restart.
        self._targets: dict[TopicPartition, int] | None = None
        self.caught_up = False
        self._consumer: AIOKafkaConsumer | None = None

    async def reading(self) -> bool:
        """A readiness check: the reader is reading now."""
        return self.ready

    async def open(self) -> None:
        """Assigns the partitions and resolves the start position: what is sent after this
        returns is read. A missing topic raises (the start-up retry tries again)."""
        restart = self._targets is not None
        consumer = AIOKafkaConsumer(self.name, **client_options(self.settings), group_id=None,
                                    enable_auto_commit=False,
                                    auto_offset_reset="earliest" if self.start_at == "beginning" else "latest",
                                    **{**fetch_options(self.settings), **self.consumer_options})
        self._consumer = consumer
        try:
            await consumer.start()
            # With no group, subscribing assigns every partition once the topic's metadata is in.
            deadline = time.monotonic() + self.settings.connect_timeout_s
            while not consumer.assignment():
                if time.monotonic() > deadline:
                    raise TransientError(f"topic {self.name} has no partitions")
                await asyncio.sleep(self.settings.retry_initial_s)
            tps = sorted(consumer.assignment())
            if self.partitions is not None:
                chosen = set(self.partitions(len(tps)))
                tps = [tp for tp in tps if tp.partition in chosen]
                consumer.unsubscribe()
                consumer.assign(tps)
            # Otherwise it stays subscribed, so partitions added later are read too. Each new
            # assignment (also the first) resets positions to auto_offset_reset, possibly after
            # the seek below: that reset goes where the seek goes.
            if self.start_at == "beginning":
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)  # resolve the start now: later records are ours
            if not restart:
                self._targets = await consumer.end_offsets(tps)
        except BaseException:
            await self.close()
            raise
        self.ready = True
        log(logger, logging.INFO, "reading topic", topic=self.name, partitions=[tp.partition for tp in tps],
            start_at=self.start_at)
        if restart and self.on_restart is not None:
            self.on_restart()

    async def run(self) -> None:
        """Reads until cancelled (opening first if needed); closes when it ends, by a failure too."""
        try:
            if self._consumer is None:
                await self.open()
            consumer = self._consumer
            assert consumer is not None
            await self._check_caught_up(consumer)
            while True:
                raise_if_cancelled()  # a handler's MongoDB call may have swallowed the stop
                batches = await consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
                for records in batches.values():
                    for record in records:
                        await self._one(record)
                await self._check_caught_up(consumer)
        finally:  # cancelled (the stop) or failed (the restart opens a new consumer)
            await self.close()

    async def _one(self, record: ConsumerRecord) -> None:
        if record.value is None and self.topic.compacted:  # a tombstone: the key's row was deleted
            event: Event | None = None
        else:  # (a null value elsewhere is refused like any record the contract refuses)
            try:
                event = decode_record(self.topic, record.value)
            except RejectedRecord as rejected:
                if self.on_rejected is not None:
                    await self.on_rejected(record, rejected)
                else:
                    log(logger, logging.WARNING, "record skipped", topic=self.name, reason=rejected.reason,
                        partition=record.partition, offset=record.offset)
                return
        result = self.on_event(event, record)
        if inspect.isawaitable(result):
            await result

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        if self.caught_up or self._targets is None:
            return
        for tp, end in self._targets.items():
            if await consumer.position(tp) < end:
                return
        self.caught_up = True
        log(logger, logging.INFO, "topic read up to its end at start", topic=self.name)

    async def close(self) -> None:
        self.ready = False
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:  # noqa: BLE001 - a broken consumer is dropped either way
                log(logger, logging.WARNING, "topic reader stop failed", topic=self.name, error=type(exc).__name__)
