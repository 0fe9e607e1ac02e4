"""The gateway's signal reader: its own partition of `im.delivery-signals.v1`, by assign().

Gateways join no consumer group (deploying or scaling them never pauses the fan-out): each reads
only the partition its gateway id hashes to, from the end, and keeps the records addressed to it.
Cost: a partition is shared by the gateways that hash to it, so each reads its neighbours'
signals too (small records; partitions can be added as gateways grow).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from im_contracts import topics
from im_contracts.codec import RejectedRecord, decode_record
from im_contracts.events import Event, LiveFrame, QueueAdvanced
from im_runtime.logs import log
from im_runtime.kafka import client_options
from prometheus_client import Counter

from ..bus import signal_partition
from ..settings import DeliverySettings

logger = logging.getLogger("im_delivery.signals")

RESTARTS = Counter("im_delivery_signal_reader_restarts_total", "Signal reader restarts after a crash")


class SignalReader:
    def __init__(self, settings: DeliverySettings, on_signal: Callable[[Event], None]) -> None:
        self.settings = settings
        self.on_signal = on_signal
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = False

    async def start(self) -> None:
        name = topics.DELIVERY_SIGNALS.name(self.settings.topic_prefix)
        self.consumer = AIOKafkaConsumer(
            **client_options(self.settings), group_id=None, enable_auto_commit=False,
            # Signals wake connections: deliver them as soon as they exist.
            fetch_max_wait_ms=100,
        )
        await self.consumer.start()
        partitions = None
        while not partitions:
            partitions = self.consumer.partitions_for_topic(name)
            if not partitions:
                await self.consumer._client.force_metadata_update()  # noqa: SLF001 - topic metadata
                partitions = self.consumer.partitions_for_topic(name)
                if not partitions:
                    await asyncio.sleep(self.settings.retry_initial_s)
        tp = TopicPartition(name, signal_partition(self.settings.gateway_id, len(partitions)))
        self.consumer.assign([tp])
        await self.consumer.seek_to_end(tp)
        await self.consumer.position(tp)  # resolve "end" now: signals after this point are ours
        self.ready = True
        log(logger, logging.INFO, "reading delivery signals", partition=tp.partition)

    async def run_forever(self, on_restart: Callable[[], None]) -> None:
        """The reader, supervised: if it crashes (a bug, a Kafka error aiokafka does not retry) it
        is restarted with backoff, and readiness is false until it reads again. It restarts at the
        partition's end, so signals sent meanwhile are missed: `on_restart` wakes every connection
        to re-read its queue (the safety poll would, later)."""
        delay = self.settings.retry_initial_s
        while True:
            try:
                if self.consumer is None:
                    await self.start()
                    on_restart()
                    delay = self.settings.retry_initial_s
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it was, the reader must come back
                self.ready = False
                RESTARTS.inc()
                log(logger, logging.ERROR, "signal reader crashed; restarting", error=type(exc).__name__,
                    detail=str(exc)[:200], retry_in_s=round(delay, 3))
                await self.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    async def run(self) -> None:
        assert self.consumer is not None
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batches.values():
                for record in records:
                    try:
                        event = decode_record(topics.DELIVERY_SIGNALS, record.value)
                    except RejectedRecord as rejected:
                        # Many gateways read this partition: dead-lettering here would multiply it.
                        log(logger, logging.WARNING, "signal ignored", reason=rejected.reason,
                            offset=record.offset)
                        continue
                    if isinstance(event, QueueAdvanced | LiveFrame) and event.gateway_id == self.settings.gateway_id:
                        self.on_signal(event)

    async def stop(self) -> None:
        self.ready = False
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:  # noqa: BLE001 - a broken consumer is dropped either way
                log(logger, logging.WARNING, "signal reader stop failed", error=type(exc).__name__)
