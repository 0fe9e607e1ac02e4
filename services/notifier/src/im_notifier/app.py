"""The composition root of the notifier: builds the clients, wires the consumers and the sweeper,
runs them for the app's lifespan."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from im_contracts.events import utcnow
from im_contracts.topics import AGENTS, CONVERSATIONS, MESSAGES, PRESENCE
from im_runtime.health import Readiness, health_router
from im_runtime.kafka import DeadLetters, Subscription, broker_security
from im_runtime.logs import log
from im_runtime.process import Process
from im_runtime.webhook_urls import networks
from prometheus_client import Counter

from .retention import PreviewRetention
from .senders import MailSender, WebhookSender
from .service import Notifier, dead_letter_publisher
from .settings import NotifierSettings
from .store import NotifierStore

logger = logging.getLogger("im_notifier")

DEAD_LETTERED = Counter("im_notifier_dead_letters_total", "Records dead-lettered", ["topic", "reason"])


class NotifierProcess:
    """Everything one notifier process runs, started and stopped through `im_runtime.process.Process`."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.process = Process("notifier", settings, logger, settings.shutdown_timeout_s)
        self.notifier: Notifier | None = None

    @property
    def readiness(self) -> Readiness:
        return self.process.readiness

    async def start(self) -> None:
        # Stopped in the reverse order: the sweeper, the consumers (finishing their batch), the
        # sends in flight (writing their outcome), the HTTP session, the producer, MongoDB.
        settings, process = self.settings, self.process
        allowed = networks(settings.webhook_allowed_networks.split(","))
        _, db = await process.connect_mongo()
        store = NotifierStore(db)
        await process.start("mongodb indexes", store.ensure_indexes)
        producer = await process.start_producer(flush=False)
        webhooks = WebhookSender(allow_http=settings.webhook_allow_http, allowed=allowed,
                                 timeout_s=settings.attempt_timeout_s)
        await process.start("webhook client", webhooks.start, stop=webhooks.close, kind="close")
        mail = MailSender(host=settings.smtp_host, port=settings.smtp_port, security=settings.smtp_security,
                          username=settings.smtp_username,
                          password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                          timeout_s=settings.attempt_timeout_s)
        self.notifier = notifier = Notifier(store, settings, webhooks, mail, dead_letter_publisher(producer, settings))
        process.on_stop("drain", "sends in flight", notifier.stop)
        dead_letters = DeadLetters(producer, settings, "im-notifier",
                                   on_dead_letter=lambda topic, reason: DEAD_LETTERED.labels(topic, reason).inc())
        broker = KafkaBroker(settings.kafka_bootstrap, logger=logging.getLogger("im_notifier.faststream"),
                             log_level=logging.DEBUG, graceful_timeout=settings.shutdown_timeout_s,
                             security=broker_security(settings))
        subscriptions = [
            Subscription(name="notifier-threads", topics=[MESSAGES, CONVERSATIONS],
                         group_id=f"{settings.topic_prefix}{settings.threads_group}",
                         handle=notifier.on_thread_event, dead_letters=dead_letters, settings=settings,
                         max_records=settings.max_records),
            Subscription(name="notifier-agents", topics=[PRESENCE, AGENTS],
                         group_id=f"{settings.topic_prefix}{settings.agents_group}",
                         handle=notifier.on_agent_event, dead_letters=dead_letters, settings=settings,
                         max_records=settings.max_records),
        ]
        subscribers = [s.register(broker) for s in subscriptions]
        await process.start("kafka consumers", broker.start, stop=broker.stop)
        process.supervise("notifier-sweeper", notifier.run_sweeper)
        retention = PreviewRetention(db, store, utcnow)
        process.supervise("notifier-retention", lambda: retention.run(settings.retention_interval_s))

        async def kafka_reachable() -> bool:
            return bool(await producer.client.force_metadata_update())

        async def joined() -> bool:
            return all(sub.consumer is not None for sub in subscribers) and all(
                s.membership.joined for s in subscriptions)

        process.check("kafka", kafka_reachable)
        process.check("consumers_joined", joined)
        log(logger, logging.INFO, "notifier started", smtp=bool(settings.smtp_host),
            thread_links=bool(settings.thread_url_template))

    async def stop(self) -> None:
        await self.process.stop()


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    """The HTTP face of a notifier process (health and metrics only) with the process in its lifespan."""
    settings = settings or NotifierSettings()
    notifier = NotifierProcess(settings)
    app = FastAPI(title="Helpdesk IM notifier", lifespan=notifier.process.lifespan(notifier.start))
    app.include_router(health_router(notifier.readiness))
    app.state.process = notifier
    return app
