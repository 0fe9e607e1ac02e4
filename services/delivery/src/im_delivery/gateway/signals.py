"""The gateway's signal reader: its own partition of `im.delivery-signals.v1`, by assign().

Gateways join no consumer group (deploying or scaling them never pauses the fan-out): each reads
only the partition its gateway id hashes to, from the end, and keeps the records addressed to it.
Cost: a partition is shared by the gateways that hash to it, so each reads its neighbours'
signals too (small records; partitions can be added as gateways grow).
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import ConsumerRecord
from im_contracts import topics
from im_contracts.events import Event, LiveFrame, QueueAdvanced
from im_runtime.reader import TopicReader
from prometheus_client import Counter

from ..bus import signal_partition
from ..settings import DeliverySettings

RESTARTS = Counter("im_delivery_signal_reader_restarts_total", "Signal reader restarts after a crash")


def signal_reader(settings: DeliverySettings, on_signal: Callable[[Event], None],
                  on_restart: Callable[[], None]) -> TopicReader:
    """Reads this gateway's signal partition from its end. A restarted reader has missed what was
    sent while it was down: `on_restart` wakes every connection to re-read its queue (the safety
    poll would, later)."""
    gateway_id = settings.gateway_id

    def on_event(event: Event | None, record: ConsumerRecord) -> None:
        if isinstance(event, QueueAdvanced | LiveFrame) and event.gateway_id == gateway_id:
            on_signal(event)

    def restarted() -> None:
        RESTARTS.inc()
        on_restart()

    return TopicReader(settings, topics.DELIVERY_SIGNALS, on_event, start_at="end",
                       partitions=lambda count: [signal_partition(gateway_id, count)], on_restart=restarted)
