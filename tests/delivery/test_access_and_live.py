"""Who may listen and for how long (4401, 4409), leaving a thread, live-only frames, dead letters."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from im_contracts import topics
from im_contracts.events import AgentPresence, QueueAppend

from conftest import TENANT, StreamClient
from support.topics import read_events
from support.wait import eventually

pytestmark = pytest.mark.e2e


async def test_the_socket_closes_4401_when_its_token_expires_or_the_agent_is_deactivated(stack, outbox, tokens):
    await stack.start_worker()
    gw = await stack.start_gateway()
    short = await StreamClient.connect(gw.url, tokens.ticket("ana", token_ttl_s=2), name="short-token")
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben")
    assert await short.closed_with(timeout=10) == 4401

    await outbox.agent_changed("ben", active=True)
    await outbox.agent_changed("ben", active=False)
    assert await ben.closed_with(timeout=15) == 4401
    refused = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben-again")
    assert await refused.closed_with() == 4401
    still = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana-still-active")
    assert still.close_code is None
    await still.close()


async def test_a_deactivation_whose_signal_was_missed_still_closes_the_socket(
        stack, outbox, tokens, mongo, mongo_db_name):
    """The directory projection says ana is deactivated but no auth.revoked signal ever reaches the
    gateway (as when its signal reader was restarting): its own periodic check closes the socket,
    and only hers."""
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_REVOCATION_CHECK_S="0.5")
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben")
    await mongo[mongo_db_name]["delivery_agents"].update_one({"tenant_id": TENANT, "agent_id": "ana"},
                                                             {"$set": {"active": False}})
    assert await ana.closed_with(timeout=15) == 4401
    assert ben.close_code is None
    await ben.close()


async def test_a_browser_page_from_an_origin_not_allowed_is_closed_4403(stack, outbox, tokens):
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_ALLOWED_ORIGINS="https://desk.example, http://127.0.0.1:8000")
    other_site = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="other-site",
                                            origin="https://evil.example")
    assert await other_site.closed_with() == 4403
    ours = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="desk", origin="https://desk.example")
    service = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="no-origin")  # not a browser
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ben")
    await eventually(lambda: ours.messages() == [(cid, 1)] and service.messages() == [(cid, 1)], timeout=15)
    assert ours.close_code is None and service.close_code is None
    await ours.close()
    await service.close()


async def test_a_pruned_cursor_closes_4409_and_acknowledged_entries_are_pruned(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker(IM_DELIVERY_QUEUE_CAP="6", IM_DELIVERY_RETENTION_S="0")
    gw = await stack.start_gateway()
    heads = mongo[mongo_db_name]["delivery_heads"]
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ben", 10)  # 21 entries per agent: over the cap of 6
    await eventually(lambda: _pruned_through(heads, "ana", 15))

    old = await StreamClient.connect(gw.url, tokens.ticket("ana"), cursor=3, name="old-cursor")
    assert await old.closed_with() == 4409
    fresh = await StreamClient.connect(gw.url, tokens.ticket("ana", "new-device"), name="new-device")
    await eventually(lambda: len(fresh.queued) == 6)
    assert fresh.queued[0]["cursor"] == 16 and fresh.queued[-1]["cursor"] == 21

    # Everything every device of ana acknowledged (retention 0 here) is pruned.
    await fresh.ack()
    await eventually(lambda: _pruned_through(heads, "ana", 21))
    queue = mongo[mongo_db_name]["delivery_queue"]
    await eventually(lambda: _count_is(queue.count_documents({"tenant_id": TENANT, "agent_id": "ana"}), 0))
    await fresh.close()


async def test_a_queue_truncated_while_a_client_replays_closes_it_4409_instead_of_skipping_entries(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker(IM_DELIVERY_QUEUE_CAP="6")
    # Two frames in flight at most, and no safety poll within the test: the replay itself must notice.
    gw = await stack.start_gateway(IM_DELIVERY_MAX_UNACKED="2", IM_DELIVERY_SAFETY_POLL_S="60",
                                   IM_DELIVERY_SEND_TIMEOUT_S="30")
    heads = mongo[mongo_db_name]["delivery_heads"]
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ben", 2)  # 5 entries: under the cap
    await eventually(lambda: _head_at_least(heads, "ana", 5))
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    await eventually(lambda: [f["cursor"] for f in ana.queued] == [1, 2])  # the window is full: replay waits
    await outbox.post(cid, "ben", 8)  # 21 entries: the queue is truncated through 15
    queue = mongo[mongo_db_name]["delivery_queue"]
    await eventually(lambda: _count_is(queue.count_documents({"tenant_id": TENANT, "agent_id": "ana",
                                                              "cursor": {"$lte": 15}}), 0))
    await ana.ack(2)  # the replay goes on from 2: entries 3..15 are gone
    assert await ana.closed_with() == 4409
    assert [f["cursor"] for f in ana.queued] == [1, 2], "entries were skipped silently"


async def test_a_cursor_above_the_queue_head_is_refused_4409_and_an_ack_above_what_was_sent_is_bounded(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker()
    gw = await stack.start_gateway()
    heads, devices = mongo[mongo_db_name]["delivery_heads"], mongo[mongo_db_name]["delivery_devices"]
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ben", 2)
    await eventually(lambda: _head_at_least(heads, "ana", 5))
    ahead = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), cursor=1_000, name="ahead")
    assert await ahead.closed_with() == 4409

    laptop = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), name="laptop")
    await eventually(lambda: len(laptop.queued) == 5)
    await laptop.ack(1_000_000)  # above anything sent: bounded to the last cursor sent (5)

    async def device_at(cursor: int) -> bool:
        doc = await devices.find_one({"tenant_id": TENANT, "agent_id": "ana", "device_id": "laptop"})
        return doc is not None and doc["cursor"] == cursor

    await eventually(lambda: device_at(5), message="the ack was not bounded to the last cursor sent")
    await laptop.close()
    again = await StreamClient.connect(gw.url, tokens.ticket("ana", "laptop"), name="laptop-again")
    await outbox.post(cid, "ben")
    await eventually(lambda: again.messages() == [(cid, 3)])
    assert [f["cursor"] for f in again.queued] == [6, 7]
    await again.close()


async def _head_at_least(heads, agent: str, cursor: int) -> bool:
    doc = await heads.find_one({"tenant_id": TENANT, "agent_id": agent})
    return doc is not None and doc["cursor"] >= cursor


async def _count_is(counting, n: int) -> bool:
    return await counting == n


async def _pruned_through(heads, agent: str, at_least: int) -> bool:
    doc = await heads.find_one({"tenant_id": TENANT, "agent_id": agent})
    return doc is not None and doc.get("pruned_through", 0) >= at_least


async def test_leaving_a_thread_stops_delivery_of_later_messages(stack, outbox, tokens):
    await stack.start_worker()
    gw = await stack.start_gateway()
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben")
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.post(cid, "ana", 3)
    await eventually(lambda: len(ben.messages()) == 3)
    await outbox.change_participants(cid, removed=["ben"])
    await outbox.post(cid, "ana", 3)
    await eventually(lambda: len(ana.messages()) == 6)
    # ben learnt that he left (the update lists the remaining participants) and got nothing later.
    # (A message's update says participants null: unchanged.)
    await eventually(lambda: any(f["type"] == "conversation.updated" and
                                 [p["id"] for p in f["conversation"]["participants"] or ()] == ["ana"]
                                 for f in ben.queued))
    await outbox.post(cid, "ana")
    await eventually(lambda: len(ana.messages()) == 7)
    assert ben.messages() == [(cid, 1), (cid, 2), (cid, 3)]
    await ana.close()
    await ben.close()


async def test_typing_and_presence_are_pushed_live_to_thread_partners_only(stack, outbox, tokens):
    await stack.start_worker()
    gw1, gw2 = await stack.start_gateway(), await stack.start_gateway()
    cid = await outbox.start_conversation(["ana", "ben"])
    await outbox.start_conversation(["cy", "dee"])
    ana = await StreamClient.connect(gw1.url, tokens.ticket("ana"), name="ana")
    ben = await StreamClient.connect(gw2.url, tokens.ticket("ben"), name="ben")
    dee = await StreamClient.connect(gw2.url, tokens.ticket("dee"), name="dee")
    await eventually(lambda: ana.queued and ben.queued and dee.queued)  # the thread starts arrived

    await ana.send({"type": "typing", "conversation_id": cid})
    await eventually(lambda: {"type": "typing", "conversation_id": cid, "agent_id": "ana"} in ben.live)
    presence = AgentPresence(tenant_id=TENANT, agent_id="ben", status="away",
                             last_seen_at=datetime(2026, 1, 2, tzinfo=UTC), connections=1)
    await outbox.send(topics.PRESENCE, topics.agent_key(TENANT, "ben"), presence)
    await eventually(lambda: any(f["type"] == "presence.changed" for f in ana.live))
    assert [f for f in ana.live if f["type"] == "presence.changed"] == [
        {"type": "presence.changed", "agent_id": "ben", "status": "away", "last_seen_at": "2026-01-02T00:00:00.000Z"}]
    # Live frames reach partners only, carry no cursor, and the typist does not hear itself.
    await dee.send({"type": "typing", "conversation_id": cid})  # not dee's thread: goes nowhere
    await ben.send({"type": "typing", "conversation_id": cid})
    await eventually(lambda: {"type": "typing", "conversation_id": cid, "agent_id": "ben"} in ana.live)
    assert not dee.live and all(f["agent_id"] != "ana" for f in ana.live if f["type"] == "typing")
    assert {"type": "typing", "conversation_id": cid, "agent_id": "dee"} not in ana.live
    for client in (ana, ben, dee):
        await client.close()


async def test_a_client_frame_that_is_not_a_json_object_with_a_type_closes_the_socket_4400(stack, outbox, tokens):
    """Including one nested past the JSON parser's depth limit (a RecursionError, which used to end
    the connection's reader with an unhandled exception); a newer client's unknown frame type is
    ignored, not refused, and the gateway goes on serving."""
    await stack.start_worker()
    gw = await stack.start_gateway()
    cid = await outbox.start_conversation(["ana", "ben"])
    for bad in ("[" * 50_000, '{"a":' * 10_000 + "1" + "}" * 10_000, "not json", "[1, 2]", '"ack"',
                '{"cursor": 1}', '{"type": 5}', b"\xff\xfe"):
        client = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
        await client.ws.send(bad)
        assert await client.closed_with() == 4400, bad[:20]
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben")
    await eventually(lambda: ana.queued and ben.queued)
    await ana.send({"type": "from-a-newer-client", "x": 1})
    await ana.send({"type": "typing", "conversation_id": cid})
    await eventually(lambda: {"type": "typing", "conversation_id": cid, "agent_id": "ana"} in ben.live)
    assert ana.close_code is None
    for client in (ana, ben):
        await client.close()


async def test_bad_records_are_dead_lettered_once_even_when_re_read_and_never_stall_the_queue(
    stack, outbox, tokens, kafka_bootstrap, kafka_topics, mongo, mongo_db_name
):
    # Before the worker starts: a malformed record, then (same partition) a message of a thread
    # whose start never comes. The worker pauses that partition and re-reads it from the malformed
    # record every backoff for hold_back_s (2 s) before it delivers with the message's own facts:
    # the malformed record must be dead-lettered once, not on every re-read.
    orphan = "c-orphan"
    outbox.snapshots[orphan] = _snapshot(orphan, ["ben", "ana"])
    outbox.seqs[orphan] = 0
    await outbox.raw(topics.MESSAGES, topics.conversation_key(orphan), b"{not json")
    await outbox.send(topics.MESSAGES, topics.conversation_key(orphan), outbox.message(orphan, "ben"))
    # A write error that is not a duplicate (here a validator an operator added; in life e.g. an
    # entry too large) must be dead-lettered, not retried forever as if another writer raced us.
    await mongo[mongo_db_name].create_collection("delivery_queue", validator={"frame.poison": {"$exists": False}})

    await stack.start_worker()
    gw = await stack.start_gateway()
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    await outbox.raw(topics.MESSAGES, b"c-bad", b"{not json")
    await outbox.raw(topics.CONVERSATIONS, b"c-bad", b'{"type": "ConversationStarted", "tenant_id": "acme"}')
    await outbox.raw(topics.INBOX, b"acme:ana", b'{"type": "Surprise", "tenant_id": "acme"}')
    await outbox.raw(topics.MESSAGES, b"c-bad", b'{"type": "MessagePosted", "schema_version": 9}')
    poison = QueueAppend(tenant_id=TENANT, agent_id="ana", dedupe_key="poison", frame={"type": "x", "poison": 1})
    await outbox.send(topics.INBOX, topics.agent_key(TENANT, "ana"), poison)
    cid = await outbox.start_conversation(["ben", "ana"])
    await outbox.post(cid, "ben", 2)
    await eventually(lambda: (orphan, 1) in ana.messages() and (cid, 2) in ana.messages(), timeout=30)
    assert sorted(ana.messages()) == sorted([(orphan, 1), (cid, 1), (cid, 2)])

    # Every dead letter is written before the record after it is handled: the topic is complete now.
    letters = await read_events(topics.DEAD_LETTERS, kafka_topics, bootstrap=kafka_bootstrap, to_end=True)
    got = sorted((d.original_topic.removeprefix(kafka_topics), d.reason, d.consumer) for d in letters)
    fanout, queue = f"{kafka_topics}fanout", f"{kafka_topics}queue"  # the test's own groups (conftest)
    assert got == sorted([
        ("im.messages.v1", "malformed_json", fanout),  # before the orphan: re-read while it waited
        ("im.messages.v1", "malformed_json", fanout),  # c-bad's
        ("im.conversations.v1", "invalid_event", fanout),
        ("im.inbox.v1", "unknown_event_type", queue),
        ("im.messages.v1", "unsupported_schema_version", fanout),
        ("im.inbox.v1", "processing_failed", queue),
    ])
    assert len({(d.original_topic, d.original_partition, d.original_offset) for d in letters}) == len(letters)
    assert base64.b64decode(next(d for d in letters if d.reason == "malformed_json").original_value_b64) == b"{not json"
    await ana.close()


def _snapshot(cid: str, participants: list[str]):
    from im_contracts.models import ConversationSnapshot, Participant

    return ConversationSnapshot(id=cid, participants=[Participant(id=a, display_name=a.upper()) for a in participants],
                                created_by=participants[0], created_at=datetime.now(UTC))


async def test_a_client_sending_frames_past_its_rate_is_closed_4429_and_others_go_on(stack, outbox, tokens):
    """Per agent (all its sockets on the gateway) and per tenant: a token bucket of 10 frames
    refilled at 0.01/s, so the eleventh frame in a test's lifetime is over the limit whatever the
    machine's speed. Another agent's socket stays open and keeps being served."""
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_CLIENT_FRAME_RATE_PER_AGENT="0.01",
                                   IM_DELIVERY_CLIENT_FRAME_BURST_PER_AGENT="10")
    cid = await outbox.start_conversation(["ana", "ben"])
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben")
    await eventually(lambda: ana.queued and ben.queued)
    for _ in range(10):
        await ana.send({"type": "typing", "conversation_id": cid})
    assert ana.close_code is None
    await ana.send({"type": "idle"})
    assert await ana.closed_with() == 4429
    again = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana-2")
    await again.send({"type": "active"})
    assert await again.closed_with() == 4429, "the agent's bucket spans its sockets"
    await ben.send({"type": "typing", "conversation_id": cid})
    [posted] = await outbox.post(cid, "ana")
    await eventually(lambda: (cid, posted.message.seq) in ben.messages(), message="ben is still served")
    assert ben.close_code is None
    await ben.close()


async def test_a_tenant_past_its_frame_rate_is_closed_4429(stack, outbox, tokens):
    """The tenant's bucket (4 frames, refilled at 0.01/s) is spent by ana alone; cy, who has sent
    nothing (its own bucket is full), is then refused too: the limit is the tenant's."""
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_CLIENT_FRAME_RATE_PER_TENANT="0.01",
                                   IM_DELIVERY_CLIENT_FRAME_BURST_PER_TENANT="4")
    cid = await outbox.start_conversation(["ana", "cy"])
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    cy = await StreamClient.connect(gw.url, tokens.ticket("cy"), name="cy")
    await eventually(lambda: ana.queued and cy.queued)
    for _ in range(5):
        await ana.send({"type": "typing", "conversation_id": cid})
    assert await ana.closed_with() == 4429
    await cy.send({"type": "typing", "conversation_id": cid})
    assert await cy.closed_with() == 4429


