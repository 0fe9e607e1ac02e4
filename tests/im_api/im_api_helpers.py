"""Helpers for the im-api tests: the app in-process, tokens, and reading what reached Kafka."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from im_api.app import create_app
from im_api.settings import ApiSettings
from imctl.tokens import mint
from im_contracts.codec import decode_record
from im_contracts.topics import Topic

from support.wait import eventually


def fast_settings(**overrides: Any) -> ApiSettings:
    """Every interval shortened so the tests never wait on a production default."""
    base = dict(outbox_lease_ttl_s=1.5, outbox_lease_renew_s=0.3, outbox_poll_s=0.1,
                outbox_publish_timeout_s=4.0, retry_initial_s=0.05, retry_max_s=0.5, connect_timeout_s=20.0,
                # Unlimited but in test_rate_limits.py: here they would only throttle the tests' load.
                send_rate_per_agent=0, send_rate_per_tenant=0, ticket_rate_per_agent=0, ticket_rate_per_tenant=0)
    base.update(overrides)
    return ApiSettings(**base)


def token(secret: str, tenant: str, subject: str, role: str = "agent", ttl_s: int = 3600, **claims: Any) -> str:
    return mint(secret, tenant, subject, role, ttl_s, **claims)


@dataclass
class Api:
    """An im-api instance in this process, and an HTTP client speaking to it through ASGI."""

    app: Any
    http: httpx.AsyncClient
    secret: str
    settings: ApiSettings
    names: dict = field(default_factory=dict)

    def auth(self, tenant: str, agent: str, role: str = "agent", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(self.secret, tenant, agent, role, **claims)}"}

    def admin(self, tenant: str) -> dict[str, str]:
        return self.auth(tenant, "root", "admin")

    async def add_agents(self, tenant: str, *agents: str) -> None:
        for agent in agents:
            r = await self.http.put(f"/v1/agents/{agent}", json={"display_name": agent.capitalize()},
                                    headers=self.admin(tenant))
            assert r.status_code == 200, r.text

    async def start(self, tenant: str, me: str, *others: str, **body: Any) -> dict:
        r = await self.http.post("/v1/conversations", json={"participant_ids": list(others), **body},
                                 headers=self.auth(tenant, me))
        assert r.status_code in (200, 201), r.text
        return r.json()

    async def send(self, tenant: str, me: str, conversation_id: str, body: str, client_msg_id: str) -> httpx.Response:
        return await self.http.post(f"/v1/conversations/{conversation_id}/messages",
                                    json={"body": body, "client_msg_id": client_msg_id},
                                    headers=self.auth(tenant, me))


@contextlib.asynccontextmanager
async def running(settings: ApiSettings, **mongo_options: Any) -> AsyncIterator[Api]:
    app = create_app(settings, mongo_options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://im-api", timeout=30) as http:
            yield Api(app, http, settings.jwt_secret.get_secret_value(), settings)


async def read_events(bootstrap: str, topic: Topic, prefix: str, count: int, timeout: float = 30.0,
                      settle_s: float = 0.0) -> list:
    """Every event on `topic` from the beginning, once at least `count` arrived (then `settle_s`
    more, to catch duplicates), in partition order."""
    name = topic.name(prefix)
    # No group: subscribing assigns every partition of the topic to this consumer.
    consumer = AIOKafkaConsumer(name, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await eventually(lambda: consumer.assignment(), timeout=10)
        await consumer.seek_to_beginning(*tps)
        events: list = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                events += [(r.key, decode_record(topic, r.value), dict(r.headers)) for r in records]
            if len(events) >= count and settle_until is None:
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        assert len(events) >= count, f"{len(events)} of {count} events on {name}"
        return events
    finally:
        await consumer.stop()

