"""`python -m im_api` as the launcher runs it: ready over HTTP, serves a call, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from im_contracts.topics import ASSISTANCE_REQUESTS, MESSAGES
from imctl.servers import free_port
from prometheus_client.parser import text_string_to_metric_families
from support.wait import eventually

from im_api_helpers import token

pytestmark = pytest.mark.e2e


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_service_process_becomes_ready_serves_reports_its_metrics_and_stops_gracefully_on_sigterm(
        services, service_env, kafka_topics, jwt_secret, mongo):
    port = free_port()
    env = {**service_env, "IM_API_PORT": str(port), "IM_API_OUTBOX_POLL_S": "0.2"}
    proc = services.start("im-api", ["-m", "im_api"], env, ready_url=f"http://127.0.0.1:{port}/readyz")
    await proc.wait_ready(timeout=60)
    admin = {"Authorization": f"Bearer {token(jwt_secret, 'acme', 'root', 'admin')}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        r = await http.put("/v1/agents/alice", json={"display_name": "Alice"}, headers=admin)
        assert r.status_code == 200 and r.headers["x-request-id"]
        r = await http.put("/v1/agents/bob", json={"display_name": "Bob"}, headers=admin)
        alice = {"Authorization": f"Bearer {token(jwt_secret, 'acme', 'alice')}"}
        c = (await http.post("/v1/conversations", json={"participant_ids": ["bob"]}, headers=alice)).json()
        for i in range(5):
            r = await http.post(f"/v1/conversations/{c['id']}/messages", headers=alice,
                                json={"body": f"m{i}", "client_msg_id": f"k{i}"})
            assert r.status_code == 201
        # A record that can never be processed: dead-lettered, and the group moves past it.
        producer = AIOKafkaProducer(bootstrap_servers=service_env["IM_KAFKA_BOOTSTRAP"])
        await producer.start()
        try:
            await producer.send_and_wait(ASSISTANCE_REQUESTS.name(kafka_topics), b"not json")
        finally:
            await producer.stop()

        async def scraped() -> dict | None:
            text = (await http.get("/metrics")).text
            found = samples(text)
            published = found.get(("im_api_outbox_published_total", (("topic", MESSAGES.base_name),)), 0)
            dead = sum(v for (name, _), v in found.items() if name == "im_api_dead_letters_total")
            return found if published >= 5 and dead >= 1 and found.get(("im_api_outbox_backlog", ())) == 0 else None

        found = await eventually(scraped, timeout=20, message="sends published, the bad record dead-lettered")
    assert found[("im_api_messages_accepted_total", ())] == 5
    assert found[("im_api_request_duration_seconds_count",
                  (("method", "POST"), ("route", "/v1/conversations/{conversation_id}/messages"),
                   ("status", "201")))] == 5
    assert found[("im_api_outbox_shards_held", ())] == 16  # the only relay holds every shard
    assert found[("im_api_outbox_oldest_age_seconds", ())] == 0
    assert found[("im_api_dead_letters_total", (("reason", "malformed_json"),
                                                ("topic", ASSISTANCE_REQUESTS.name(kafka_topics))))] == 1
    lag = {labels: v for (name, labels), v in found.items() if name == "im_consumer_lag_records"}
    assert lag and set(lag.values()) == {0}, lag  # the group is at the end of what it was given
    assert all(dict(labels)["group"] == f"{kafka_topics}im-api-assistance" for labels in lag), lag
    code = await asyncio.to_thread(proc.stop, 20.0)
    # uvicorn re-raises the captured SIGTERM after a complete shutdown, so the status is -15 (not a kill).
    assert code in (0, -15), proc.tail()
    tail = proc.tail()
    assert "im-api stopped" in tail and "Application shutdown complete" in tail
