"""Unknown agents, a wrongly expired gateway re-registering, and per-reader conversation fields."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import KNOWN_AGENTS, TENANT, DeliveryStack, StreamClient, assert_exactly_once_in_order
from support.wait import eventually

pytestmark = pytest.mark.e2e


async def test_an_agent_the_directory_never_announced_is_refused_4401_but_one_announced_within_the_wait_gets_in(
    stack, outbox, tokens
):
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_UNKNOWN_AGENT_WAIT_S="3.0")
    started = time.monotonic()
    stranger = await StreamClient.connect(gw.url, tokens.ticket("zed"), name="zed")
    assert await stranger.closed_with(timeout=15) == 4401
    assert time.monotonic() - started >= 2.5, "refused before the projection's lag was allowed for"

    # Created a moment ago: the socket opens before AgentChanged reaches the projection.
    newcomer = await StreamClient.connect(gw.url, tokens.ticket("nia"), name="nia")
    await outbox.agent_changed("nia", active=True)
    cid = await outbox.start_conversation(["ana", "nia"])
    await outbox.post(cid, "ana")
    await eventually(lambda: newcomer.messages() == [(cid, 1)], timeout=15)
    assert newcomer.close_code is None
    await newcomer.close()


async def test_a_gateway_the_worker_wrongly_expired_re_registers_its_sockets_and_signals_reach_them_again(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker()
    # A safety poll far away: only a routed signal delivers within the bound below.
    gw = await stack.start_gateway(IM_DELIVERY_SAFETY_POLL_S="60")
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana", auto_ack=True)
    cid = await outbox.start_conversation(["ben", "ana"])
    await outbox.post(cid, "ben")
    await eventually(lambda: ana.messages() == [(cid, 1)], timeout=15)
    registry = mongo[mongo_db_name]["delivery_connections"]
    # What the worker's expiry does to a gateway it believes dead.
    assert (await registry.delete_many({"tenant_id": TENANT, "gateway_id": gw.gateway_id})).deleted_count == 1

    async def registered() -> bool:
        return await registry.count_documents({"tenant_id": TENANT, "gateway_id": gw.gateway_id}) == 1

    await eventually(registered, timeout=10, message="the gateway never re-asserted its connection")
    sent = time.monotonic()
    await outbox.post(cid, "ben")
    await eventually(lambda: ana.messages() == [(cid, 1), (cid, 2)], timeout=15)
    assert time.monotonic() - sent < 10, "delivered by the safety poll, not by a signal"
    await ana.close()


async def test_each_recipients_conversation_update_carries_its_own_last_read_seq_and_unread_count(
    stack, outbox, tokens
):
    from im_contracts import topics
    from im_contracts.events import ReadMarkerMoved

    await stack.start_worker()
    gw = await stack.start_gateway()
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben")
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ana", count=3)

    def updates(client: StreamClient) -> list[dict]:
        return [f["conversation"] for f in client.queued if f["type"] == "conversation.updated"
                and f["conversation"]["last_seq"] > 0]

    await eventually(lambda: len(updates(ana)) == 3 and len(updates(ben)) == 3, timeout=20)
    # The sender has read what it sent; the other reader has read nothing yet.
    assert [(c["last_seq"], c["last_read_seq"], c["unread_count"]) for c in updates(ana)] == \
        [(1, 1, 0), (2, 2, 0), (3, 3, 0)]
    assert [(c["last_seq"], c["last_read_seq"], c["unread_count"]) for c in updates(ben)] == \
        [(1, 0, 1), (2, 0, 2), (3, 0, 3)]

    # ben reads up to 2 (im-api publishes ReadMarkerMoved), then ana sends one more.
    await outbox.send(topics.CONVERSATIONS, topics.conversation_key(cid), ReadMarkerMoved(
        tenant_id=TENANT, conversation_id=cid, agent_id="ben", seq=2, recipients=["ana", "ben"]))
    await eventually(lambda: any(f["type"] == "read.updated" for f in ben.queued), timeout=15)
    await outbox.post(cid, "ana")
    await eventually(lambda: len(updates(ben)) == 4 and len(updates(ana)) == 4, timeout=20)
    assert (updates(ben)[-1]["last_read_seq"], updates(ben)[-1]["unread_count"]) == (2, 2)
    assert (updates(ana)[-1]["last_read_seq"], updates(ana)[-1]["unread_count"]) == (4, 0)
    await asyncio.gather(ana.close(), ben.close())


async def test_a_mongodb_outage_while_messages_flow_pauses_the_worker_and_clients_get_everything_once_in_order(
    services, service_env, kafka_topics, outbox, tokens, private_mongo
):
    from pymongo import AsyncMongoClient


    env = {**service_env, "IM_MONGO_URI": private_mongo.uri}
    client = AsyncMongoClient(private_mongo.uri, tz_aware=True)

    async def directory() -> None:
        for agent in KNOWN_AGENTS:
            await outbox.agent_changed(agent, active=True)

        async def projected() -> bool:
            return await client[env["IM_MONGO_DB"]]["delivery_agents"].count_documents({}) == len(KNOWN_AGENTS)

        await eventually(projected, timeout=30)

    stack = DeliveryStack(services, env, directory=directory)
    try:
        await stack.start_worker()
        gw = await stack.start_gateway()
        cid = await outbox.start_conversation(["ben", "ana"])
        ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana", auto_ack=True)
        await outbox.post(cid, "ben", count=30)
        await eventually(lambda: len(ana.messages()) >= 10, timeout=20)

        await asyncio.to_thread(private_mongo.stop)
        await outbox.post(cid, "ben", count=30)  # the worker cannot write: it pauses and retries
        # The gateway cannot read the queue either: the socket is told to reconnect (1012).
        assert await ana.closed_with(timeout=30) == 1012
        await asyncio.to_thread(private_mongo.start)
        await outbox.post(cid, "ben", count=30)

        again = await StreamClient.connect(gw.url, tokens.ticket("ana"), cursor=ana.cursor, name="ana-again",
                                           auto_ack=True)
        await eventually(lambda: len(ana.messages()) + len(again.messages()) >= 90, timeout=60)
        merged = StreamClient.__new__(StreamClient)
        merged.name, merged.queued = "ana", ana.queued + again.queued
        merged.off_contract = ana.off_contract + again.off_contract
        assert_exactly_once_in_order(merged, {cid: 90})
        await again.close()
    finally:
        await client.close()
