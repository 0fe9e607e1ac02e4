"""The composition root of presence: builds the clients, wires the handlers, runs them for the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from im_contracts.events import utcnow
from im_contracts.topics import CONNECTIONS
from im_runtime.health import Readiness, health_router
from im_runtime.kafka import DeadLetters, broker_security, make_producer, start_with_retry
from im_runtime.logs import log
from im_runtime.mongo import connect, reachable
from im_runtime.shutdown import Shutdown
from prometheus_client import Counter
from pymongo import AsyncMongoClient

from .bus import PresencePublisher
from .handlers.connections import connection_subscription
from .handlers.gateways import register_heartbeats
from .handlers.sweeper import ConsumerOwnership, run_sweeper
from .service import PresenceService
from .settings import PresenceSettings
from .store import PresenceStore

logger = logging.getLogger("im_presence")

DEAD_LETTERED = Counter("im_presence_dead_letters_total", "Records dead-lettered", ["topic", "reason"])


class PresenceProcess:
    """Everything one presence process runs: consumers, the sweeper, the store and the publisher."""

    def __init__(self, settings: PresenceSettings) -> None:
        self.settings = settings
        self.readiness = Readiness()
        self.mongo: AsyncMongoClient | None = None
        self.producer: AIOKafkaProducer | None = None
        self.broker: KafkaBroker | None = None
        self.ownership: ConsumerOwnership | None = None
        self.service: PresenceService | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        settings = self.settings
        self.mongo, db = await connect(settings)
        store = PresenceStore(db)
        await start_with_retry(store.ensure_indexes, "mongodb indexes", settings)
        self.producer = make_producer(settings)
        await start_with_retry(self.producer.start, "kafka producer", settings)
        dead_letters = DeadLetters(
            self.producer, settings, "im-presence",
            on_dead_letter=lambda topic, reason: DEAD_LETTERED.labels(topic, reason).inc(),
        )
        self.service = service = PresenceService(store, PresencePublisher(self.producer, settings), settings)

        self.broker = KafkaBroker(
            settings.kafka_bootstrap,
            logger=logging.getLogger("im_presence.faststream"),  # rebalances at INFO
            log_level=logging.DEBUG,  # "Received"/"Processed" per record: too much at INFO
            graceful_timeout=settings.shutdown_timeout_s,
            security=broker_security(settings),
        )
        # The sweeper needs the group consumer: its assignment is the agents this process owns.
        subscriber = connection_subscription(service, dead_letters, settings).register(self.broker)
        register_heartbeats(self.broker, service, dead_letters, settings)
        await start_with_retry(self.broker.start, "kafka consumers", settings)
        service.listening_since = utcnow()

        self.ownership = ConsumerOwnership(subscriber, CONNECTIONS.name(settings.topic_prefix))
        self._sweeper = asyncio.create_task(
            run_sweeper(service, self.ownership, settings.sweep_interval_s), name="presence-sweeper"
        )
        self.readiness.add("mongodb", lambda: reachable(self.mongo))
        self.readiness.add("kafka", self._kafka_reachable)
        self.readiness.add("consumer_assigned", self._assigned)
        log(logger, logging.INFO, "presence started", group=f"{settings.topic_prefix}{settings.consumer_group}")

    async def _kafka_reachable(self) -> bool:
        return self.producer is not None and bool(await self.producer.client.force_metadata_update())

    async def _assigned(self) -> bool:
        return self.ownership is not None and bool(self.ownership.owned())

    async def stop(self) -> None:
        self.readiness.draining = True
        sweeper, broker, producer, mongo = self._sweeper, self.broker, self.producer, self.mongo
        self._sweeper = self.broker = self.producer = self.mongo = None
        stop = Shutdown("presence", logger, self.settings.shutdown_timeout_s)
        if sweeper is not None:
            await stop.cancel("sweeper", [sweeper])
        # The broker first: it finishes the batch in hand (which may still publish) and leaves the group.
        if broker is not None:
            await stop.drain("kafka consumers", broker.stop)
        if producer is not None:
            await stop.close("kafka producer", producer.stop)
        if mongo is not None:
            await stop.close("mongodb client", mongo.close)
        stop.finished()


def create_app(settings: PresenceSettings | None = None) -> FastAPI:
    """The HTTP face of a presence process (health only) with the process in its lifespan."""
    settings = settings or PresenceSettings()
    process = PresenceProcess(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await process.start()
        try:
            yield
        finally:
            await process.stop()

    app = FastAPI(title="Helpdesk IM presence", lifespan=lifespan)
    app.include_router(health_router(process.readiness))
    app.state.process = process
    return app
