"""Every per-request read is bounded, tested at tens of thousands of rows: the agent list with
10,000 of 20,000 agents online, and the unread badge of an agent in 20,000 threads. What a request
reads is counted by the driver's own command monitoring (documents returned, largest command)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from im_api.store import agent_doc_id, list_key
from im_contracts.events import AgentPresence
from im_contracts.topics import PRESENCE, agent_key

from im_api_helpers import running
from support.reads import Reads
from support.wait import eventually

pytestmark = pytest.mark.integration
T = "acme"
AGENTS = 20_000


def agent_doc(i: int) -> dict:
    t = datetime.now(UTC)
    return {"_id": agent_doc_id(T, f"a{i:05d}"), "tenant_id": T, "agent_id": f"a{i:05d}",
            "display_name": f"Agent {i:05d}", "name_lc": f"agent {i:05d}", "email": None, "role": "agent",
            "active": True, "outbox_seq": 1, "created_at": t, "updated_at": t}


async def test_the_agent_list_reads_a_bounded_number_of_rows_with_ten_thousand_online(
        api_settings, endpoints, mongo, mongo_db_name):
    reads = Reads()
    await mongo[mongo_db_name]["agents"].insert_many([agent_doc(i) for i in range(AGENTS)])
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        for i in range(0, AGENTS, 2):  # every even agent online
            event = AgentPresence(tenant_id=T, agent_id=f"a{i:05d}", status="online", connections=1)
            await producer.send(PRESENCE.name(api_settings.topic_prefix), event.to_bytes(),
                                key=agent_key(T, f"a{i:05d}"))
        await producer.flush()
    finally:
        await producer.stop()
    async with running(api_settings, event_listeners=[reads]) as api:
        presence = api.app.state.presence
        await eventually(lambda: len(presence.members(T, "online")) == AGENTS // 2, timeout=60,
                         message="the presence cache never held every online agent")
        me = api.auth(T, "a00001")
        bound = api_settings.agent_list_scan_max + 1  # rows read, plus the caller's own active check

        with reads.counting():
            first = await api.http.get("/v1/agents", params={"limit": 50}, headers=me)
        assert first.status_code == 200, first.text
        page = first.json()
        assert [a["id"] for a in page["items"]] == [f"a{i:05d}" for i in range(0, 100, 2)]
        assert {a["presence"]["status"] for a in page["items"]} == {"online"}
        assert sum(reads.docs.values()) <= bound, reads.docs
        assert reads.largest_command < 16 * 1024, "no query names every online agent"

        with reads.counting():
            second = await api.http.get("/v1/agents", params={"limit": 50, "cursor": page["next_cursor"]},
                                        headers=me)
        assert [a["id"] for a in second.json()["items"]] == [f"a{i:05d}" for i in range(100, 200, 2)]
        assert sum(reads.docs.values()) <= bound, reads.docs

        with reads.counting():
            offline = await api.http.get("/v1/agents", params={"limit": 50, "status": "offline"}, headers=me)
        assert [a["id"] for a in offline.json()["items"]] == [f"a{i:05d}" for i in range(1, 100, 2)]
        assert sum(reads.docs.values()) <= bound, reads.docs
        assert reads.largest_command < 16 * 1024, "no $nin of every online agent"


async def test_the_unread_badge_reads_a_bounded_number_of_threads_of_an_agent_in_twenty_thousand(
        api_settings, mongo, mongo_db_name):
    reads = Reads()
    settings = api_settings.model_copy(update={"unread_scan_max": 1000})
    start = datetime(2026, 1, 1, tzinfo=UTC)
    threads = []
    for i in range(20_000):
        cid = uuid.uuid4().hex
        at = start + timedelta(seconds=i)
        # The newest 10 threads have 3 unread each; every older one is read.
        read = 0 if i >= 19_990 else 3
        threads.append({"_id": cid, "tenant_id": T, "participants": ["alice", "bob"], "start_key": cid,
                        "related": None, "created_by": "bob", "created_at": at, "last_seq": 3,
                        "last_message": None, "last_message_at": at, "read": {"alice": read}, "outbox_seq": 4,
                        "list_key": list_key(at, cid), "related_key": None})
    await mongo[mongo_db_name]["conversations"].insert_many(threads)
    async with running(settings, event_listeners=[reads]) as api:
        await api.add_agents(T, "alice", "bob")
        with reads.counting():
            r = await api.http.get("/v1/me/unread", headers=api.auth(T, "alice"))
        assert r.status_code == 200, r.text
        assert r.json() == {"total": 30, "conversations": 10, "capped": True}
        assert reads.docs["conversations"] <= 1001, reads.docs
