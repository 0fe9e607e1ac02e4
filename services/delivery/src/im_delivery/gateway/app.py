"""The gateway's composition root: MongoDB, the producer, the signal reader, heartbeats, the stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from im_runtime.auth import TokenVerifier
from im_runtime.health import Readiness, health_router
from im_runtime.kafka import make_producer, start_with_retry
from im_runtime.logs import log
from im_runtime.mongo import connect, reachable
from im_runtime.shutdown import Shutdown

from ..settings import DeliverySettings
from ..store import QueueStore
from .hub import Hub
from .signals import SignalReader
from .stream import stream_router


def create_app(settings: DeliverySettings) -> FastAPI:
    settings.require_auth()
    settings.require_ticket_secret()  # the gateway verifies the stream tickets
    logger = logging.getLogger("im_delivery.gateway")
    readiness = Readiness()
    verifier = TokenVerifier(settings)
    app = FastAPI(title="Helpdesk IM delivery gateway")
    app.include_router(health_router(readiness))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongo, db = await connect(settings)
        store = QueueStore(db)
        await store.ensure_indexes()
        await store.forget_gateway(settings.gateway_id)
        producer = make_producer(settings)
        await start_with_retry(producer.start, "kafka producer", settings)
        await verifier.start()
        hub = Hub(settings, producer, store)
        signals = SignalReader(settings, hub.on_signal)
        await start_with_retry(signals.start, "delivery signals", settings)
        background = [asyncio.create_task(signals.run_forever(hub.wake_all), name="signals"),
                      asyncio.create_task(hub.heartbeat_forever(), name="heartbeat"),
                      asyncio.create_task(hub.safety_poll_forever(), name="safety-poll"),
                      asyncio.create_task(hub.revocation_check_forever(db), name="revocation-check")]
        if verifier.keyset is not None:
            background.append(asyncio.create_task(verifier.keyset.refresh_forever(), name="key-set"))
        app.include_router(stream_router(hub, store, db, verifier, settings))

        async def signals_ok() -> bool:
            return signals.ready and not background[0].done()

        async def kafka_ok() -> bool:
            return bool(await producer.client.force_metadata_update())

        readiness.add("mongodb", lambda: reachable(mongo))
        readiness.add("kafka", kafka_ok)
        readiness.add("signals", signals_ok)
        log(logger, logging.INFO, "gateway started", gateway_id=settings.gateway_id, epoch=hub.epoch)
        try:
            yield
        finally:
            # SIGTERM: uvicorn has stopped accepting sockets and closed the open ones with 1012
            # (their handlers published ConnectionClosed); any socket left is closed 1012 here.
            # Then the background tasks stop, the producer flushes, and the clients close.
            readiness.draining = True
            stop = Shutdown("gateway", logger, settings.shutdown_grace_s)
            await stop.drain("open sockets", hub.close_all)
            await stop.cancel("background tasks", background)
            await stop.drain("signal reader", signals.stop)
            await stop.drain("kafka producer flush", producer.flush)
            await stop.close("kafka producer", producer.stop)
            await stop.close("mongodb client", mongo.close)
            stop.finished()

    app.router.lifespan_context = lifespan
    return app