async def test_sockets_past_the_agents_or_the_gateways_cap_are_closed_4429(stack, outbox, tokens):
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_MAX_CONNECTIONS_PER_AGENT="2", IM_DELIVERY_MAX_CONNECTIONS="3")
    await outbox.start_conversation(["ana", "ben", "cy"])
    # A socket counts once it is set up (its replay came): the handshake completes before that.
    ana = [await StreamClient.connect(gw.url, tokens.ticket("ana", f"tab-{i}"), name=f"ana-{i}") for i in (1, 2)]
    await eventually(lambda: all(a.queued for a in ana))
    third = await StreamClient.connect(gw.url, tokens.ticket("ana", "tab-3"), name="ana-3")
    assert await third.closed_with() == 4429, "the agent's third socket"
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben"), name="ben")
    await eventually(lambda: ben.queued)
    cy = await StreamClient.connect(gw.url, tokens.ticket("cy"), name="cy")
    assert await cy.closed_with() == 4429, "the gateway's fourth socket"
    assert ben.close_code is None and all(a.close_code is None for a in ana)
    await ana[0].close()

    async def cy_gets_in() -> bool:  # once the gateway has let ana's socket go
        client = await StreamClient.connect(gw.url, tokens.ticket("cy"), name="cy")
        try:
            await eventually(lambda: client.queued or client.task.done(), timeout=10)
            return bool(client.queued) and client.close_code is None
        finally:
            await client.ws.close()

    await eventually(cy_gets_in, timeout=15, message="a freed place was never given again")
    for client in (ana[1], ben):
        await client.close()


