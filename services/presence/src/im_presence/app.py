"""The composition root of presence: builds the clients, wires the handlers, runs them for the app's lifespan."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from im_contracts.events import utcnow
from im_contracts.topics import CONNECTIONS
from im_runtime.health import Readiness, health_router
from im_runtime.kafka import DeadLetters, broker_security
from im_runtime.logs import log
from im_runtime.process import Process
from prometheus_client import Counter

from .bus import PresencePublisher
from .handlers.connections import connection_subscription
from .handlers.gateways import heartbeat_reader
from .handlers.sweeper import ConsumerOwnership, run_sweeper
from .service import PresenceService
from .settings import PresenceSettings
from .store import PresenceStore

logger = logging.getLogger("im_presence")

DEAD_LETTERED = Counter("im_presence_dead_letters_total", "Records dead-lettered", ["topic", "reason"])


class PresenceProcess:
    """Everything one presence process runs: consumers, the sweeper, the store and the publisher,
    started and stopped through the one process skeleton (`im_runtime.process.Process`)."""

    def __init__(self, settings: PresenceSettings) -> None:
        self.settings = settings
        self.process = Process("presence", settings, logger, settings.shutdown_timeout_s)
        self.ownership: ConsumerOwnership | None = None
        self.service: PresenceService | None = None

    @property
    def readiness(self) -> Readiness:
        return self.process.readiness

    async def start(self) -> None:
        # Stopped in the reverse order: the sweeper, then the consumers finish the batch in hand
        # (which may still publish) and leave the group, then the producer and MongoDB close.
        settings, process = self.settings, self.process
        _, db = await process.connect_mongo()
        store = PresenceStore(db)
        await process.start("mongodb indexes", store.ensure_indexes)
        producer = await process.start_producer(flush=False)
        dead_letters = DeadLetters(
            producer, settings, "im-presence",
            on_dead_letter=lambda topic, reason: DEAD_LETTERED.labels(topic, reason).inc(),
        )
        self.service = service = PresenceService(store, PresencePublisher(producer, settings), settings)

        broker = KafkaBroker(
            settings.kafka_bootstrap,
            logger=logging.getLogger("im_presence.faststream"),  # rebalances at INFO
            log_level=logging.DEBUG,  # "Received"/"Processed" per record: too much at INFO
            graceful_timeout=settings.shutdown_timeout_s,
            security=broker_security(settings),
        )
        # The sweeper needs the group consumer: its assignment is the agents this process owns.
        subscriber = connection_subscription(service, dead_letters, settings).register(broker)
        heartbeats = heartbeat_reader(service, dead_letters, settings)
        await process.start("gateway heartbeats", heartbeats.open, stop=heartbeats.close)
        process.supervise("gateway-heartbeats", heartbeats.run)
        await process.start("kafka consumers", broker.start, stop=broker.stop)
        service.listening_since = utcnow()

        self.ownership = ownership = ConsumerOwnership(subscriber, CONNECTIONS.name(settings.topic_prefix))
        process.supervise("presence-sweeper", lambda: run_sweeper(service, ownership, settings.sweep_interval_s))

        async def kafka_reachable() -> bool:
            return bool(await producer.client.force_metadata_update())

        async def assigned() -> bool:
            return bool(ownership.owned())

        process.check("kafka", kafka_reachable)
        process.check("consumer_assigned", assigned)
        process.check("gateway_heartbeats", heartbeats.reading)
        log(logger, logging.INFO, "presence started", group=f"{settings.topic_prefix}{settings.consumer_group}")

    async def stop(self) -> None:
        await self.process.stop()


def create_app(settings: PresenceSettings | None = None) -> FastAPI:
    """The HTTP face of a presence process (health only) with the process in its lifespan."""
    settings = settings or PresenceSettings()
    presence = PresenceProcess(settings)
    app = FastAPI(title="Helpdesk IM presence", lifespan=presence.process.lifespan(presence.start))
    app.include_router(health_router(presence.readiness))
    app.state.process = presence
    return app
