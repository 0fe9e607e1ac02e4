"""Live delivery across gateways: every connection gets each message once, in thread order."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from im_contracts import topics

from conftest import StreamClient, assert_exactly_once_in_order
from support.wait import eventually

pytestmark = pytest.mark.e2e

AGENTS = ["ana", "ben", "cy"]


async def test_every_connection_receives_each_message_once_in_thread_order_across_two_gateways(
    stack, outbox, tokens
):
    # Scale: 3 agents, 2 gateway processes, ana on both; 500 messages in 20 threads, 4 senders.
    await stack.start_worker()
    gw1, gw2 = await asyncio.gather(stack.start_gateway(), stack.start_gateway())
    clients = {
        "ana@gw1": await StreamClient.connect(gw1.url, tokens.ticket("ana", "tab-1"), name="ana@gw1"),
        "ana@gw2": await StreamClient.connect(gw2.url, tokens.ticket("ana", "tab-2"), name="ana@gw2"),
        "ben@gw1": await StreamClient.connect(gw1.url, tokens.ticket("ben", "phone"), name="ben@gw1"),
        "cy@gw2": await StreamClient.connect(gw2.url, tokens.ticket("cy", "desk"), name="cy@gw2"),
    }
    pairs = [list(p) for p in itertools.combinations(AGENTS, 2)] + [AGENTS]
    threads = {}
    for i in range(20):
        members = pairs[i % len(pairs)]
        threads[await outbox.start_conversation(members)] = members
    rng = random.Random(5)
    plan = [rng.choice(list(threads)) for _ in range(500)]

    async def sender(share: list[str]) -> None:
        for cid in share:
            await outbox.post(cid, threads[cid][0])

    # Threads split between 4 concurrent senders; each thread stays with one sender (seq order).
    owners = {cid: i % 4 for i, cid in enumerate(threads)}
    started = time.monotonic()
    await asyncio.gather(*(sender([c for c in plan if owners[c] == k]) for k in range(4)))

    expected = {a: {c: plan.count(c) for c, m in threads.items() if a in m} for a in AGENTS}
    for name, client in clients.items():
        agent = name.split("@")[0]
        total = sum(expected[agent].values())
        await eventually(lambda c=client, t=total: len(c.messages()) >= t, timeout=60,
                         message=lambda c=client, t=total: f"{c.name} got {len(c.messages())}/{t}")
    elapsed = time.monotonic() - started
    for name, client in clients.items():
        assert_exactly_once_in_order(client, expected[name.split("@")[0]])
    # Both tabs of ana saw the same queue: the same cursors for the same frames.
    assert [f["cursor"] for f in clients["ana@gw1"].queued] == [f["cursor"] for f in clients["ana@gw2"].queued]
    print(f"500 messages to 4 connections in {elapsed:.1f}s")
    for client in clients.values():
        await client.close()


async def test_duplicated_and_out_of_order_records_still_reach_the_client_once_in_seq_order(stack, outbox, tokens):
    # The outbox is at-least-once and a relay handover may publish out of order: the worker is
    # idempotent on (conversation, seq) and holds a message back until its predecessor came.
    await stack.start_worker()
    gw = await stack.start_gateway()
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    cid = await outbox.start_conversation(["ben", "ana"])
    one, two, three, four = (outbox.message(cid, "ben") for _ in range(4))
    for event in (one, three, one, four, two, three):
        await outbox.send(topics.MESSAGES, topics.conversation_key(cid), event)
    await eventually(lambda: len(ana.messages()) >= 4)
    # A thread whose first message arrives before its ConversationStarted (another topic).
    early = "c-early"
    outbox.snapshots[early] = outbox.snapshots[cid].model_copy(update={"id": early})
    outbox.seqs[early] = 0
    first = outbox.message(early, "ben")
    await outbox.send(topics.MESSAGES, topics.conversation_key(early), first)
    await outbox.start_conversation(["ben", "ana"], conversation_id=early)
    await eventually(lambda: (early, 1) in ana.messages())
    await outbox.post(cid, "ben")
    await eventually(lambda: len(ana.messages()) >= 6)
    assert_exactly_once_in_order(ana, {cid: 5, early: 1})
    started = next(f for f in ana.queued if f["type"] == "conversation.updated"
                   and f["conversation"]["id"] == early and f["conversation"]["participants"])
    assert started["conversation"]["participants"][0]["display_name"] == "BEN"  # from the real start
    await ana.close()