async def test_an_agents_devices_are_capped_and_an_unused_device_expires_and_pins_nothing(
        stack, outbox, tokens, mongo, mongo_db_name):
    """Three devices at most: a fourth forgets the least recently used. A device silent past the
    expiry is forgotten by the pruning job, and the entries it never acknowledged are then pruned
    (retention 0 here) instead of waiting for the queue's hard cap."""
    await stack.start_worker(IM_DELIVERY_RETENTION_S="0", IM_DELIVERY_DEVICE_EXPIRY_S="3600",
                             IM_DELIVERY_MAX_DEVICES_PER_AGENT="3")
    gw = await stack.start_gateway(IM_DELIVERY_MAX_DEVICES_PER_AGENT="3")
    db = mongo[mongo_db_name]
    devices, heads = db["delivery_devices"], db["delivery_heads"]
    cid = await outbox.start_conversation(["ana", "ben"])
    for device in ("old-laptop", "phone", "desk"):
        client = await StreamClient.connect(gw.url, tokens.ticket("ana", device), name=device)
        await eventually(lambda: client.queued)
        await client.close()

    async def ana_devices() -> list[str]:
        return sorted([d["device_id"] async for d in devices.find({"tenant_id": TENANT, "agent_id": "ana"})])

    assert await ana_devices() == ["desk", "old-laptop", "phone"]
    # old-laptop is the least recently used: it acknowledged nothing since, the others did.
    await devices.update_one({"tenant_id": TENANT, "agent_id": "ana", "device_id": "old-laptop"},
                             {"$set": {"updated_at": datetime(2026, 1, 1, tzinfo=UTC)}})
    tablet = await StreamClient.connect(gw.url, tokens.ticket("ana", "tablet"), name="tablet")
    await eventually(lambda: tablet.queued)
    assert await ana_devices() == ["desk", "phone", "tablet"]

    # "phone" is abandoned: last heard from beyond the expiry, at cursor 0.
    await devices.update_one({"tenant_id": TENANT, "agent_id": "ana", "device_id": "phone"},
                             {"$set": {"updated_at": datetime(2026, 1, 1, tzinfo=UTC), "cursor": 0}})
    await outbox.post(cid, "ben", 3)
    await eventually(lambda: tablet.cursor >= 7)
    await tablet.ack()
    desk = await StreamClient.connect(gw.url, tokens.ticket("ana", "desk"), name="desk")
    await eventually(lambda: desk.cursor >= 7)
    await desk.ack()
    await eventually(lambda: _pruned_through(heads, "ana", 7), message="the abandoned device still pins the queue")
    assert await ana_devices() == ["desk", "tablet"]
    for client in (tablet, desk):
        await client.close()


