"""What the compose tests drive from the host, through the published ports only: an agent's HTTP
client that retries a send through a crash (same client_msg_id, so never a second message) and
an inbox: one WebSocket that reconnects with its cursor and keeps what it received once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

import httpx
import websockets
from aiokafka.admin import AIOKafkaAdminClient
from im_runtime.kafka import client_options
from im_runtime.settings import CommonSettings
from imctl.compose import new_passwords
from imctl.tokens import mint
from pydantic import SecretStr

# Tagged for tests only (helpdesk-im-test/...): never an operator's helpdesk-im image.
TEST_IMAGE = "helpdesk-im-test/app:latest"
RETRY_PAUSE_S = 0.2  # a client's pacing between attempts while a service is down
RECONNECT_PAUSE_S = 0.3


def stack_env(ports: dict[str, int], engine: str) -> dict[str, str]:
    """The environment of a test stack: its own free ports, fresh secrets and passwords, the test image."""
    passwords = new_passwords()
    mongo_password = passwords["IM_MONGO_PASSWORD"]
    return {
        **{k: str(v) for k, v in ports.items()},
        **passwords,
        "IM_JWT_SECRET": "compose-test-" + secrets.token_hex(16),
        "IM_STREAM_PUBLIC_URL": f"ws://127.0.0.1:{ports['IM_STREAM_PORT']}/v1/stream",
        "IM_CONSOLE_ORIGINS": f"http://127.0.0.1:{ports.get('IM_API_PORT', 8000)}",
        "IM_IMAGE": TEST_IMAGE,
        "IM_TEST_COMPOSE_MONGO_URI": f"mongodb://helpdesk-im:{mongo_password}@mongo:27017/?authSource=admin&"
                                     + ("replicaSet=rs0" if engine == "docker" else "directConnection=true"),
    }


def kafka_client_env(env: dict[str, str], principal: str, password: str | None = None) -> dict[str, str]:
    """The IM_KAFKA_* settings of a client on the host that authenticates as helpdesk-im-<principal>
    (the stack's password for it unless `password` says otherwise)."""
    key = "IM_KAFKA_ADMIN_PASSWORD" if principal == "admin" else f"IM_KAFKA_PASSWORD_{principal.upper().replace('-', '_')}"
    return {"IM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "IM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "IM_KAFKA_USERNAME": f"helpdesk-im-{principal}", "IM_KAFKA_PASSWORD": password or env[key]}


def kafka_settings(bootstrap: str, client_env: dict[str, str]) -> CommonSettings:
    return CommonSettings(kafka_bootstrap=bootstrap, kafka_security_protocol=client_env["IM_KAFKA_SECURITY_PROTOCOL"],
                          kafka_sasl_mechanism=client_env["IM_KAFKA_SASL_MECHANISM"],
                          kafka_username=client_env["IM_KAFKA_USERNAME"],
                          kafka_password=SecretStr(client_env["IM_KAFKA_PASSWORD"]))


async def broker_addresses(bootstrap: str, client_env: dict[str, str]) -> list[tuple[str, int]]:
    """(host, port) of each broker in the cluster's metadata, asked as the given principal."""
    admin = AIOKafkaAdminClient(**client_options(kafka_settings(bootstrap, client_env)), request_timeout_ms=30_000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    return [(b["host"], b["port"]) for b in cluster["brokers"]]


class Tenant:
    """One tenant's agents talking to the stack's im-api."""

    def __init__(self, env: dict[str, str], tenant: str) -> None:
        self.env = env
        self.tenant = tenant
        self.api = f"http://127.0.0.1:{env['IM_API_PORT']}"

    def token(self, agent: str, role: str = "agent") -> str:
        return mint(self.env["IM_JWT_SECRET"], self.tenant, agent, role, ttl_s=1800)

    def http(self, agent: str, role: str = "agent") -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api, timeout=10,
                                 headers={"Authorization": f"Bearer {self.token(agent, role)}"})

    async def add_agents(self, *agents: str) -> None:
        async with self.http("root", "admin") as c:
            for agent in agents:
                r = await c.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})
                assert r.status_code == 200, r.text

    async def thread(self, starter: str, *others: str, ticket: str | None = None) -> str:
        body: dict = {"participant_ids": list(others)}
        if ticket:
            body["related"] = {"type": "ticket", "id": ticket}
        async with self.http(starter) as c:
            r = await c.post("/v1/conversations", json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()["id"]

    async def send(self, sender: str, conversation: str, body: str, key: str, deadline_s: float = 120) -> dict:
        """Retries through a crash with the same client_msg_id: idempotent, never a second message."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        last = "no answer"
        while True:
            try:
                async with self.http(sender) as c:
                    r = await c.post(f"/v1/conversations/{conversation}/messages",
                                     json={"body": body, "client_msg_id": key})
                if r.status_code in (200, 201):
                    return r.json()
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if loop.time() > end:
                raise AssertionError(f"message {key} never accepted: {last}")
            await asyncio.sleep(RETRY_PAUSE_S)

    async def history(self, agent: str, conversation: str) -> list[dict]:
        async with self.http(agent) as c:
            r = await c.get(f"/v1/conversations/{conversation}/messages", params={"limit": 200})
        assert r.status_code == 200, r.text
        return r.json()["items"]

    async def presence(self, agent: str, of: str) -> str | None:
        async with self.http(agent) as c:
            r = await c.get("/v1/agents", params={"q": of, "limit": 50})
        assert r.status_code == 200, r.text
        return next((a["presence"]["status"] for a in r.json()["items"] if a["id"] == of), None)


class Inbox:
    """An agent's device on one gateway: reconnects after any drop and resumes from its cursor.
    Frames at or below the cursor are dropped (API.md: at-least-once on the wire), so `messages`
    holds what the agent saw; a message listed twice would be a duplicate queue entry."""

    def __init__(self, tenant: Tenant, agent: str, port_key: str = "IM_STREAM_PORT") -> None:
        self.tenant, self.agent, self.port_key = tenant, agent, port_key
        self.cursor: int | None = None
        self.messages: list[dict] = []
        self.connects = 0
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Inbox:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def of(self, conversation: str) -> list[dict]:
        return [m for m in self.messages if m["conversation_id"] == conversation]

    async def _run(self) -> None:
        port = self.tenant.env[self.port_key]
        while True:
            query = f"?device_id=compose-{self.agent}" + (f"&cursor={self.cursor}" if self.cursor is not None else "")
            try:
                async with websockets.connect(
                    f"ws://127.0.0.1:{port}/v1/stream{query}",
                    subprotocols=["im.v1", f"bearer.{self.tenant.token(self.agent)}"],
                    open_timeout=5,
                ) as ws:
                    self.connects += 1
                    async for raw in ws:
                        frame = json.loads(raw)
                        for f in frame["frames"] if frame.get("type") == "batch" else [frame]:
                            self._take(f)
                        if self.cursor is not None:
                            await ws.send(json.dumps({"type": "ack", "cursor": self.cursor}))
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            await asyncio.sleep(RECONNECT_PAUSE_S)

    def _take(self, frame: dict) -> None:
        cursor = frame.get("cursor")
        if cursor is None or (self.cursor is not None and cursor <= self.cursor):
            return
        self.cursor = cursor
        if frame["type"] == "message.created":
            self.messages.append(frame["message"])
