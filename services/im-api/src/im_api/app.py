"""The composition root of im-api: builds the clients, services and background tasks, wires the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from im_runtime.auth import TokenVerifier
from im_runtime.health import Readiness, health_router
from im_runtime.kafka import DeadLetters, broker_security, make_producer, start_with_retry
from im_runtime.logs import log
from im_runtime.mongo import connect, reachable
from im_runtime.shutdown import Shutdown

from .api import agents, conversations, me
from .api.console import dev_router, mount_console, require_dev_signin_safe
from .api.deps import Services
from .api.middleware import RequestContext
from .assistance import Assistance
from .committer import Committer
from .directory import Directory
from .errors import install_error_handlers
from .limits import RateLimits
from .handlers.assistance import assistance_subscription
from .metrics import DEAD_LETTERED
from .outbox import UnitOfWork
from .relay import Relay
from .presence_cache import PresenceCache
from .service import Conversations
from .settings import ApiSettings
from .store import Store

logger = logging.getLogger("im_api")

DESCRIPTION = """Helpdesk IM: agents, persistent threads tied to tickets and chats, messages and unread state.

Every call needs `Authorization: Bearer <JWT>` (claims `tid`, `sub`, `role`, `exp`). Errors are
`{"error": {"code", "message", "field", "errors", "request_id"}}`; every response carries `X-Request-Id`."""


class _GroupJoined:
    """Readiness of the assistance consumer: it has joined its group and received an assignment.

    Latched after the first one: an im-api beyond the partition count (empty assignment) is still
    ready, and a later rebalance (another instance starting) must not take every HTTP server out
    of service; the consumer itself must still exist."""

    def __init__(self, subscriber: Any) -> None:
        self.subscriber = subscriber
        self.joined = False

    async def check(self) -> bool:
        consumer = self.subscriber.consumer
        if consumer is None:
            return False
        if not self.joined:
            # aiokafka keeps no public "joined" flag: the subscription's assignment is set at the
            # first completed join (possibly empty), and assignment() is the public fallback.
            subscription = getattr(getattr(consumer, "_subscription", None), "subscription", None)
            self.joined = bool(consumer.assignment()) or getattr(subscription, "assignment", None) is not None
        return self.joined


def create_app(settings: ApiSettings | None = None, mongo_options: dict[str, Any] | None = None) -> FastAPI:
    """`mongo_options`: more MongoClient options (tests pass command listeners to count reads)."""
    settings = settings or ApiSettings()
    verifier = TokenVerifier(settings)  # refuses to start without a secret or JWKS
    settings.require_ticket_secret()  # im-api mints the stream tickets
    readiness = Readiness(timeout_s=settings.readiness_timeout_s)
    presence = PresenceCache(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client, db = await connect(settings, **(mongo_options or {}))
        store = Store(db, outbox_retention_s=settings.outbox_retention_s)
        await store.create_indexes()
        owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        relay = Relay(store, client, settings, lambda: make_producer(
            settings, request_timeout_ms=int(settings.outbox_publish_timeout_s * 1000)), owner)
        uow = UnitOfWork(client, store, settings, on_commit=relay.wake)
        committer = Committer(uow, store, settings.commit_batch_max, settings.commit_lanes)
        conversations = Conversations(store, uow, committer, settings)
        app.state.services = Services(
            settings, store, verifier, Directory(store, uow, presence, scan_max=settings.agent_list_scan_max),
            conversations, RateLimits.from_settings(settings))
        app.state.relay, app.state.committer, app.state.presence = relay, committer, presence
        await verifier.start()
        tasks = [asyncio.create_task(committer.run(), name="committer"),
                 asyncio.create_task(relay.run(), name="outbox-relay"),
                 asyncio.create_task(presence.run(), name="presence-cache")]
        if verifier.keyset is not None:
            tasks.append(asyncio.create_task(verifier.keyset.refresh_forever(), name="key-set"))
        app.state.tasks = tasks

        # Assistance requests: a consumer group through the one consumer policy (dead letters, backoff).
        dead_letter_producer = make_producer(settings)
        await start_with_retry(dead_letter_producer.start, "kafka producer (dead letters)", settings)
        dead_letters = DeadLetters(dead_letter_producer, settings, "im-api-assistance",
                                   on_dead_letter=lambda topic, reason: DEAD_LETTERED.labels(topic, reason).inc())
        broker = KafkaBroker(settings.kafka_bootstrap, logger=logging.getLogger("im_api.faststream"),
                             log_level=logging.DEBUG,  # "Received"/"Processed" per record: too much at INFO
                             # Half the grace: the steps after it (queued sends, leases) need the rest.
                             graceful_timeout=settings.shutdown_grace_s / 2,
                             security=broker_security(settings))
        subscriber = assistance_subscription(Assistance(store, conversations), verifier, dead_letters,
                                             settings).register(broker)
        await start_with_retry(broker.start, "kafka consumer (assistance requests)", settings)
        app.state.assistance_subscriber = subscriber

        async def mongo_ok() -> bool:
            return await reachable(client)

        async def kafka_ok() -> bool:
            return relay.kafka_ok

        readiness.add("mongodb", mongo_ok)
        readiness.add("kafka", kafka_ok)
        readiness.add("presence_cache", presence.ready)
        joined = _GroupJoined(subscriber)
        readiness.add("assistance_consumer", joined.check)
        log(logger, logging.INFO, "im-api started", relay_owner=owner)
        try:
            yield
        finally:
            readiness.draining = True
            stop = Shutdown("im-api", logger, settings.shutdown_grace_s)
            # The consumer first: it finishes the batch in hand (which sends through the committer).
            await stop.drain("assistance consumer", broker.stop)
            # uvicorn has drained the requests: commit what is queued, then stop the relay.
            await stop.cancel("committer", tasks[:1])
            await stop.drain("queued sends", committer.drain)
            relay.halt()
            await stop.cancel("background tasks", tasks[1:])
            await stop.drain("outbox leases", relay.stop)
            await stop.close("kafka producer (dead letters)", dead_letter_producer.stop)
            await stop.close("mongodb client", client.close)
            stop.finished()

    app = FastAPI(title="Helpdesk IM API", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(RequestContext, max_bytes=settings.max_request_bytes)
    app.include_router(health_router(readiness))
    app.include_router(agents.router)
    app.include_router(conversations.router)
    app.include_router(me.router)
    if settings.dev_signin:
        require_dev_signin_safe(settings)
        # Loud on purpose: anyone who reaches this process can sign in as anyone.
        log(logger, logging.WARNING, "DEVELOPMENT sign-in is ON (IM_API_DEV_SIGNIN): never in production")
        app.include_router(dev_router)
    mount_console(app, settings)
    return app
