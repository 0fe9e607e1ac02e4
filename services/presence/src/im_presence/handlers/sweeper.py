"""Entry point of time: every sweep interval, fire due grace deadlines and expire silent gateways.

Only for the agents this process owns: those whose events live on the partitions of
im.connections.v1 its consumer is assigned right now (each agent document stores its partition).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from im_contracts.events import utcnow
from im_runtime.kafka import is_transient
from im_runtime.logs import log
from im_runtime.shutdown import raise_if_cancelled

from ..service import PresenceService

logger = logging.getLogger("im_presence.sweeper")


@dataclass
class _Mark:
    high_water: int
    taken_at: datetime


@dataclass
class ConsumerOwnership:
    """Ownership as the group consumer sees it (empty while a rebalance is in progress)."""

    subscriber: Any  # the FastStream subscriber of im.connections.v1; `.consumer` once started
    topic: str
    _marks: dict[int, _Mark] = field(default_factory=dict)

    def owned(self) -> set[int]:
        consumer = self.subscriber.consumer
        if consumer is None:
            return set()
        return {tp.partition for tp in consumer.assignment() if tp.topic == self.topic}

    async def settled_until(self, partition: int) -> datetime | None:
        """Records are applied up to the end of the log as it stood at the returned time.

        Takes a mark (the partition's end offset now, asked of the broker) and waits, over later
        sweeps, for the group's committed offset to reach it: a busy partition never reaches a
        moving end, but always reaches a fixed one.
        """
        consumer = self.subscriber.consumer
        if consumer is None:
            return None
        tp = TopicPartition(self.topic, partition)
        mark = self._marks.get(partition)
        if mark is None:
            taken_at = utcnow()  # before asking: every record sent before it is below the end
            end = (await consumer.end_offsets([tp]))[tp]
            mark = self._marks[partition] = _Mark(end, taken_at)
        committed = await consumer.committed(tp) or 0
        if committed < mark.high_water:
            return None
        del self._marks[partition]
        return mark.taken_at


async def run_sweeper(service: PresenceService, ownership: ConsumerOwnership, interval_s: float) -> None:
    while True:
        raise_if_cancelled()
        try:
            await service.sweep(ownership)
        except Exception as exc:  # noqa: BLE001 - the next sweep retries; a bug must not stop sweeping
            if is_transient(exc):
                log(logger, logging.WARNING, "sweep failed; retrying", error=type(exc).__name__)
            else:
                logger.exception("sweep failed")
        try:
            await asyncio.wait_for(service.sweep_now.wait(), interval_s)
        except TimeoutError:
            pass
        service.sweep_now.clear()
