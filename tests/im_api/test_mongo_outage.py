"""MongoDB down: im-api answers 503 (a JSON error, Retry-After) within its timeout, writes nothing
half-way, and serves again as soon as MongoDB is back — with the sends retried by client_msg_id."""

from __future__ import annotations

import asyncio

import pytest
from im_contracts.topics import MESSAGES

from im_api_helpers import read_events, running

pytestmark = pytest.mark.integration
T = "acme"


async def test_mongodb_down_means_503_then_service_resumes_and_nothing_is_half_written(private_mongo, api_settings):
    settings = api_settings.model_copy(update={"mongo_uri": private_mongo.uri, "mongo_timeout_s": 1.0})
    async with running(settings) as api:
        await api.add_agents(T, "alice", "bob")
        c = await api.start(T, "alice", "bob")
        assert (await api.send(T, "alice", c["id"], "before", "k1")).status_code == 201
        await asyncio.to_thread(private_mongo.stop)

        r = await api.http.get(f"/v1/conversations/{c['id']}/messages", headers=api.auth(T, "bob"))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "service_unavailable"
        started = asyncio.get_running_loop().time()
        r = await api.send(T, "alice", c["id"], "during", "k2")
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
        assert asyncio.get_running_loop().time() - started < 30  # bounded, not a hung request

        await asyncio.to_thread(private_mongo.start)
        # The client retries with the same client_msg_id: stored once, next seq, no gap.
        r = await api.send(T, "alice", c["id"], "during", "k2")
        assert r.status_code == 201 and r.json()["seq"] == 2
        r = await api.http.get(f"/v1/conversations/{c['id']}/messages", headers=api.auth(T, "bob"))
        assert [m["body"] for m in r.json()["items"]] == ["before", "during"]
        events = await read_events(settings.kafka_bootstrap, MESSAGES, settings.topic_prefix, 2, timeout=30,
                                   settle_s=0.5)
    assert [e.message.seq for _, e, _ in events] == [1, 2]
