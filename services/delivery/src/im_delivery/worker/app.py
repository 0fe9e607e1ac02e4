"""The fan-out worker's composition root: clients, the two consumer groups, the pruning job, health."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from im_contracts import topics
from im_runtime.health import health_router
from im_runtime.kafka import DeadLetters, broker_security
from im_runtime.logs import log
from im_runtime.process import Process

from ..bus import BatchSubscription, DeliveryBus, count_dead_letters
from ..settings import DeliverySettings
from ..store import QueueStore
from .fanout import FanOut
from .gateways import GatewayHeartbeats
from .projections import Projections
from .maintenance import Maintenance
from .queue_writer import QueueWriter
from .retention import TenantRetention

logger = logging.getLogger("im_delivery.worker")

FANOUT_TOPICS = (topics.MESSAGES, topics.CONVERSATIONS, topics.AGENTS, topics.PRESENCE, topics.TYPING)


def create_app(settings: DeliverySettings) -> FastAPI:
    process = Process("delivery worker", settings, logger, settings.shutdown_grace_s)

    async def start() -> None:
        # Stopped in the reverse order: the pruning job, then the consumers finish their batch in
        # hand (records confirmed, offsets committed) and leave their groups, then the producer
        # flushes, then the clients close.
        _, db = await process.connect_mongo()
        store, projections = QueueStore(db), Projections(db)
        await store.ensure_indexes()
        await projections.ensure_indexes()
        producer = await process.start_producer()
        bus = DeliveryBus(producer, settings)  # each consuming task confirms its own records
        fanout = FanOut(projections, store, bus, settings.hold_back_s, settings.presence_threads_max,
                        settings.presence_partners_max)
        heartbeats = GatewayHeartbeats(store, settings.epoch_resweep_s)
        writer = QueueWriter(store, bus)
        # graceful_timeout: on SIGTERM the batch in hand finishes (its records confirmed, its offsets
        # committed) before the consumers leave their groups.
        broker = KafkaBroker(settings.kafka_bootstrap, logger=None, graceful_timeout=settings.shutdown_grace_s,
                             security=broker_security(settings))
        consumer_options = dict(session_timeout_ms=settings.session_timeout_ms,
                                heartbeat_interval_ms=settings.heartbeat_interval_ms)

        def subscription(name: str, group: str, topics_: tuple, handle_batch) -> BatchSubscription:
            letters = DeadLetters(producer, settings, group, on_dead_letter=count_dead_letters(group, settings.topic_prefix))
            return BatchSubscription(name=name, topics=topics_, group_id=group, handle=None,  # type: ignore[arg-type]
                                     handle_batch=handle_batch, dead_letters=letters, settings=settings,
                                     max_records=settings.max_records, consumer_options=dict(consumer_options))

        subscriptions = [
            subscription("delivery-fanout", settings.fanout_group, FANOUT_TOPICS, fanout.handle_batch),
            subscription("delivery-queue", settings.queue_group, (topics.INBOX,), writer.handle_batch),
            # Heartbeats in a group of their own: never held up behind a paused message partition,
            # so a busy fan-out never makes a live gateway look silent.
            subscription("delivery-gateways", settings.gateways_group, (topics.GATEWAYS,), heartbeats.handle_batch),
        ]
        for sub in subscriptions:
            sub.register(broker)
        await process.start("kafka consumers", broker.start, stop=broker.stop)
        retention = TenantRetention(db, store, projections, settings)
        process.supervise("maintenance", Maintenance(store, fanout, settings, retention=retention).run_forever)

        async def kafka_ok() -> bool:
            return await broker.ping(timeout=2.0)

        async def groups_joined() -> bool:
            return all(s.membership.joined for s in subscriptions)

        process.check("kafka", kafka_ok)
        process.check("consumer_groups_joined", groups_joined)
        log(logger, logging.INFO, "delivery worker started", groups=[s.group_id for s in subscriptions])

    app = FastAPI(title="Helpdesk IM delivery worker", lifespan=process.lifespan(start))
    app.include_router(health_router(process.readiness))
    return app
