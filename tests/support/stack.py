"""The whole stack as real processes, started the way `make run` starts them (for e2e tests)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx
from imctl import servers as local
from imctl.tokens import mint


@dataclass
class Stack:
    api_url: str
    stream_url: str
    env: dict[str, str]
    secret: str
    procs: dict = field(default_factory=dict)

    def token(self, tenant: str, agent: str, role: str = "agent") -> str:
        return mint(self.secret, tenant, agent, role, ttl_s=600)

    def client(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=15)

    async def ticket_url(self, token: str, device_id: str) -> str:
        async with self.client(token) as c:
            r = await c.post("/v1/stream/tickets", json={"device_id": device_id})
            assert r.status_code == 201, r.text
            return r.json()["url"]


async def start_stack(services, env: dict[str, str], secret: str, gateways: int = 1,
                      allowed_origins_from_api: bool = False) -> Stack:
    """`allowed_origins_from_api`: the gateways accept browser pages served by this im-api (the console)."""
    ports = {name: local.free_port() for name in ("api", "worker", "presence")}
    gw_ports = [local.free_port() for _ in range(gateways)]
    env = {
        **env,
        "IM_API_PORT": str(ports["api"]),
        "IM_DELIVERY_WORKER_PORT": str(ports["worker"]),
        "IM_PRESENCE_PORT": str(ports["presence"]),
        "IM_API_STREAM_PUBLIC_URL": f"ws://127.0.0.1:{gw_ports[0]}/v1/stream",
    }
    if allowed_origins_from_api:
        env["IM_DELIVERY_ALLOWED_ORIGINS"] = f"http://127.0.0.1:{ports['api']}"
    stack = Stack(f"http://127.0.0.1:{ports['api']}", f"ws://127.0.0.1:{gw_ports[0]}/v1/stream", env, secret)
    plan = [
        ("presence", ["-m", "im_presence"], env, ports["presence"]),
        ("worker", ["-m", "im_delivery.worker"], env, ports["worker"]),
        *[
            (f"gateway{i}", ["-m", "im_delivery.gateway"],
             {**env, "IM_STREAM_PORT": str(port), "IM_DELIVERY_GATEWAY_ID": f"gw{i}"}, port)
            for i, port in enumerate(gw_ports)
        ],
        ("api", ["-m", "im_api"], env, ports["api"]),
    ]
    for name, argv, penv, port in plan:
        stack.procs[name] = services.start(name, argv, penv, f"http://127.0.0.1:{port}/readyz")
    await asyncio.gather(*(p.wait_ready(90) for p in stack.procs.values()))
    return stack


def frames(raw: str) -> list[dict]:
    """A server frame, or the frames of a `batch`, flattened."""
    frame = json.loads(raw)
    return frame["frames"] if frame.get("type") == "batch" else [frame]


async def read_until(ws, predicate, seen: list[dict], timeout: float = 30) -> dict:
    """The first frame (of those in `seen`, then of what `ws` sends, added to `seen`) that
    `predicate` accepts."""
    async with asyncio.timeout(timeout):
        while True:
            for frame in seen:
                if predicate(frame):
                    return frame
            seen.extend(frames(await ws.recv()))
