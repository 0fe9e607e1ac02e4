"""The pipe end to end through the real processes: HTTP → MongoDB + outbox → Kafka → delivery →
WebSocket, and presence sees the connection. Run on Apache Kafka, and on Tansu as a smoke test."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from im_contracts.events import MessagePosted
from im_contracts.topics import MESSAGES
from imctl.topics import create_topics
from support.topics import read_topic
from support.wait import eventually

from support.stack import Stack, frames, start_stack

pytestmark = pytest.mark.e2e


async def walk(stack: Stack, tenant: str = "acme") -> None:
    admin = stack.token(tenant, "root", "admin")
    alice, bob = stack.token(tenant, "alice"), stack.token(tenant, "bob")
    async with stack.client(admin) as c:
        for agent, name in (("alice", "Alice"), ("bob", "Bob")):
            r = await c.put(f"/v1/agents/{agent}", json={"display_name": name})
            assert r.status_code == 200, r.text

    url = await stack.ticket_url(bob, "bobs-laptop")
    assert "token" not in url and "ticket=" in url
    async with websockets.connect(url, subprotocols=["im.v1"]) as ws:
        async with stack.client(alice) as c:
            r = await c.post("/v1/conversations", json={
                "participant_ids": ["bob"], "related": {"type": "ticket", "id": "123", "title": "Printer"}})
            assert r.status_code == 201, r.text
            conv = r.json()
            r = await c.post(f"/v1/conversations/{conv['id']}/messages",
                             json={"body": "Is this a warranty case?", "client_msg_id": "m1"})
            assert r.status_code == 201, r.text
            sent = r.json()

        received = None
        while received is None:
            for frame in frames(await asyncio.wait_for(ws.recv(), 20)):
                if frame["type"] == "message.created":
                    received = frame
        assert received["message"]["id"] == sent["id"]
        assert received["message"]["body"] == "Is this a warranty case?"
        assert received["message"]["seq"] == 1 and isinstance(received["cursor"], int)

        # Presence recorded bob's connection: the agent picker shows him online.
        async def bob_online():
            async with stack.client(alice) as c:
                items = (await c.get("/v1/agents")).json()["items"]
            return next((a for a in items if a["id"] == "bob" and a["presence"]["status"] == "online"), None)

        await eventually(bob_online, timeout=30, message="bob never shown online")

    # And the message went over Kafka as the contract's MessagePosted, with its recipients.
    env = stack.env
    reads = await read_topic(MESSAGES, env["IM_TOPIC_PREFIX"], bootstrap=env["IM_KAFKA_BOOTSTRAP"], count=1,
                             timeout=20)
    record, event = reads[0].record, reads[0].event
    assert isinstance(event, MessagePosted)
    assert event.message.id == sent["id"] and sorted(event.recipients) == ["alice", "bob"]
    assert record.key == conv["id"].encode()


async def test_a_message_travels_from_http_to_the_recipients_websocket(stack):
    await walk(stack)


@pytest.mark.smoke_tansu
async def test_the_walking_path_works_on_the_tansu_fallback(services, service_env, tansu, topic_prefix, jwt_secret):
    await create_topics(tansu.bootstrap, topic_prefix, partitions=3)
    env = {**service_env, "IM_KAFKA_BOOTSTRAP": tansu.bootstrap, "IM_KAFKA_IDEMPOTENCE": "false"}
    stack = await start_stack(services, env, jwt_secret)
    await walk(stack)
