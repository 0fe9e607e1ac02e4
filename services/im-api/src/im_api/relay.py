"""The outbox relay: publishes pending outbox records to Kafka, sharded by ordering key under
fenced leases, in (conversation, order) order; a record Kafka can never take is set aside."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from bson import ObjectId
from im_contracts.codec import dead_letter_for
from im_contracts.events import DeadLetter
from im_contracts.topics import ALL_TOPICS, DEAD_LETTERS
from im_runtime.logs import log
from im_runtime.shutdown import raise_if_cancelled
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from .metrics import DEAD_LETTERED, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PUBLISHED, OUTBOX_SHARDS_HELD
from .settings import ApiSettings
from .store import Store, now

logger = logging.getLogger("im_api.relay")
TOPICS_BY_BASE = {t.base_name: t for t in ALL_TOPICS}
# What no retry of the same record can fix: it is too large for the producer or the topic. Such a
# record is set aside (dead-lettered) and the shard goes on. A record over the producer's batch
# size travels alone in its batch, so the refusal is its own, never a batch-mate's. Everything
# else is transient and the whole burst is retried — including errors that look permanent but
# are about the batch or the deployment, not the record (a timestamp refused because this host's
# clock drifted, a message format the topic's configuration refuses): setting records aside for
# those would silently drop acknowledged messages.
PERMANENT_PUBLISH_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
RELAY_CONSUMER = "im-api-outbox-relay"


async def _abort(producer: AIOKafkaProducer) -> None:
    """Kill a producer whose stop() could not flush: otherwise its sender keeps retrying the old
    batches and lands them when the broker returns, beside the next producer's resend of the same
    records (test_outbox's Kafka-outage test then sees a message twice). aiokafka has no public
    "close without flush" — its stop() waits for the broker forever (aio-libs/aiokafka#1101,
    #1013) — so this reaches into it (the version is pinned)."""
    with contextlib.suppress(Exception):
        producer._message_accumulator.fail_all(KafkaConnectionError("producer discarded"))
        sender = producer._sender
        if sender is not None:
            if sender.sender_task is not None:
                # Its done-callback trips over aiokafka's idempotence bookkeeping when cancelled.
                sender.sender_task.remove_done_callback(sender._fail_all)
            async with asyncio.timeout(2.0):
                await sender.close()
        async with asyncio.timeout(2.0):
            await producer.client.close()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class LeaseLost(Exception):
    pass


@dataclass(frozen=True)
class LeasePlan:
    fair: int  # the most shards this relay may hold
    release: list[int]  # held shards above that, given up
    claim_order: list[int]  # the order free shards are tried in, until `fair` are held


def lease_plan(shards: int, live_relays: int, held: Iterable[int], owner: str) -> LeasePlan:
    """A relay's fair share of the shards among the live relays. Above it, the highest shards are
    given up (another relay claims them at its next round); below it, free shards are tried from a
    start its owner name hashes to, so relays starting together spread out instead of all racing
    for shard 0."""
    fair = math.ceil(shards / max(live_relays, 1))
    highest_first = sorted(held, reverse=True)
    release = highest_first[: max(0, len(highest_first) - fair)]
    start = zlib.crc32(owner.encode()) % shards
    return LeasePlan(fair, release, [(start + i) % shards for i in range(shards)])


@dataclass
class Rounds:
    """Which held shards the next relay round reads: those local commits wrote to since the last
    round, or every held one — at start, after a failed round, on a newly acquired shard, and at
    least every `poll_s` for other processes' records. A round reads them all in one query."""

    poll_s: float
    dirty: set[int] = field(default_factory=set)
    everything: bool = True
    next_full: float = 0.0

    def wrote(self, shards: set[int] | None) -> None:
        if shards is None:
            self.everything = True
        else:
            self.dirty.update(shards)

    def wait_s(self, now: float) -> float:
        """How long the loop may sleep without a wake: never past the next full round's due time,
        so other processes' records wait at most `poll_s` whatever partial rounds ran meanwhile."""
        return max(0.0, min(self.poll_s, self.next_full - now))

    def next(self, held: Iterable[int], now: float) -> list[int]:
        if self.everything or now >= self.next_full:
            self.everything = False
            self.dirty.clear()
            self.next_full = now + self.poll_s
            return list(held)
        shards = [shard for shard in held if shard in self.dirty]
        self.dirty.clear()
        return shards


@dataclass
class Relay:
    """Holds a fair share of the outbox shards through leases and publishes their pending records
    in (conversation, order) order; woken by local commits, polls for other processes' records."""

    store: Store
    client: AsyncMongoClient
    settings: ApiSettings
    make_producer: Callable[[], AIOKafkaProducer]
    owner: str
    held: dict[int, int] = field(default_factory=dict)  # shard -> fencing token
    valid_until: dict[int, float] = field(default_factory=dict)  # shard -> monotonic deadline
    kafka_ok: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    rounds: Rounds = field(init=False)

    def __post_init__(self) -> None:
        self.rounds = Rounds(self.settings.outbox_poll_s)

    def wake(self, shards: set[int] | None = None) -> None:
        """Local commits wrote to `shards` (None: look at every held shard)."""
        self.rounds.wrote(shards)
        self._wake.set()

    def halt(self) -> None:
        """Ends both loops at their next round: a stop that does not depend on the cancellation
        getting through (see im_runtime.shutdown.raise_if_cancelled)."""
        self._stopping = True
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        # Leases are renewed by their own task, so a long produce burst (Kafka slow or down) never
        # lets a live relay's leases lapse under it and a second relay publish the same shard.
        leases = asyncio.create_task(self._lease_loop(), name="outbox-leases")
        try:
            await self._publish_loop()
        finally:
            leases.cancel()
            await asyncio.gather(leases, return_exceptions=True)

    async def _lease_loop(self) -> None:
        while not self._stopping:
            raise_if_cancelled()
            try:
                await self._lease_round()
                await self._measure_backlog()
            except Exception:  # noqa: BLE001 - a bug here must not stop renewals (publishing would stop)
                logger.exception("lease round failed")
            await asyncio.sleep(self.settings.outbox_lease_renew_s)  # the renewal period itself

    async def _publish_loop(self) -> None:
        producer: AIOKafkaProducer | None = None
        delay = self.settings.retry_initial_s
        try:
            while not self._stopping:
                raise_if_cancelled()
                self._wake.clear()
                try:
                    if producer is None:
                        producer = self.make_producer()
                        async with asyncio.timeout(self.settings.outbox_publish_timeout_s):
                            await producer.start()
                    busy = await self._publish_held(producer, self.rounds.next(self.held, time.monotonic()))
                    self.kafka_ok = True
                    delay = self.settings.retry_initial_s
                except (LeaseLost, PyMongoError) as exc:
                    log(logger, logging.WARNING, "outbox round failed", error=type(exc).__name__)
                    self.rounds.wrote(None)  # the shards of the failed round still have their records
                    busy = False
                except Exception as exc:  # noqa: BLE001 - Kafka down/timeouts: rebuild the producer, back off
                    self.rounds.wrote(None)
                    self.kafka_ok = False
                    log(logger, logging.WARNING, "publishing failed; retrying", error=type(exc).__name__,
                        retry_in_s=round(delay, 3))
                    await self._discard(producer)
                    producer = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.retry_max_s)
                    continue
                if busy:
                    continue
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                try:
                    async with asyncio.timeout(self.rounds.wait_s(time.monotonic())):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            if producer is not None:
                await self._discard(producer, flush=True)

    async def _measure_backlog(self) -> None:
        """Backlog and age of the oldest unsent record, over the shards held (sums across relays)."""
        OUTBOX_SHARDS_HELD.set(len(self.held))
        try:
            backlog, oldest = await self.store.outbox_backlog(sorted(self.held))
        except PyMongoError:
            return  # the lease round has logged it; the gauges keep their last value
        OUTBOX_BACKLOG.set(backlog)
        age = (now() - _aware(oldest)).total_seconds() if oldest else 0.0
        OUTBOX_OLDEST_AGE.set(max(0.0, age))

    async def stop(self) -> None:
        """Called after the task ended: hand the shards over at once instead of waiting for expiry."""
        self._stopping = True
        try:
            for shard, token in list(self.held.items()):
                await self.store.release_lease(shard, self.owner, token)
            await self.store.relay_gone(self.owner)
        except PyMongoError as exc:
            log(logger, logging.WARNING, "could not release outbox leases", error=type(exc).__name__)
        self.held.clear()

    async def _discard(self, producer: AIOKafkaProducer | None, flush: bool = False) -> None:
        if producer is None:
            return
        try:
            async with asyncio.timeout(self.settings.outbox_publish_timeout_s if flush else 2.0):
                await producer.stop()
        except Exception as exc:  # noqa: BLE001 - a dead broker cannot be flushed; the records stay pending
            log(logger, logging.INFO, "producer stopped uncleanly", error=type(exc).__name__)
            await _abort(producer)

    # --- leases ---------------------------------------------------------------------------

    async def _lease_round(self) -> None:
        s = self.settings
        try:
            started = time.monotonic()
            t = now()
            ttl = timedelta(seconds=s.outbox_lease_ttl_s)
            await self.store.relay_alive(self.owner, t + ttl)
            live = await self.store.live_relays(t)
            for shard, token in list(self.held.items()):
                if await self.store.renew_lease(shard, self.owner, token, t + ttl):
                    self.valid_until[shard] = started + s.outbox_lease_ttl_s - s.outbox_lease_renew_s
                else:
                    self._drop(shard)
            plan = lease_plan(s.outbox_shards, live, self.held, self.owner)
            for shard in plan.release:
                await self.store.release_lease(shard, self.owner, self.held[shard])
                self._drop(shard)
            for shard in plan.claim_order:
                if len(self.held) >= plan.fair:
                    break
                if shard not in self.held:
                    await self._claim(shard, t, ttl, started)
        except PyMongoError as exc:
            log(logger, logging.WARNING, "lease round failed", error=type(exc).__name__)
        for shard in [sh for sh, until in self.valid_until.items() if until < time.monotonic()]:
            self._drop(shard)

    async def _claim(self, shard: int, t: datetime, ttl: timedelta, started: float) -> None:
        token = await self.store.claim_lease(shard, self.owner, t, t + ttl)
        if token is None:
            return  # held by another relay
        self.held[shard] = token
        self.valid_until[shard] = started + self.settings.outbox_lease_ttl_s - self.settings.outbox_lease_renew_s
        log(logger, logging.INFO, "outbox shard acquired", shard=shard, token=token)
        self.wake()  # its pending records are published at once, not at the next poll

    def _drop(self, shard: int) -> None:
        self.held.pop(shard, None)
        self.valid_until.pop(shard, None)

    # --- publishing -----------------------------------------------------------------------

    async def _publish_held(self, producer: AIOKafkaProducer, shards: list[int]) -> bool:
        """One round over `shards`: one read of all their unsent records, one burst, one fenced
        mark. When that read comes back full (a backlog), the round goes shard by shard instead, so
        one shard's backlog — a flooding tenant's conversation — never holds the others back.
        True when records are known to wait behind the round."""
        limit = self.settings.outbox_batch
        # The tokens the records are read under (the lease task may drop a shard meanwhile).
        tokens = {shard: self.held[shard] for shard in shards
                  if shard in self.held and self.valid_until.get(shard, 0) > time.monotonic()}
        live = list(tokens)
        if not live:
            return False
        pending = await self.store.pending(live, limit)
        if len(pending) < limit or len(live) == 1:
            await self._burst(producer, pending, tokens)
            if len(pending) < limit:
                return False
            self.rounds.wrote(set(live))  # more behind this burst: the next round, at once
            return True
        busy = False
        for shard in live:
            token = self.held.get(shard)
            if token is None:
                continue
            records = await self.store.pending([shard], limit)
            await self._burst(producer, records, {shard: token})
            if len(records) >= limit:
                self.rounds.wrote({shard})
                busy = True
        return busy

    async def _burst(self, producer: AIOKafkaProducer, pending: list[dict], tokens: dict[int, int]) -> None:
        """Publishes `pending` (records of held shards, read under `tokens`) and marks them sent,
        fenced by those leases."""
        if not pending:
            return
        leases = {r["shard"]: tokens[r["shard"]] for r in pending}
        # Which relay published which shards under which fencing tokens, and when: what to read
        # when two relays are suspected of publishing one shard at once.
        log(logger, logging.DEBUG, "outbox burst started", owner=self.owner, leases=leases, records=len(pending))
        try:
            refused, failed = await self._send(producer, pending)
            for r, exc in refused:
                await self._set_aside(producer, r, exc)
        finally:
            log(logger, logging.DEBUG, "outbox burst ended", owner=self.owner, leases=leases)
        set_aside = {r["_id"]: _reason(exc) for r, exc in refused}
        if failed:
            # Typically the records behind a broker's refusal on its partition: an idempotent
            # producer's sequence is broken there (OutOfOrderSequenceNumber for each) until it
            # is rebuilt. The refused ones are put aside now, so the retry of the burst by a new
            # producer (at-least-once, as after any failed burst) never meets them again.
            if set_aside:
                await self._mark_sent(leases, [r for r, _ in refused], set_aside)
            raise failed[0]
        await self._mark_sent(leases, pending, set_aside)
        for r in pending:
            if r["_id"] not in set_aside:
                OUTBOX_PUBLISHED.labels(r["topic"]).inc()

    async def _send(self, producer: AIOKafkaProducer,
                    records: list[dict]) -> tuple[list[tuple[dict, BaseException]], list[BaseException]]:
        """Publishes `records`: (those refused for good (PERMANENT_PUBLISH_ERRORS), the other
        failures). With no other failure, every record not refused landed."""
        prefix = self.settings.topic_prefix

        async def send_all() -> tuple[list[tuple[dict, BaseException]], list[BaseException]]:
            sent: list[tuple[dict, Any]] = []
            for r in records:
                topic = TOPICS_BY_BASE[r["topic"]].name(prefix)
                headers = [(k, bytes(v)) for k, v in r["headers"]]
                try:
                    sent.append((r, await producer.send(topic, bytes(r["value"]), key=bytes(r["key"]),
                                                        headers=headers)))
                except PERMANENT_PUBLISH_ERRORS as exc:  # refused before it left (max_request_size)
                    sent.append((r, exc))
            # Wait for every one (never resend while an earlier attempt may still land).
            futures = [f for _, f in sent if isinstance(f, asyncio.Future)]
            results = iter(await asyncio.gather(*futures, return_exceptions=True))
            outcomes = [(r, next(results) if isinstance(f, asyncio.Future) else f) for r, f in sent]
            refused = [(r, x) for r, x in outcomes if isinstance(x, PERMANENT_PUBLISH_ERRORS)]
            failed = [x for _, x in outcomes
                      if isinstance(x, BaseException) and not isinstance(x, PERMANENT_PUBLISH_ERRORS)]
            return refused, failed

        async with asyncio.timeout(self.settings.outbox_publish_timeout_s):
            return await send_all()

    async def _set_aside(self, producer: AIOKafkaProducer, record: dict, exc: BaseException) -> None:
        """A record Kafka will never take goes to the dead-letter topic (bounded, with its size and
        digest; partition and offset -1: it never had a place) instead of blocking its shard."""
        reason = _reason(exc)
        topic = TOPICS_BY_BASE[record["topic"]].name(self.settings.topic_prefix)
        letter = dead_letter_for(
            topic=topic, partition=-1, offset=-1, key=bytes(record["key"]), value=bytes(record["value"]),
            headers=[(k, bytes(v)) for k, v in record["headers"]], reason=reason,
            detail=f"Kafka refused the outbox record: {type(exc).__name__}", consumer=RELAY_CONSUMER,
            tenant_id=record["tenant_id"],
            # The letter must fit where the record did not: base64 grows by 4/3, so half the limit.
            keep_bytes=min(DeadLetter.KEPT_VALUE_BYTES, self.settings.max_record_bytes // 2))
        # Bounded like a burst: an idempotent producer never expires a batch on its own, and a
        # dead-letter partition without a leader must not hold every shard of this relay.
        async with asyncio.timeout(self.settings.outbox_publish_timeout_s):
            await producer.send_and_wait(DEAD_LETTERS.name(self.settings.topic_prefix), letter.to_bytes(),
                                         key=bytes(record["key"]))
        DEAD_LETTERED.labels(topic, reason).inc()
        log(logger, logging.ERROR, "outbox record set aside", tenant_id=record["tenant_id"], topic=topic,
            reason=reason, error=type(exc).__name__, bytes=len(record["value"]),
            conversation_id=record["conversation_id"], order=record["order"])

    async def _mark_sent(self, leases: dict[int, int], records: list[dict],
                         set_aside: dict[ObjectId, str] | None = None) -> None:
        """Fenced by `leases` (shard → the token the records were read under): writes those lease
        rows in the same transaction, so a takeover conflicts with it. A shard lost meanwhile is
        dropped and its records left for its new holder; the records of the shards still held are
        marked (not published twice). `set_aside`: records dead-lettered instead (id → reason),
        kept marked for operators."""
        shards = {r["shard"] for r in records}
        leases = {shard: token for shard, token in leases.items() if shard in shards}
        lost: set[int] = set()
        if not await self._mark_fenced(leases, records, set_aside or {}):
            still = await self.store.leases_held(leases, self.owner)
            lost |= set(leases) - still
            leases = {shard: token for shard, token in leases.items() if shard in still}
            if leases and not await self._mark_fenced(leases, records, set_aside or {}):
                lost |= set(leases)
        for shard in lost:
            self._drop(shard)
        if lost:
            raise LeaseLost(f"shards {sorted(lost)}")

    async def _mark_fenced(self, leases: dict[int, int], records: list[dict], set_aside: dict[ObjectId, str]) -> bool:
        ids = [r["_id"] for r in records if r["shard"] in leases]
        marked = set(ids)
        aside = {i: reason for i, reason in set_aside.items() if i in marked}

        async def callback(session: Any) -> None:
            if not await self.store.mark_sent(leases, self.owner, ids, aside, session):
                raise LeaseLost(f"shards {sorted(leases)}")

        try:
            async with self.client.start_session() as session:
                await session.with_transaction(callback)
        except LeaseLost:
            return False
        return True


def _reason(exc: BaseException) -> str:
    return "record_too_large"