async def test_acks_that_move_the_cursor_are_not_counted_against_the_frame_rate_but_repeats_are(
        stack, outbox, tokens, mongo, mongo_db_name):
    """A busy agent acks every message it is sent: those acks must not get it closed. An ack that
    moves nothing (a repeat) counts like any other frame, and writes nothing."""
    await stack.start_worker()
    gw = await stack.start_gateway(IM_DELIVERY_CLIENT_FRAME_RATE_PER_AGENT="0.01",
                                   IM_DELIVERY_CLIENT_FRAME_BURST_PER_AGENT="3")
    cid = await outbox.start_conversation(["ana", "ben"])
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana"), name="ana")
    await outbox.post(cid, "ben", 6)
    acked = 0
    while acked < 13:  # the start's update, then 6 messages with their updates: one ack each
        await eventually(lambda: ana.cursor > acked, message="ana got nothing more")
        for cursor in range(acked + 1, ana.cursor + 1):
            await ana.ack(cursor)
        acked = ana.cursor
    devices = mongo[mongo_db_name]["delivery_devices"]
    await eventually(lambda: _count_is(devices.count_documents({"agent_id": "ana", "cursor": 13}), 1))
    assert ana.close_code is None, "13 advancing acks, a bucket of 3: none counted"
    for _ in range(4):
        await ana.ack(13)
    assert await ana.closed_with() == 4429
