"""Helpers for the assistance-request tests: producing records as another service would, reading results."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from im_contracts.topics import ASSISTANCE_REQUESTS
from imctl.tokens import mint


def service_token(secret: str, tenant: str, role: str = "service", subject: str = "ticketing",
                  audience: str | None = "im-kafka") -> str:
    """A token for a Kafka record's header (the `im-kafka` audience; None: an HTTP token)."""
    return mint(secret, tenant, subject, role, ttl_s=600, audience=audience)


def request_doc(tenant: str, requested_by: str, agent_ids: list[str], ticket: str = "T-1",
                message: str = "Can you help with this customer?", request_id: str | None = None,
                **extra: Any) -> dict[str, Any]:
    """An AssistanceRequested as a producer outside this codebase writes it (no `type` field)."""
    return {"event_id": uuid.uuid4().hex, "tenant_id": tenant, "occurred_at": "2026-11-25T22:00:00.000Z",
            "schema_version": 1, "request_id": request_id or uuid.uuid4().hex, "requested_by": requested_by,
            "agent_ids": agent_ids, "related": {"type": "ticket", "id": ticket, "title": "Printer"},
            "message": message, **extra}


class Producer:
    """Sends raw records to the assistance topic (any bytes, any headers)."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.topic = ASSISTANCE_REQUESTS.name(prefix)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def __aenter__(self) -> Producer:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, value: bytes | dict, *, token: str | None, key: bytes = b"acme:ticket:T-1",
                   headers: list[tuple[str, bytes]] | None = None) -> tuple[int, int]:
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        hdrs = list(headers or [])
        if token is not None:
            hdrs.append(("authorization", f"Bearer {token}".encode()))
        meta = await self.producer.send_and_wait(self.topic, raw, key=key, headers=hdrs)
        return meta.partition, meta.offset


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()


async def rewind_group(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commits `offsets` for `group` (which must have no member now), as an operator's offset reset
    would: its next member reads those records again."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))  # by hand: no group join
        await consumer.commit(offsets)
    finally:
        await consumer.stop()
