"""The composition root of im-api: builds the clients, services and background tasks, wires the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI
from im_runtime.auth import TokenVerifier
from im_runtime.health import Readiness, health_router
from im_runtime.kafka import make_producer
from im_runtime.logs import log
from im_runtime.mongo import connect, reachable

from .api import agents, conversations, me
from .api.deps import Services
from .api.middleware import RequestContext
from .committer import Committer
from .directory import Directory
from .errors import install_error_handlers
from .outbox import Relay, UnitOfWork
from .presence_cache import PresenceCache
from .service import Conversations
from .settings import ApiSettings
from .store import Store

logger = logging.getLogger("im_api")

DESCRIPTION = """Helpdesk IM: agents, persistent threads tied to tickets and chats, messages and unread state.

Every call needs `Authorization: Bearer <JWT>` (claims `tid`, `sub`, `role`, `exp`). Errors are
`{"error": {"code", "message", "field", "errors", "request_id"}}`; every response carries `X-Request-Id`."""


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    verifier = TokenVerifier(settings)  # refuses to start without a secret or JWKS
    readiness = Readiness(timeout_s=settings.readiness_timeout_s)
    presence = PresenceCache(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client, db = await connect(settings)
        store = Store(db, outbox_retention_s=settings.outbox_retention_s)
        await store.create_indexes()
        owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        relay = Relay(store, client, settings, lambda: make_producer(
            settings, request_timeout_ms=int(settings.outbox_publish_timeout_s * 1000)), owner)
        uow = UnitOfWork(client, store, settings, on_commit=relay.wake)
        committer = Committer(uow, store, settings.commit_batch_max)
        app.state.services = Services(settings, store, verifier, Directory(store, uow, presence),
                                      Conversations(store, uow, committer))
        app.state.relay, app.state.committer, app.state.presence = relay, committer, presence
        tasks = [asyncio.create_task(committer.run(), name="committer"),
                 asyncio.create_task(relay.run(), name="outbox-relay"),
                 asyncio.create_task(presence.run(), name="presence-cache")]
        app.state.tasks = tasks

        async def mongo_ok() -> bool:
            return await reachable(client)

        async def kafka_ok() -> bool:
            return relay.kafka_ok

        readiness.add("mongodb", mongo_ok)
        readiness.add("kafka", kafka_ok)
        readiness.add("presence_cache", presence.ready)
        log(logger, logging.INFO, "im-api started", relay_owner=owner)
        try:
            yield
        finally:
            readiness.draining = True
            # uvicorn has drained the requests: commit what is queued, then stop the relay.
            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)
            with contextlib.suppress(Exception):
                await committer.drain()
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
            await relay.stop()
            await client.close()
            log(logger, logging.INFO, "im-api stopped")

    app = FastAPI(title="Helpdesk IM API", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(RequestContext, max_bytes=settings.max_request_bytes)
    app.include_router(health_router(readiness))
    app.include_router(agents.router)
    app.include_router(conversations.router)
    app.include_router(me.router)
    return app
