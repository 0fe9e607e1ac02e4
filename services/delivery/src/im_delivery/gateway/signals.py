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

from ..bus import signal_partition
from ..settings import DeliverySettings

logger = logging.getLogger("im_delivery.signals")


class SignalReader:
    def __init__(self, settings: DeliverySettings, on_signal: Callable[[Event], None]) -> None:
        self.settings = settings
        self.on_signal = on_signal
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = False

    async def start(self) -> None:
        name = topics.DELIVERY_SIGNALS.name(self.settings.topic_prefix)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
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
        if self.consumer is not None:
            await self.consumer.stop()
