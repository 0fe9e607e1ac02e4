"""`python -m im_api` as the launcher runs it: ready over HTTP, serves a call, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from imctl.servers import free_port

from im_api_helpers import token

pytestmark = pytest.mark.e2e


async def test_the_service_process_becomes_ready_serves_and_stops_gracefully_on_sigterm(
        services, service_env, kafka_topics, jwt_secret, mongo):
    port = free_port()
    env = {**service_env, "IM_API_PORT": str(port), "IM_API_OUTBOX_POLL_S": "0.2"}
    proc = services.start("im-api", ["-m", "im_api"], env, ready_url=f"http://127.0.0.1:{port}/readyz")
    await proc.wait_ready(timeout=60)
    admin = {"Authorization": f"Bearer {token(jwt_secret, 'acme', 'root', 'admin')}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        r = await http.put("/v1/agents/alice", json={"display_name": "Alice"}, headers=admin)
        assert r.status_code == 200 and r.headers["x-request-id"]
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
    code = await asyncio.to_thread(proc.stop, 20.0)
    # uvicorn re-raises the captured SIGTERM after a complete shutdown, so the status is -15 (not a kill).
    assert code in (0, -15), proc.tail()
    tail = proc.tail()
    assert "im-api stopped" in tail and "Application shutdown complete" in tail
