"""The outbox's write side: a unit of work (state change + outbox records in one MongoDB
transaction) and the size rules a record must meet before it is written. `relay.py` publishes
the records."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bson import ObjectId
from im_contracts.codec import event_headers
from im_contracts.events import Event
from im_contracts.topics import Topic
from im_runtime.logs import trace_id
from pymongo import AsyncMongoClient

from .errors import RecordTooLarge
from .settings import ApiSettings
from .store import Store, now

T = TypeVar("T")


def shard_of(key: bytes, shards: int) -> int:
    return zlib.crc32(key) % shards


# Bytes a record takes in a batch beyond its key, value and headers (batch header, varints):
# generous, so a record that passes the check is never refused by the broker for a few bytes.
RECORD_OVERHEAD = 512


def record_size(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    return len(key) + len(value) + sum(len(k.encode()) + len(v) for k, v in headers) + RECORD_OVERHEAD


# A trace id travels in every record's headers: bounded, so that the size check before a write
# (which cannot know every batch-mate's trace) is an upper bound of what the write publishes.
TRACE_MAX = 128


def event_fits(event: Event, key: bytes, max_record_bytes: int) -> bool:
    """Whether `event` can be published under the record limit (its headers at their largest)."""
    headers = event_headers(event, **{"trace-id": "0" * TRACE_MAX})
    return record_size(key, event.to_bytes(), headers) <= max_record_bytes


class Transaction:
    """One MongoDB transaction in progress: the session for state writes, and the events to publish."""

    def __init__(self, session: Any, shards: int, max_record_bytes: int) -> None:
        self.session = session
        self._shards = shards
        self.max_record_bytes = max_record_bytes
        self.records: list[dict[str, Any]] = []

    def fits(self, event: Event, key: bytes) -> bool:
        return event_fits(event, key, self.max_record_bytes)

    def publish(self, topic: Topic, event: Event, *, key: bytes, order_key: str, order: int,
                trace: str | None = None, field: str | None = None) -> None:
        """Queue `event` for `topic`; `order` increases per `order_key` (a conversation or agent).
        `trace`: the request that caused it, when not the current one (a group commit's other sends).
        Raises RecordTooLarge (naming `field`, what made it large) when no broker would take it: the
        transaction then writes nothing, instead of leaving a record the relay can never publish."""
        tid = (trace or trace_id.get() or event.event_id)[:TRACE_MAX]
        value = event.to_bytes()
        headers = event_headers(event, **{"trace-id": tid})
        if record_size(key, value, headers) > self.max_record_bytes:
            raise RecordTooLarge(
                f"this change needs a {event.type} record larger than the {self.max_record_bytes}-byte "
                "limit of this deployment", field=field)
        self.records.append({
            "_id": ObjectId(),
            "tenant_id": event.tenant_id,
            "shard": shard_of(order_key.encode(), self._shards),
            "conversation_id": order_key,
            "order": order,
            "topic": topic.base_name,
            "key": key,
            "value": value,
            "headers": [[k, v] for k, v in headers],
            "created_at": now(),
            "sent_at": None,
        })


class UnitOfWork:
    """Runs `work(tx)` in one transaction (retried on transient conflicts) with its outbox records;
    the same object serves HTTP and the Kafka consumers (assistance requests)."""

    def __init__(self, client: AsyncMongoClient, store: Store, settings: ApiSettings,
                 on_commit: Callable[[set[int]], None]) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.on_commit = on_commit

    async def run(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        shards: set[int] = set()

        async def callback(session: Any) -> T:
            nonlocal shards
            tx = Transaction(session, self.settings.outbox_shards, self.settings.max_record_bytes)
            result = await work(tx)
            if tx.records:
                await self.store.insert_outbox(tx.records, session=session)
            shards = {r["shard"] for r in tx.records}
            return result

        async with self.client.start_session() as session:
            result = await session.with_transaction(callback)
        if shards:
            self.on_commit(shards)
        return result
