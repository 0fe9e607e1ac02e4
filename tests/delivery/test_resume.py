"""Resume: replay after a cursor then live, device acks, new-device rules, tickets."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from im_contracts import topics

from conftest import TENANT, StreamClient, assert_exactly_once_in_order
from support.topics import read_events
from support.wait import eventually

pytestmark = pytest.mark.e2e


async def head(mongo, db_name: str, agent: str) -> int:
    doc = await mongo[db_name]["delivery_heads"].find_one({"tenant_id": TENANT, "agent_id": agent})
    return 0 if doc is None else doc["cursor"]


async def test_offline_agent_receives_all_1000_messages_in_order_then_live_ones_and_an_acked_reconnect_replays_nothing(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker()
    gw = await stack.start_gateway()
    threads = [await outbox.start_conversation(["ana", "ben"]) for _ in range(4)]
    for i in range(1000):  # ana is offline for all of them
        outbox.seqs  # noqa: B018 - documents that seqs are per thread
        await outbox.producer.send(*_record(outbox, threads[i % 4], "ben"))
    await outbox.producer.flush()
    # 1,000 messages → 2,000 entries (+4 thread starts) in ana's queue before she connects.
    await eventually(lambda: _at_least(mongo, mongo_db_name, "ana", 2004), timeout=60)

    started = time.monotonic()
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), name="ana")
    await eventually(lambda: len(ana.messages()) >= 1000, timeout=30)
    replay_s = time.monotonic() - started
    # Then live ones: the seam between replay and live neither drops nor repeats.
    for cid in threads:
        await outbox.post(cid, "ben", 5)
    await eventually(lambda: len(ana.messages()) >= 1020, timeout=20)
    assert_exactly_once_in_order(ana, {cid: 255 for cid in threads})
    print(f"replayed 1,000 messages in {replay_s:.1f}s")

    await ana.ack()
    acked = ana.cursor
    await eventually(lambda: _device_cursor(mongo, mongo_db_name, "ana", "laptop", acked))
    await ana.close()

    # Reconnecting (same device, no cursor; and another device with the acked cursor) replays nothing:
    again = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), name="ana-again")
    other = await StreamClient.connect(gw.url, tokens.ticket("ana", "tablet"), cursor=acked, name="ana-tablet")
    await outbox.post(threads[0], "ben")
    for client in (again, other):
        await eventually(lambda c=client: len(c.messages()) == 1, timeout=10)
        assert client.messages() == [(threads[0], 256)]
        assert all(f["cursor"] > acked for f in client.queued)
    await again.close()
    await other.close()


async def test_cursor_gaps_wider_than_a_replay_batch_are_read_through_in_replay_and_live(
    stack, outbox, tokens, mongo, mongo_db_name
):
    """Reads are bounded cursor ranges: a range holding only a gap (cursors allocated by
    an append that was then refused) must neither stop the replay nor strand later entries. The
    safety poll is off here, so only the replay and the signals can find them."""
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_REPLAY_BATCH="10", IM_DELIVERY_SAFETY_POLL_S="600")
    heads = mongo[mongo_db_name]["delivery_heads"]
    ana_head = {"tenant_id": TENANT, "agent_id": "ana"}
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ben", 3)
    await eventually(lambda: _at_least(mongo, mongo_db_name, "ana", 7))  # start + 3 × 2 entries
    await heads.update_one(ana_head, {"$inc": {"cursor": 35}})  # 35 cursors never used: 3½ batches
    await outbox.post(cid, "ben", 3)
    await eventually(lambda: _at_least(mongo, mongo_db_name, "ana", 48))

    ana = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), name="ana")
    await eventually(lambda: len(ana.messages()) == 6, timeout=15)
    assert_exactly_once_in_order(ana, {cid: 6})
    assert max(f["cursor"] for f in ana.queued) == 48

    # Live: a gap opens while she is connected; the next signals' ranges cover it.
    await heads.update_one(ana_head, {"$inc": {"cursor": 35}})
    await outbox.post(cid, "ben", 2)
    await eventually(lambda: len(ana.messages()) == 8, timeout=15)
    assert_exactly_once_in_order(ana, {cid: 8})
    assert max(f["cursor"] for f in ana.queued) == 48 + 35 + 4
    await ana.close()


def _record(outbox, cid: str, sender: str):
    from im_contracts import topics
    from im_contracts.codec import event_headers

    event = outbox.message(cid, sender)
    return (topics.MESSAGES.name(outbox.prefix), event.to_bytes(), topics.conversation_key(cid), None, None,
            event_headers(event))


async def _at_least(mongo, db_name: str, agent: str, n: int) -> bool:
    return await head(mongo, db_name, agent) >= n


async def _device_cursor(mongo, db_name, agent, device, cursor) -> bool:
    doc = await mongo[db_name]["delivery_devices"].find_one(
        {"tenant_id": TENANT, "agent_id": agent, "device_id": device})
    return doc is not None and doc["cursor"] == cursor


async def test_new_device_resumes_after_the_agents_latest_ack_and_a_known_device_after_its_own(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker()
    gw = await stack.start_gateway()
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ben", 6)
    await eventually(lambda: _at_least(mongo, mongo_db_name, "ana", 13))

    # An agent that never acknowledged: a new device starts at the start of the retained queue.
    fresh = await StreamClient.connect(gw.url, tokens.ticket("ben", "desk"), name="ben-desk")
    await eventually(lambda: len(fresh.messages()) == 6)
    assert fresh.queued[0]["cursor"] == 1
    await fresh.close()

    laptop = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), name="ana-laptop")
    await eventually(lambda: len(laptop.messages()) == 6)
    after_two = next(f["cursor"] for f in laptop.queued if f.get("message", {}).get("seq") == 2)
    await laptop.ack(after_two)
    await laptop.ack(1)  # acks only move forward
    await eventually(lambda: _device_cursor(mongo, mongo_db_name, "ana", "laptop", after_two))
    await laptop.close()

    phone = await StreamClient.connect(gw.url, tokens.ticket("ana", "phone"), name="ana-phone")
    await eventually(lambda: len(phone.messages()) == 4)
    assert phone.messages() == [(cid, s) for s in (3, 4, 5, 6)]
    await phone.ack()
    await eventually(lambda: _device_cursor(mongo, mongo_db_name, "ana", "phone", phone.cursor))
    await phone.close()

    # The laptop is known: it resumes after its own ack, not the phone's later one.
    laptop2 = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), name="ana-laptop-2")
    await eventually(lambda: len(laptop2.messages()) == 4)
    assert laptop2.queued[0]["cursor"] > after_two
    await laptop2.close()


async def test_a_ticket_is_single_use_and_a_bearer_subprotocol_connects(stack, outbox, tokens):
    await stack.start_worker()
    gw = await stack.start_gateway()
    ticket = tokens.ticket("ana")
    first = await StreamClient.connect(gw.url, ticket, name="first")
    replay = await StreamClient.connect(gw.url, ticket, name="replayed-ticket")
    assert await replay.closed_with() == 4401
    forged = await StreamClient.connect(gw.url, ticket[:-4] + "AAAA", name="forged")
    assert await forged.closed_with() == 4401
    nothing = await StreamClient.connect(gw.url, name="no-credentials")
    assert await nothing.closed_with() == 4401

    bearer = await StreamClient.connect(gw.url, name="bearer",
                                        subprotocols=["im.v1", "bearer." + tokens.jwt("ana")])
    assert bearer.ws.subprotocol == "im.v1"
    cid = await outbox.start_conversation(["ben", "ana"])
    await outbox.post(cid, "ben", 2)
    for client in (first, bearer):
        await eventually(lambda c=client: c.messages() == [(cid, 1), (cid, 2)])
    await first.close()
    await bearer.close()


async def test_sigterm_closes_sockets_1012_reports_them_closed_and_exits_0_in_time_without_logging_the_ticket(
    stack, tokens, kafka_bootstrap, kafka_topics
):
    worker = await stack.start_worker()
    # INFO: uvicorn logs each WebSocket's path at INFO, and the query string carries the ticket.
    gw = await stack.start_gateway(IM_LOG_LEVEL="INFO", IM_DELIVERY_SHUTDOWN_GRACE_S="5")
    ticket = tokens.ticket("ana", "laptop")
    client = await StreamClient.connect(gw.url, ticket, name="ana")
    await client.send({"type": "idle"})
    await client.send({"type": "active"})
    await eventually(lambda: "stream opened" in gw.proc.log_path.read_text(errors="replace"))
    started = time.monotonic()
    code = await asyncio.to_thread(gw.proc.stop)
    stopped_in = time.monotonic() - started
    assert await client.closed_with() == 1012
    assert code == 0 and stopped_in < 5, f"gateway exit {code} after {stopped_in:.1f}s"
    kinds = lambda evs: [e.type for e in evs if getattr(e, "agent_id", None) == "ana"]  # noqa: E731
    events = await read_events(topics.CONNECTIONS, kafka_topics, bootstrap=kafka_bootstrap, timeout=20,
                               until=lambda evs: "ConnectionClosed" in kinds(evs))
    assert kinds(events) == ["ConnectionOpened", "ConnectionIdle", "ConnectionActive", "ConnectionClosed"]
    assert {e.device_id for e in events} == {"laptop"} and {e.gateway_id for e in events} == {gw.gateway_id}
    beats = await read_events(topics.GATEWAYS, kafka_topics, bootstrap=kafka_bootstrap, count=1, timeout=20)
    assert beats[0].gateway_id == gw.gateway_id and beats[0].tenant_id == "_system"
    logged = gw.proc.log_path.read_text(errors="replace")
    messages = [json.loads(line)["msg"] for line in logged.splitlines() if line.startswith("{")]
    assert any(m.endswith('"WebSocket /v1/stream" [accepted]') for m in messages)  # there, without its query
    assert ticket not in logged and "ticket=" not in logged

    started = time.monotonic()
    code = await asyncio.to_thread(worker.stop)
    assert code == 0 and time.monotonic() - started < 10, f"worker exit {code}"
