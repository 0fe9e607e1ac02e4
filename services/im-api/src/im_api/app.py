"""The composition root of im-api: builds the clients, services and background tasks, wires the routes."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from im_runtime.auth import TokenVerifier
from im_runtime.health import health_router
from im_runtime.kafka import DeadLetters, broker_security, make_producer
from im_runtime.logs import log
from im_runtime.process import Process
from im_runtime.webhook_urls import networks

from .api import agents, conversations, me
from .api import lifecycle as lifecycle_api
from .api import teams as teams_api
from .api import notifications as notifications_api
from .api.console import dev_router, mount_console, require_dev_signin_safe
from .active_agents import ActiveAgents
from .api.deps import Services
from .api.middleware import RequestContext
from .assistance import Assistance
from .committer import Committer
from .directory import Directory
from .errors import install_error_handlers
from .erasure import Erasures
from .lifecycle import Audit, Lifecycle
from .limits import RateLimits
from .notifications import Notifications, WebhookPolicy
from .handlers.assistance import assistance_subscription
from .metrics import DEAD_LETTERED
from .outbox import UnitOfWork
from .relay import Relay
from .presence_cache import PresenceCache
from .retention import Retention
from .retention import create_indexes as retention_indexes
from .service import Conversations
from .settings import ApiSettings
from .store import Store, directory_bucket
from .team_requests import TeamRequests
from .teams import Teams

logger = logging.getLogger("im_api")

DESCRIPTION = """Helpdesk IM: agents, persistent threads tied to tickets and chats, messages and unread state.

