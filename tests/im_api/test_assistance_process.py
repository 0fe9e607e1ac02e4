"""An assistance request delivered again after `python -m im_api` wrote it — its offset commit lost
(a process killed between the two, or an operator's offset reset) — still yields one thread and one
message after the restart."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from im_contracts.topics import MESSAGES
from imctl.servers import free_port

from assistance_helpers import Producer, committed_offsets, request_doc, rewind_group, service_token
from im_api_helpers import read_events, token
from support.wait import eventually

pytestmark = pytest.mark.e2e
T = "acme"


async def test_a_request_delivered_again_after_its_write_posts_once_after_a_restart(
        services, service_env, kafka_bootstrap, kafka_topics, jwt_secret, own_mongo, mongo_db_name):
    server, mongo = own_mongo  # a database of its own: the test counts every document in it
    port = free_port()
    env = {**service_env, "IM_MONGO_URI": server.uri, "IM_API_PORT": str(port), "IM_API_OUTBOX_POLL_S": "0.2",
           "IM_RETRY_INITIAL_S": "0.05", "IM_RETRY_MAX_S": "0.5"}
    ready = f"http://127.0.0.1:{port}/readyz"
    first = services.start("im-api-1", ["-m", "im_api"], env, ready_url=ready)
    await first.wait_ready(timeout=60)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        checks = (await http.get("/readyz")).json()["checks"]
        assert checks["assistance_consumer"] is True
        admin = {"Authorization": f"Bearer {token(jwt_secret, T, 'root', 'admin')}"}
        for agent in ("alice", "bob"):
            r = await http.put(f"/v1/agents/{agent}", json={"display_name": agent.title()}, headers=admin)
            assert r.status_code == 200, r.text

    async with Producer(kafka_bootstrap, kafka_topics) as producer:
        await producer.send(request_doc(T, "alice", ["bob"], message="help once"),
                            token=service_token(jwt_secret, T))
    db = mongo[mongo_db_name]
    await eventually(lambda: db.messages.count_documents({"tenant_id": T}), timeout=30,
                     message="the request was never written")
    group = f"{kafka_topics}im-api-assistance"

    async def committed():
        return sum((await committed_offsets(kafka_bootstrap, group)).values()) == 1

    await eventually(committed, timeout=60, interval=0.5, message="the request's offset was never committed")
    code = await asyncio.to_thread(first.stop, 20.0)  # leaves the group at once: it may be rewound
    assert code in (0, -15), first.tail()
    # As if the commit had never happened: the record is the group's next one again.
    (done,) = (await committed_offsets(kafka_bootstrap, group)).items()
    await rewind_group(kafka_bootstrap, group, {done[0]: done[1] - 1})
    assert sum((await committed_offsets(kafka_bootstrap, group)).values()) == 0

    second = services.start("im-api-2", ["-m", "im_api"], env, ready_url=ready)
    await second.wait_ready(timeout=60)

    async def committed():
        return sum((await committed_offsets(kafka_bootstrap, group)).values()) == 1

    # The restarted consumer re-reads the record, finds it done, and commits past it.
    await eventually(committed, timeout=60, interval=0.5, message="the redelivered record was never committed")
    assert "assistance request already processed" in second.tail(200)
    assert await db.conversations.count_documents({"tenant_id": T}) == 1
    assert await db.messages.count_documents({"tenant_id": T}) == 1
    assert await db.assistance_requests.count_documents({"tenant_id": T}) == 1
    (message,) = await db.messages.find({"tenant_id": T}).to_list()
    events = await read_events(kafka_bootstrap, MESSAGES, kafka_topics, 1, settle_s=1.0)
    # Publishing is at-least-once: a relay that stopped after publishing a record but before
    # marking it sent leaves it to the next, which publishes it again. Always the one message
    # (readers drop a repeat by its id), never a second message.
    assert {(e.message.id, e.message.body) for _, e, _ in events} == {(message["_id"], "help once")}
    assert 1 <= len(events) <= 2, [e.message.id for _, e, _ in events]
    code = await asyncio.to_thread(second.stop, 20.0)
    assert code in (0, -15), second.tail()
