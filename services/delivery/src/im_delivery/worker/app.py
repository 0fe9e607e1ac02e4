"""The fan-out worker's composition root: clients, the two consumer groups, the pruning job, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from im_contracts import topics
from im_runtime.health import Readiness, health_router
from im_runtime.kafka import DeadLetters, make_producer, start_with_retry
from im_runtime.logs import log
from im_runtime.mongo import connect, reachable

from ..bus import BatchSubscription, DeliveryBus
from ..settings import DeliverySettings
from ..store import QueueStore
from .fanout import FanOut
from .projections import Projections
from .pruning import Pruning
from .queue_writer import QueueWriter

logger = logging.getLogger("im_delivery.worker")

FANOUT_TOPICS = (topics.MESSAGES, topics.CONVERSATIONS, topics.AGENTS, topics.PRESENCE, topics.TYPING)


def create_app(settings: DeliverySettings) -> FastAPI:
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongo, db = await connect(settings)
        store, projections = QueueStore(db), Projections(db)
        await store.ensure_indexes()
        await projections.ensure_indexes()
        producer = make_producer(settings)
        await start_with_retry(producer.start, "kafka producer", settings)
        fanout = FanOut(projections, store, DeliveryBus(producer, settings), settings.hold_back_s)
        writer = QueueWriter(store, DeliveryBus(producer, settings))
        broker = KafkaBroker(settings.kafka_bootstrap, logger=None)
        common = dict(settings=settings, max_records=settings.max_records,
                      session_timeout_ms=settings.session_timeout_ms,
                      heartbeat_interval_ms=settings.heartbeat_interval_ms)
        subscriptions = [
            BatchSubscription(name="delivery-fanout", topics=FANOUT_TOPICS, group_id=settings.fanout_group,
                              handle=None, handle_batch=fanout.handle_batch,  # type: ignore[arg-type]
                              dead_letters=DeadLetters(producer, settings, settings.fanout_group), **common),
            BatchSubscription(name="delivery-queue", topics=(topics.INBOX,), group_id=settings.queue_group,
                              handle=None, handle_batch=writer.handle_batch,  # type: ignore[arg-type]
                              dead_letters=DeadLetters(producer, settings, settings.queue_group), **common),
            # Heartbeats in a group of their own: never held up behind a paused message partition,
            # so a busy fan-out never makes a live gateway look silent.
            BatchSubscription(name="delivery-gateways", topics=(topics.GATEWAYS,), group_id=settings.gateways_group,
                              handle=None, handle_batch=fanout.handle_batch,  # type: ignore[arg-type]
                              dead_letters=DeadLetters(producer, settings, settings.gateways_group), **common),
        ]
        for sub in subscriptions:
            sub.register(broker)
        await start_with_retry(broker.start, "kafka consumers", settings)
        pruning = asyncio.create_task(Pruning(store, fanout, settings).run_forever(), name="pruning")

        async def kafka_ok() -> bool:
            return await broker.ping(timeout=2.0)

        readiness.add("mongodb", lambda: reachable(mongo))
        readiness.add("kafka", kafka_ok)
        log(logger, logging.INFO, "delivery worker started", groups=[s.group_id for s in subscriptions])
        try:
            yield
        finally:
            readiness.draining = True
            pruning.cancel()
            await broker.stop()
            await producer.stop()
            await mongo.close()
            log(logger, logging.INFO, "delivery worker stopped")

    app = FastAPI(title="Helpdesk IM delivery worker", lifespan=lifespan)
    app.include_router(health_router(readiness))
    return app
