"""Group commit of sends: every message posted by this process goes through the committer, which
commits one tenant's sends queued meanwhile in ONE transaction (one seq allocation per
conversation), so a busy thread never turns into a storm of conflicting, retried transactions.

Tenants are served round robin, each in a lane of its own: up to `lanes` tenants' transactions run
at once, one per tenant. A tenant flooding the process therefore delays another tenant's send by
at most one turn, never by its backlog nor by its batch in progress (tenants share no document,
so their transactions cannot conflict)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from im_contracts.events import MessagePosted
from im_contracts.topics import MESSAGES, conversation_key
from im_runtime.lanes import TenantLanes
from im_runtime.logs import log, trace_id
from im_runtime.shutdown import raise_if_cancelled
from pymongo.errors import DuplicateKeyError

from .errors import ApiError, Conflict, NotFound, RecordTooLarge
from .metrics import COMMIT_BATCH, COMMIT_SECONDS, MESSAGES_ACCEPTED
from .outbox import Transaction, UnitOfWork
from .store import Store, message_doc, now
from .views import message_model

logger = logging.getLogger("im_api.committer")

MAX_ATTEMPTS = 8  # a batch re-runs after a lost race (another process's seq or client_msg_id)


class StaleConversation(Exception):
    """The conversation changed between our read and write inside the transaction: re-run."""


@dataclass
class Send:
    tenant_id: str
    conversation_id: str
    sender_id: str
    body: str
    client_msg_id: str | None
    kind: str = "text"
    trace: str | None = None
    # More writes for the send's own transaction, given the new message (an assistance request's record).
    also: Callable[[Transaction, dict], Awaitable[None]] | None = None
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def idempotency_key(self) -> tuple[str, str, str, str] | None:
        if self.client_msg_id is None:
            return None
        return (self.tenant_id, self.conversation_id, self.sender_id, self.client_msg_id)


def _replay(send: Send, original: dict) -> tuple[dict, bool] | ApiError:
    """A retry of an earlier send: the original when the body matches, else 409."""
    if original["body"] == send.body:
        return original, False
    return Conflict("this client_msg_id was already used with another body",
                    code="idempotency_key_mismatch", field="client_msg_id")


class Committer:
    def __init__(self, uow: UnitOfWork, store: Store, batch_max: int, lanes: int = 1) -> None:
        self.uow = uow
        self.store = store
        self.batch_max = batch_max
        self.lanes = lanes
        self.pending: TenantLanes[str, Send] = TenantLanes()
        self._changed = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()
        self.batches = 0  # observability: transactions committed (tests/benchmarks read it)

    async def send(self, tenant_id: str, conversation_id: str, sender_id: str, body: str,
                   client_msg_id: str | None,
                   also: Callable[[Transaction, dict], Awaitable[None]] | None = None) -> tuple[dict, bool]:
        """Post one message; (stored message, created?) once its transaction committed."""
        item = Send(tenant_id, conversation_id, sender_id, body, client_msg_id, trace=trace_id.get(), also=also)
        self.pending.put(tenant_id, item)
        self._changed.set()
        return await asyncio.shield(item.future)

    async def run(self) -> None:
        try:
            while True:
                raise_if_cancelled()
                self._changed.clear()
                while len(self._in_flight) < self.lanes and (taken := self.pending.take(self.batch_max)):
                    task = asyncio.create_task(self._lane(*taken), name=f"commit-{taken[0]}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                await self._changed.wait()
        finally:
            # Stopping: the transactions under way finish (their senders are waiting for them);
            # `drain` then commits what is still queued.
            if self._in_flight:
                await asyncio.shield(asyncio.gather(*self._in_flight, return_exceptions=True))

    async def _lane(self, tenant_id: str, batch: list[Send]) -> None:
        try:
            await self._commit(batch)
        except Exception as exc:  # noqa: BLE001 - each caller gets the failure; the lanes go on
            log(logger, logging.WARNING, "send batch failed", size=len(batch), error=type(exc).__name__)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        finally:
            # The slot is free before run() wakes: its done-callback would come after run() had
            # looked, found every lane busy and gone back to sleep — leaving the queued sends
            # waiting for some new send to wake it.
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.discard(task)
            self.pending.done(tenant_id)
            self._changed.set()

    async def drain(self) -> None:
        """Commit what is queued (graceful shutdown)."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        while (taken := self.pending.take(self.batch_max)) is not None:
            await self._lane(*taken)

    async def _commit(self, batch: list[Send]) -> None:
        leaders: dict[tuple, Send] = {}
        pending: list[Send] = []
        for item in batch:
            key = item.idempotency_key
            if key is not None and key in leaders:
                # The same send twice in one batch: the second replays the first's outcome.
                leaders[key].future.add_done_callback(lambda f, item=item: _follow(item, f))
                continue
            if key is not None:
                leaders[key] = item
            pending.append(item)
        token = trace_id.set(batch[0].trace)
        try:
            for attempt in range(MAX_ATTEMPTS):
                # Optimistic: a first attempt writes straight away and the unique idempotency
                # index refuses a send whose client_msg_id is already stored (a client's retry,
                # rare); only the attempt after such a refusal reads the stored originals. A read
                # per batch before every transaction was a database command per send at low load.
                if attempt:
                    existing = await self.store.messages_by_client_ids(
                        [k for k in (i.idempotency_key for i in pending) if k is not None])
                    still = []
                    for item in pending:
                        original = existing.get(item.idempotency_key) if item.idempotency_key else None
                        if original is not None:
                            _settle(item, _replay(item, original))
                        else:
                            still.append(item)
                    pending = still
                    if not pending:
                        return
                began = time.perf_counter()
                try:
                    outcomes = await self.uow.run(lambda tx: self._write(tx, pending))
                except (DuplicateKeyError, StaleConversation) as exc:
                    log(logger, logging.INFO, "send batch raced; re-running", attempt=attempt,
                        error=type(exc).__name__)
                    continue
                self.batches += 1
                COMMIT_SECONDS.observe(time.perf_counter() - began)
                COMMIT_BATCH.observe(len(pending))
                for item, outcome in outcomes:
                    if not isinstance(outcome, BaseException):
                        MESSAGES_ACCEPTED.inc()
                    _settle(item, outcome)
                return
            raise RuntimeError("send batch kept racing")
        finally:
            trace_id.reset(token)

    async def _write(self, tx: Transaction, items: list[Send]) -> list[tuple[Send, Any]]:
        by_conversation: dict[tuple[str, str], list[Send]] = defaultdict(list)
        for item in items:
            by_conversation[(item.tenant_id, item.conversation_id)].append(item)
        outcomes: list[tuple[Send, Any]] = []
        messages: list[dict] = []
        for (tenant_id, conversation_id), sends in by_conversation.items():
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            accepted = []
            for item in sends:
                if conv is None or item.sender_id not in conv["participants"]:
                    outcomes.append((item, NotFound("no such conversation", field="conversation_id")))
                else:
                    accepted.append(item)
            if not accepted:
                continue
            seq, order, at = conv["last_seq"], conv.get("outbox_seq", 0), now()
            read_moves: dict[str, int] = {}
            last = None
            for item in accepted:
                doc = message_doc(tenant_id, conversation_id, seq + 1, item.sender_id, item.body, item.kind,
                                  item.client_msg_id, at)
                event = MessagePosted(tenant_id=tenant_id, message=message_model(doc),
                                      recipients=list(conv["participants"]))
                key = conversation_key(conversation_id)
                if not tx.fits(event, key):
                    # Refused alone, before it takes a seq: the batch's other sends commit.
                    outcomes.append((item, RecordTooLarge(
                        f"this message needs a record larger than the {tx.max_record_bytes}-byte limit "
                        "of this deployment", field="body")))
                    continue
                seq += 1
                order += 1
                messages.append(doc)
                if item.also is not None:
                    await item.also(tx, doc)
                read_moves[item.sender_id] = seq
                outcomes.append((item, (doc, True)))
                tx.publish(MESSAGES, event, key=key, order_key=conversation_id, order=order, trace=item.trace,
                           field="body")
                last = doc  # the newest message of this conversation
            if last is None:
                continue
            if not await self.store.advance(conv, last, outbox_seq=order, read=read_moves, session=tx.session):
                raise StaleConversation(conversation_id)
        if messages:
            await self.store.insert_messages(messages, session=tx.session)
        return outcomes


def _settle(item: Send, outcome: Any) -> None:
    if item.future.done():
        return
    if isinstance(outcome, BaseException):
        item.future.set_exception(outcome)
    else:
        item.future.set_result(outcome)


def _follow(item: Send, leader: asyncio.Future) -> None:
    if leader.cancelled() or leader.exception() is not None:
        _settle(item, leader.exception() or RuntimeError("cancelled"))
        return
    original, _ = leader.result()
    _settle(item, _replay(item, original))
