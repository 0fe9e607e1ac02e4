"""The gateway's composition root: MongoDB, the producer, the signal reader, heartbeats, the stream."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from im_runtime.auth import TokenVerifier
from im_runtime.health import health_router
from im_runtime.logs import log
from im_runtime.process import Process

from ..settings import DeliverySettings
from ..store import QueueStore
from .hub import Hub
from .signals import signal_reader
from .direct import STREAM_PATH
from .stream import stream_endpoint


def create_app(settings: DeliverySettings) -> FastAPI:
    settings.require_auth()
    settings.require_ticket_secret()  # the gateway verifies the stream tickets
    logger = logging.getLogger("im_delivery.gateway")
    process = Process("gateway", settings, logger, settings.shutdown_grace_s)
    verifier = TokenVerifier(settings)

    async def start() -> None:
        # Stopped in the reverse order. On SIGTERM uvicorn has stopped accepting sockets and closed
        # the open ones with 1012 (their handlers published ConnectionClosed); any socket left is
        # closed 1012 first. Then the background loops stop, the signal reader, the producer
        # flushes, and the clients close.
        _, db = await process.connect_mongo()
        store = QueueStore(db)
        await store.ensure_indexes()
        await store.forget_gateway(settings.gateway_id)
        producer = await process.start_producer()
        await verifier.start()
        hub = Hub(settings, producer, store)
        signals = signal_reader(settings, hub.on_signal, on_restart=hub.wake_all)
        await process.start("delivery signals", signals.open, stop=signals.close)
        # Restarted after a failure; the gateway is unready until it reads again (`signals` below).
        process.supervise("signals", signals.run)
        process.supervise("heartbeat", hub.heartbeat_forever)
        process.supervise("safety-poll", hub.safety_poll_forever)
        process.supervise("acks", hub.write_acks_forever)
        process.supervise("revocation-check", hub.revocation_check_forever)
        if verifier.keyset is not None:
            process.supervise("key-set", verifier.keyset.refresh_forever)
        endpoint = stream_endpoint(hub, store, verifier, settings)
        app.add_api_websocket_route(STREAM_PATH, endpoint)
        app.state.stream_endpoint = endpoint  # what DirectStream calls, past FastAPI's routing
        process.on_stop("drain", "open sockets", hub.close_all)

        async def kafka_ok() -> bool:
            return bool(await producer.client.force_metadata_update())

        process.check("kafka", kafka_ok)
        process.check("signals", signals.reading)
        log(logger, logging.INFO, "gateway started", gateway_id=settings.gateway_id, epoch=hub.epoch)

    app = FastAPI(title="Helpdesk IM delivery gateway", lifespan=process.lifespan(start))
    app.include_router(health_router(process.readiness))
    return app
