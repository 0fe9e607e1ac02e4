"""The notifier's work: events into agent documents, the sweep that decides, and the sends.

The consumers only raise fields (domain.updates_*), one bulk write per record. The sweep reads the
agents due by now, decides for each (a compare-and-set of the whole document) and starts the
attempts of every ready claim as tasks, bounded per process and per tenant, so one tenant's slow
receiver holds only its own sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from im_contracts.events import (
    AgentChanged,
    AgentPresence,
    ConversationStarted,
    MessageChanged,
    MessagePosted,
    ParticipantsChanged,
    ReadMarkerMoved,
    TeamRequestChanged,
    utcnow,
)
from im_contracts.models import ASSISTANCE_CLIENT_MSG_PREFIX
from im_contracts.notifications import PREVIEW_MAX_CHARS, TenantNotificationSettings
from im_contracts.topics import DEAD_LETTERS, agent_key
from im_contracts.codec import dead_letter_for
from im_runtime.kafka import RejectedRecord, TransientError
from im_runtime.logs import log
from prometheus_client import Counter, Histogram

from .domain import (
    Channel,
    Policy,
    attempt_deferred,
    attempt_finished,
    attempt_started,
    decide,
    out_of_tries,
    ready_claims,
    safe_id,
    update_for_agent,
    update_for_presence,
    update_for_read,
    updates_for_changed_message,
    updates_for_message,
    updates_for_redaction,
    updates_for_team_request,
)
from .render import dead_letter_value, digest_email, webhook_body
from .senders import MailSender, WebhookSender
from .settings import NotifierSettings
from .store import NotifierStore

logger = logging.getLogger("im_notifier")

NOTIFICATIONS = Counter("im_notifier_notifications_total",
                        "Notification attempts by channel and outcome (sent, retry, failed)", ["channel", "outcome"])
SKIPPED = Counter("im_notifier_skipped_total", "Threads not notified about, by channel and why", ["channel", "reason"])
DECISION_LAG = Histogram("im_notifier_decision_lag_seconds", "How late after its due time an agent was decided",
                         buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300))
DEFERRED = Counter("im_notifier_deferred_total",
                   "Attempts put off because this process (or the tenant) had every send slot in use", ["channel"])
ATTEMPT_SECONDS = Histogram("im_notifier_attempt_seconds", "One send attempt, by channel", ["channel"],
                            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# Compare-and-set rounds before an agent is left to the next sweep (consumers bump its version).
CAS_ROUNDS = 8


@dataclass
class Cached:
    settings: TenantNotificationSettings
    until: float


class Notifier:
    def __init__(self, store: NotifierStore, settings: NotifierSettings, webhooks: WebhookSender,
                 mail: MailSender, publish_dead_letter: Callable[[str, bytes, bytes], Awaitable[None]],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store, self.settings, self.webhooks, self.mail = store, settings, webhooks, mail
        self._publish_dead_letter = publish_dead_letter
        self._now = clock
        self._cache: dict[str, Cached] = {}
        self._in_flight = 0  # sends in flight in this process, and per tenant (bounded by the settings)
        self._tenant_in_flight: dict[str, int] = {}
        self._busy: set[tuple[str, str]] = set()  # agents this process is deciding or sending for
        self._tasks: set[asyncio.Task] = set()

    # --- tenant settings -----------------------------------------------------------------------

    async def tenant(self, tenant_id: str) -> TenantNotificationSettings:
        cached = self._cache.get(tenant_id)
        if cached is not None and cached.until > time.monotonic():
            return cached.settings
        settings = await self.store.settings(tenant_id)
        self._cache[tenant_id] = Cached(settings, time.monotonic() + self.settings.settings_cache_s)
        if len(self._cache) > 10_000:  # bounded: the oldest entries go
            for key in list(self._cache)[:1_000]:
                self._cache.pop(key, None)
        return settings

    def policy(self, tenant: TenantNotificationSettings) -> Policy:
        s = self.settings
        return Policy(
            delay=timedelta(seconds=tenant.delay_s), assistance_delay=timedelta(seconds=tenant.assistance_delay_s),
            digest_window=timedelta(seconds=tenant.digest_window_s),
            webhook=bool(tenant.webhook_url and tenant.webhook_secret),
            email=bool(tenant.email_enabled and self.mail.configured),
            max_tries=s.max_tries, retry_initial=timedelta(seconds=s.send_retry_initial_s),
            retry_max=timedelta(seconds=s.send_retry_max_s))

    # --- consumers ---------------------------------------------------------------------------

    async def on_thread_event(self, event: Any, record: Any) -> None:
        if isinstance(event, MessagePosted):
            await self._message(event)
        elif isinstance(event, MessageChanged):
            message = event.message
            if not safe_id(message.conversation_id):
                raise RejectedRecord("invalid_event", "conversation_id has characters the notifier cannot key")
            if event.change == "redacted":
                await self.store.apply(event.tenant_id, updates_for_redaction(
                    conversation_id=message.conversation_id, seq=message.seq, recipients=event.recipients,
                    question_removed=event.question_removed))
                for agent in event.recipients:
                    if not await self.store.forget_claimed(event.tenant_id, agent, message.conversation_id):
                        raise TransientError("an agent document kept changing while a redaction cleared its claims")
                return
            tenant = await self.tenant(event.tenant_id)
            keep = tenant.include_bodies and message.deleted_at is None
            await self.store.apply(event.tenant_id, updates_for_changed_message(
                conversation_id=message.conversation_id, seq=message.seq, recipients=event.recipients,
                preview=message.body[:PREVIEW_MAX_CHARS] if keep else None))
        elif isinstance(event, ReadMarkerMoved):
            if not safe_id(event.conversation_id):
                raise RejectedRecord("invalid_event", "conversation_id has characters the notifier cannot key")
            policy = self.policy(await self.tenant(event.tenant_id))
            if policy.notifies:
                # Upserted: a read may be consumed before the message it reads (another topic).
                await self.store.apply(event.tenant_id, [(event.agent_id, {}, update_for_read(
                    agent_id=event.agent_id, conversation_id=event.conversation_id, seq=event.seq), True)])
        elif isinstance(event, TeamRequestChanged):
            await self._team_request(event)
        elif isinstance(event, ConversationStarted | ParticipantsChanged):
            conv = event.conversation
            related = conv.related.model_dump(mode="json") if conv.related else None
            await self.store.save_thread(event.tenant_id, conv.id, related,
                                         {p.id: p.display_name for p in conv.participants}, event.occurred_at)

    async def _message(self, event: MessagePosted) -> None:
        message = event.message
        if message.kind != "text":
            return  # system lines (joins, leaves) notify nobody
        if not safe_id(message.conversation_id):
            raise RejectedRecord("invalid_event", "conversation_id has characters the notifier cannot key")
        tenant = await self.tenant(event.tenant_id)
        policy = self.policy(tenant)
        if not policy.notifies:
            return  # a tenant without notifications costs one cached settings read per message
        if self._now() - message.created_at > timedelta(seconds=self.settings.max_message_age_s):
            return  # a replay from far back (a new consumer group): old news, nobody is told
        assistance = (message.client_msg_id or "").startswith(ASSISTANCE_CLIENT_MSG_PREFIX)
        # The body is kept (its beginning) only where the tenant lets notifications carry it.
        preview = message.body[:PREVIEW_MAX_CHARS] if tenant.include_bodies else None
        ops = updates_for_message(
            conversation_id=message.conversation_id, seq=message.seq, sender_id=message.sender_id,
            recipients=event.recipients, at=message.created_at, preview=preview, assistance=assistance,
            due_after=policy.delay_for(assistance))
        await self.store.apply(event.tenant_id, ops)

    async def _team_request(self, event: TeamRequestChanged) -> None:
        request = event.request
        if not safe_id(request.conversation_id):
            raise RejectedRecord("invalid_event", "conversation_id has characters the notifier cannot key")
        tenant = await self.tenant(event.tenant_id)
        policy = self.policy(tenant)
        if not policy.notifies or event.seq < 1:
            return
        if event.change != "claimed" and self._now() - event.occurred_at > timedelta(
                seconds=self.settings.max_message_age_s):
            return  # an old offer replayed: nobody is told now
        preview = request.question[:PREVIEW_MAX_CHARS] if tenant.include_bodies and request.question else None
        await self.store.apply(event.tenant_id, updates_for_team_request(
            change=event.change, conversation_id=request.conversation_id, seq=event.seq,
            asked_by=request.asked_by.id, newly_offered=event.newly_offered, withdrawn_from=event.withdrawn_from,
            at=event.occurred_at, preview=preview, due_after=policy.delay_for(True)))

    async def on_agent_event(self, event: Any, record: Any) -> None:
        if isinstance(event, AgentPresence):
            policy = self.policy(await self.tenant(event.tenant_id))
            # The status is always kept (a tenant may turn notifications on later); a look at the
            # agent is scheduled only where a channel is on.
            due_after = min(policy.delay, policy.assistance_delay) if policy.notifies else None
            await self.store.apply_if_newer(event.tenant_id, event.agent_id, "status_at", event.occurred_at,
                                            update_for_presence(agent_id=event.agent_id, status=event.status,
                                                                at=event.occurred_at, due_after=due_after))
        elif isinstance(event, AgentChanged):
            # A newer name (a rename, an erasure) goes into the thread names first: a crash before
            # the agent's own update then leaves the name to change again on the redelivery.
            name, known_at = await self.store.agent_name(event.tenant_id, event.agent_id)
            if name is not None and name != event.display_name and known_at < event.occurred_at:
                await self.store.rename_in_threads(event.tenant_id, event.agent_id, event.display_name)
            await self.store.apply_if_newer(event.tenant_id, event.agent_id, "agent_at", event.occurred_at,
                                            update_for_agent(agent_id=event.agent_id, display_name=event.display_name,
                                                             email=event.email, active=event.active,
                                                             at=event.occurred_at))

    # --- the sweep ---------------------------------------------------------------------------

    async def run_sweeper(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - MongoDB away: the next round tries again
                log(logger, logging.WARNING, "sweep failed", error=type(exc).__name__)
            await asyncio.sleep(self.settings.sweep_interval_s)

    async def sweep(self) -> int:
        """Decides for every agent due by now (not already in hand here); returns how many."""
        now = self._now()
        due = [d for d in await self.store.due(now, self.settings.sweep_batch)
               if (d.tenant_id, d.agent_id) not in self._busy]
        for doc in due:
            DECISION_LAG.observe(max(0.0, (now - doc.due_at).total_seconds()))
            self._spawn(doc.tenant_id, doc.agent_id, self._look_at(doc))
        return len(due)

    def _spawn(self, tenant_id: str, agent_id: str, work: Awaitable[None]) -> None:
        key = (tenant_id, agent_id)
        self._busy.add(key)

        async def run() -> None:
            try:
                await work
            except Exception as exc:  # noqa: BLE001 - left due: the next sweep tries again
                log(logger, logging.WARNING, "notifying failed", tenant_id=tenant_id, agent_id=agent_id,
                    error=type(exc).__name__)
            finally:
                self._busy.discard(key)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _look_at(self, doc: Any) -> None:
        tenant_id, agent_id = doc.tenant_id, doc.agent_id
        for _ in range(CAS_ROUNDS):
            tenant = await self.tenant(tenant_id)
            policy = self.policy(tenant)
            prefs = await self.store.prefs(tenant_id, agent_id)
            now = self._now()
            decision = decide(doc, now, policy, prefs)
            if not decision.changed or await self.store.save(doc):
                for channel, why, count in decision.skipped:
                    SKIPPED.labels(channel, why).inc(count)
                break
            doc = await self.store.load(tenant_id, agent_id)
            if doc is None:
                return
        else:
            return  # busy document: the next sweep decides
        for claim in ready_claims(doc, self._now()):
            await self._attempt(tenant_id, agent_id, claim["channel"], claim["key"])

    async def _attempt(self, tenant_id: str, agent_id: str, channel: Channel, key: str) -> None:
        """One attempt of one claim: lease it, send, record the outcome."""
        if (self._in_flight >= self.settings.max_concurrent_sends
                or self._tenant_in_flight.get(tenant_id, 0) >= self.settings.max_concurrent_sends_per_tenant):
            # Full: the claim waits in MongoDB, not here. Moved behind everything due now, it
            # cannot hold the front of the next sweep's read (one tenant's hanging receiver with
            # hundreds of agents due would otherwise fill every sweep and starve the others).
            await self._defer(tenant_id, agent_id, channel, key)
            return
        self._in_flight += 1
        self._tenant_in_flight[tenant_id] = self._tenant_in_flight.get(tenant_id, 0) + 1
        try:
            await self._attempt_now(tenant_id, agent_id, channel, key)
        finally:
            self._in_flight -= 1
            left = self._tenant_in_flight.pop(tenant_id) - 1
            if left:
                self._tenant_in_flight[tenant_id] = left

    async def _defer(self, tenant_id: str, agent_id: str, channel: Channel, key: str) -> None:
        tenant = await self.tenant(tenant_id)
        until = self._now() + timedelta(seconds=self.settings.saturated_defer_s)
        for _ in range(CAS_ROUNDS):
            doc = await self.store.load(tenant_id, agent_id)
            if doc is None or not attempt_deferred(doc, channel, key, until, self.policy(tenant)):
                return
            if await self.store.save(doc):
                DEFERRED.labels(channel).inc()
                return

    async def _attempt_now(self, tenant_id: str, agent_id: str, channel: Channel, key: str) -> None:
        tenant = await self.tenant(tenant_id)
        policy = self.policy(tenant)
        lease = timedelta(seconds=self.settings.attempt_timeout_s + self.settings.lease_grace_s)
        for _ in range(CAS_ROUNDS):
            doc = await self.store.load(tenant_id, agent_id)
            if doc is None:
                return
            if out_of_tries(doc, channel, key, self._now(), policy):
                # Its last attempt never wrote an outcome (the process stopped mid-send).
                claim = doc.outgoing[channel]
                await self._finish(tenant_id, agent_id, channel, claim, tenant,
                                   claim.get("error") or "no outcome recorded (the sending process stopped)")
                return
            if not attempt_started(doc, channel, key, self._now(), lease, policy):
                return
            if await self.store.save(doc):
                break
        else:
            return
        claim = doc.outgoing[channel]
        began = time.perf_counter()
        try:
            error = await self._send(doc, claim, tenant)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the attempt's outcome is recorded
            error = f"{type(exc).__name__} while sending"
        ATTEMPT_SECONDS.labels(channel).observe(time.perf_counter() - began)
        await self._finish(tenant_id, agent_id, channel, claim, tenant, error)

    async def _finish(self, tenant_id: str, agent_id: str, channel: Channel, claim: dict[str, Any],
                      tenant: TenantNotificationSettings, error: str | None) -> None:
        """Records an attempt's outcome: sent, another try later, or given up (dead letter first)."""
        key, lettered = claim["key"], False
        for _ in range(CAS_ROUNDS * 4):
            doc = await self.store.load(tenant_id, agent_id)
            if doc is None:
                return
            outcome = attempt_finished(doc, channel, key, self._now(), self.policy(tenant), error)
            if outcome == "dead" and not lettered:
                # The dead letter first: a crash before the outcome is written tries once more (and
                # may letter twice), never drops the notification without one.
                await self._publish_dead_letter(f"{channel}_failed", agent_key(tenant_id, agent_id),
                                                dead_letter_value({**claim, "error": error}), tenant_id=tenant_id,
                                                detail=f"{claim['attempts']} tries; last: {error}")
                lettered = True
            if outcome == "gone" or await self.store.save(doc):
                break
        else:
            # The outcome could not be written: the lease runs out and the claim is tried again
            # with the same key (a receiver drops the repeat; an email repeats its Message-ID).
            return
        if outcome == "gone":
            return
        NOTIFICATIONS.labels(channel, "failed" if outcome == "dead" else outcome).inc()
        log(logger, logging.INFO if outcome == "sent" else logging.WARNING, f"notification {outcome}",
            tenant_id=tenant_id, agent_id=agent_id, channel=channel, key=key, attempts=claim["attempts"],
            threads=len(claim["threads"]), error=error)

    async def _send(self, doc: Any, claim: dict[str, Any], tenant: TenantNotificationSettings) -> str | None:
        cids = [t["conversation_id"] for t in claim["threads"]]
        meta = await self.store.threads(doc.tenant_id, cids)
        names: dict[str, str] = {}
        for thread in meta.values():
            names.update(thread.get("names") or {})
        template = self.settings.thread_url_template
        if claim["channel"] == "webhook":
            if not (tenant.webhook_url and tenant.webhook_secret):
                return "the tenant has no webhook any more"
            body = webhook_body(tenant_id=doc.tenant_id, agent_id=doc.agent_id, agent_name=doc.display_name,
                                claim=claim, meta=meta, names=names, include_bodies=tenant.include_bodies,
                                url_template=template)
            return await self.webhooks.send(tenant.webhook_url, tenant.webhook_secret, claim["key"], body)
        message = digest_email(sender=self.settings.smtp_from, to=doc.email, agent_name=doc.display_name,
                               claim=claim, meta=meta, names=names, include_bodies=tenant.include_bodies,
                               url_template=template)
        return await self.mail.send(message)

    async def stop(self) -> None:
        """Lets the attempts in flight finish (their outcome is written), within the shutdown time."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_timeout_s)


def dead_letter_publisher(producer: Any, settings: NotifierSettings) -> Callable[..., Awaitable[None]]:
    """A notification that exhausted its tries, on im.dead-letters.v1 like every rejected record."""

    async def publish(reason: str, key: bytes, value: bytes, *, tenant_id: str, detail: str) -> None:
        letter = dead_letter_for(topic=f"notifier.{reason.split('_')[0]}", partition=-1, offset=-1, key=key,
                                 value=value, headers=[], reason=reason, detail=detail, consumer="im-notifier",
                                 tenant_id=tenant_id)
        await producer.send_and_wait(DEAD_LETTERS.name(settings.topic_prefix), letter.to_bytes(), key=key)

    return publish
