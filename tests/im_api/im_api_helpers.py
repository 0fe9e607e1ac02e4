"""Helpers for the im-api tests: the app in-process, tokens, and reading what reached Kafka."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from im_api.app import create_app
from im_api.settings import ApiSettings
from imctl.tokens import mint
from im_contracts.events import Event
from im_contracts.topics import Topic

from support.topics import read_topic


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
                      settle_s: float = 0.0) -> list[tuple[bytes, Event, dict[str, bytes]]]:
    """(key, event, headers) of every record on `topic` from the beginning, once at least `count`
    arrived (then `settle_s` more, to catch duplicates), in partition order."""
    reads = await read_topic(topic, prefix, bootstrap=bootstrap, count=count, timeout=timeout, settle_s=settle_s)
    return [(r.record.key, r.event, r.headers) for r in reads]