Every call needs `Authorization: Bearer <JWT>` (claims `tid`, `sub`, `role`, `exp`). Errors are
`{"error": {"code", "message", "field", "errors", "request_id"}}`; every response carries `X-Request-Id`."""


def create_app(settings: ApiSettings | None = None, mongo_options: dict[str, Any] | None = None) -> FastAPI:
    """`mongo_options`: more MongoClient options (tests pass command listeners to count reads)."""
    settings = settings or ApiSettings()
    verifier = TokenVerifier(settings)  # refuses to start without a secret or JWKS
    settings.require_ticket_secret()  # im-api mints the stream tickets
    process = Process("im-api", settings, logger, settings.shutdown_grace_s,
                      readiness_timeout_s=settings.readiness_timeout_s)
    presence = PresenceCache(settings)

    async def start() -> None:
        # Every step registers its stop as it starts; the stop runs them in the reverse order:
        # the assistance consumer finishes its batch (which sends through the committer); uvicorn
        # has drained the requests, so the committer commits what is queued; then the relay halts
        # and the background loops end; the relay hands its leases over; the clients close.
        client, db = await process.connect_mongo(**(mongo_options or {}))
        store = Store(db, outbox_retention_s=settings.outbox_retention_s)
        await store.create_indexes()
        notifications = Notifications(db, WebhookPolicy(settings.webhook_allow_http,
                                                         networks(settings.webhook_allowed_networks.split(","))))
        await notifications.create_indexes()
        dead_letter_producer = await process.start_producer("kafka producer (dead letters)", flush=False)
        owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        relay = Relay(store, client, settings, lambda: make_producer(
            settings, request_timeout_ms=int(settings.outbox_publish_timeout_s * 1000)), owner)
        uow = UnitOfWork(client, store, settings, on_commit=relay.wake)
        committer = Committer(uow, store, settings.commit_batch_max, settings.commit_lanes)
        conversations = Conversations(store, uow, committer, settings)
        teams = Teams(db, store, lambda tenant, agent: presence.get(tenant, agent)[0],
                      members_max=settings.team_members_max, teams_max=settings.teams_max)
        await teams.create_indexes()
        team_requests = TeamRequests(conversations, teams)
        conversations.requests = team_requests
        lifecycle = Lifecycle(conversations, Audit(db), db)
        await lifecycle.create_indexes()
        await retention_indexes(db)
        retention = Retention(db, lifecycle.audit, owner, budget=settings.retention_batch,
                              lease_s=settings.retention_lease_s, outbox_retention_s=settings.outbox_retention_s)
        active = ActiveAgents(store.is_active_agent, store.directory_versions, directory_bucket,
                              settings.directory_recheck_s, settings.directory_memory_max)
        erasures = Erasures(lifecycle, db, lease_s=settings.erasure_lease_s, on_change=active.changed,
                            settle_s=2 * settings.directory_recheck_s)
        app.state.services = Services(
            settings, store, verifier, Directory(store, uow, presence, scan_max=settings.agent_list_scan_max,
                                                 on_change=active.changed),
            conversations, RateLimits.from_settings(settings), active, notifications, teams, team_requests, lifecycle,
            erasures)
        app.state.relay, app.state.committer, app.state.presence = relay, committer, presence
        app.state.retention = retention
        await verifier.start()
        process.on_stop("drain", "outbox leases", relay.stop)
        background = []
        if verifier.keyset is not None:
            background.append(process.supervise("key-set", verifier.keyset.refresh_forever))
        background.insert(0, process.supervise("presence-cache", presence.run))
        background.insert(0, process.supervise("outbox-relay", relay.run))
        background.append(process.supervise("team-escalations", lambda: team_requests.run_escalations(
            settings.team_escalation_interval_s, settings.team_escalation_batch, settings.team_escalation_retry_s)))
        background.append(process.supervise("erasures", lambda: erasures.run(settings.erasure_interval_s,
                                                                             settings.erasure_batch)))
        process.on_stop("drain", "retention lease", retention.release)  # after the rounds end
        background.append(process.supervise("retention", lambda: retention.run(settings.retention_interval_s)))

        async def halt_relay() -> None:
            relay.halt()

        process.on_stop("drain", "relay halt", halt_relay)
        process.on_stop("drain", "queued sends", committer.drain)
        app.state.tasks = [process.supervise("committer", committer.run), *background]

        # Assistance requests: a consumer group through the one consumer policy (dead letters, backoff).
        dead_letters = DeadLetters(dead_letter_producer, settings, "im-api-assistance",
                                   on_dead_letter=lambda topic, reason: DEAD_LETTERED.labels(topic, reason).inc())
        broker = KafkaBroker(settings.kafka_bootstrap, logger=logging.getLogger("im_api.faststream"),
                             log_level=logging.DEBUG,  # "Received"/"Processed" per record: too much at INFO
                             # Half the grace: the steps after it (queued sends, leases) need the rest.
                             graceful_timeout=settings.shutdown_grace_s / 2,
                             security=broker_security(settings))
        subscription = assistance_subscription(Assistance(store, conversations), verifier, dead_letters, settings)
        subscriber = subscription.register(broker)
        await process.start("kafka consumer (assistance requests)", broker.start, stop=broker.stop)

        async def kafka_ok() -> bool:
            return relay.kafka_ok

        async def assistance_joined() -> bool:
            # Latched once joined (a later rebalance must not take every im-api out of service);
            # the consumer itself must still exist.
            return subscriber.consumer is not None and subscription.membership.joined

        process.check("kafka", kafka_ok)
        process.check("presence_cache", presence.ready)
        process.check("assistance_consumer", assistance_joined)
        log(logger, logging.INFO, "im-api started", relay_owner=owner)

    app = FastAPI(title="Helpdesk IM API", version="1.0.0", description=DESCRIPTION, lifespan=process.lifespan(start))
    install_error_handlers(app)
    app.add_middleware(RequestContext, max_bytes=settings.max_request_bytes)
    app.include_router(health_router(process.readiness))
    app.include_router(agents.router)
    app.include_router(conversations.router)
    app.include_router(me.router)
    app.include_router(notifications_api.router)
    app.include_router(teams_api.router)
    app.include_router(lifecycle_api.router)
    if settings.dev_signin:
        require_dev_signin_safe(settings)
        # Loud on purpose: anyone who reaches this process can sign in as anyone.
        log(logger, logging.WARNING, "DEVELOPMENT sign-in is ON (IM_API_DEV_SIGNIN): never in production")
        app.include_router(dev_router)
    mount_console(app, settings)
    return app
