"""Presence rules end to end on real Kafka + MongoDB: contract events in, AgentPresence out (in-process service)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest
from im_contracts.events import ConnectionIdle, ConnectionOpened, utcnow
from im_contracts.topics import CONNECTIONS, agent_key
from presence_kit import (
    GATEWAY_TIMEOUT_S,
    GRACE_S,
    SWEEP_INTERVAL_S,
    agent_ids,
    grace_has_passed,
    presence_docs,
    start_in_process,
    tenant,
)
from support.wait import eventually

pytestmark = pytest.mark.integration


async def test_reload_closing_and_reopening_within_grace_never_shows_offline(
    presence, gateways, presence_out, mongo, mongo_db_name
):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    await gw.open(t, a, "tab-1")
    await presence_out.wait_for(t, a, "online")

    await gw.close(t, a, "tab-1")
    await gw.open(t, a, "tab-1-reloaded")
    await grace_has_passed(gw, presence_out)

    assert presence_out.statuses(t, a) == ["online"]
    doc = (await presence_docs(mongo, mongo_db_name))[f"{t}:{a}"]
    assert [c["id"] for c in doc["connections"]] == ["tab-1-reloaded"]
    assert doc["grace_deadline"] is None


async def test_two_tabs_one_closed_stays_online(presence, gateways, presence_out):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    await gw.open(t, a, "tab-1")
    await gw.open(t, a, "tab-2")
    await presence_out.wait_for(t, a, "online")

    await gw.close(t, a, "tab-1")
    await grace_has_passed(gw, presence_out)
    # A visible change after the close proves the close was applied and published nothing.
    await gw.idle(t, a, "tab-2")
    await presence_out.wait_for(t, a, "away")

    assert presence_out.statuses(t, a) == ["online", "away"]
    assert presence_out.history(t, a)[-1].connections == 1


async def test_all_connections_idle_is_away_and_one_active_is_online(presence, gateways, presence_out):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    await gw.open(t, a, "tab-1")
    await gw.open(t, a, "phone")
    await gw.idle(t, a, "tab-1")
    await gw.idle(t, a, "phone")
    await presence_out.wait_for(t, a, "away")
    await gw.active(t, a, "phone")
    await presence_out.wait_for(t, a, "online")

    assert presence_out.statuses(t, a) == ["online", "away", "online"]


async def test_presence_is_published_only_when_what_users_see_changes(presence, gateways, presence_out):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    for tab in ("tab-1", "tab-2", "tab-3"):
        await gw.open(t, a, tab)  # the count changes, the status does not
    await gw.close(t, a, "tab-2")
    await gw.idle(t, a, "tab-1")  # tab-3 is still active: still online
    await gw.idle(t, a, "tab-1")  # a second idle of an idle tab
    await gw.idle(t, a, "tab-3")
    await presence_out.wait_for(t, a, "away")

    history = presence_out.history(t, a)
    assert [p.status for p in history] == ["online", "away"]
    assert history[-1].connections == 2
    assert history[-1].last_seen_at is None


async def test_offline_agent_keeps_last_seen_at_the_moment_it_left(
    presence, gateways, presence_out, mongo, mongo_db_name
):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    await gw.open(t, a, "tab-1")
    await presence_out.wait_for(t, a, "online")
    closed = await gw.close(t, a, "tab-1")
    offline = await presence_out.wait_for(t, a, "offline")

    left = closed.occurred_at.replace(microsecond=closed.occurred_at.microsecond // 1000 * 1000)
    assert offline.last_seen_at == left
    assert offline.connections == 0
    assert offline.occurred_at - closed.occurred_at >= timedelta(seconds=GRACE_S)
    doc = (await presence_docs(mongo, mongo_db_name))[f"{t}:{a}"]
    assert doc["status"] == "offline" and doc["last_seen_at"] == left


async def test_killed_gateway_without_close_events_takes_its_agents_offline_after_the_timeout(
    presence, gateways, presence_out
):
    doomed, healthy = gateways(), gateways()
    t, (a, b) = tenant(), agent_ids(2)
    await doomed.open(t, a, "tab-a")
    await healthy.open(t, b, "tab-b")
    await presence_out.wait_for(t, a, "online")
    await presence_out.wait_for(t, b, "online")

    await doomed.stop_beating()
    killed_at = time.monotonic()
    offline = await presence_out.wait_for(t, a, "offline", timeout=GATEWAY_TIMEOUT_S + GRACE_S + 10)

    assert time.monotonic() - killed_at >= GATEWAY_TIMEOUT_S
    assert offline.last_seen_at is not None
    assert presence_out.statuses(t, a) == ["online", "offline"]
    assert presence_out.statuses(t, b) == ["online"]


async def test_gateway_back_with_a_new_epoch_expires_its_old_connections(presence, gateways, presence_out):
    gw = gateways()
    t, (gone, back) = tenant(), agent_ids(2)
    await gw.open(t, gone, "c-gone")
    await gw.open(t, back, "c-back")
    await presence_out.wait_for(t, gone, "online")
    await presence_out.wait_for(t, back, "online")
    old_epoch = gw.epoch

    await gw.reboot()  # no close events for its old connections
    await gw.open(t, back, "c-back-reconnected")  # one client reconnects to the new boot at once
    await presence_out.wait_for(t, gone, "offline", timeout=GRACE_S + 10)

    # A late event of the old boot cannot bring the expired connection back.
    await gw.send(ConnectionOpened(tenant_id=t, agent_id=gone, connection_id="c-gone-late", device_id="d",
                                   gateway_id=gw.gateway_id, gateway_epoch=old_epoch))
    await grace_has_passed(gw, presence_out)
    assert presence_out.statuses(t, gone) == ["online", "offline"]
    assert presence_out.statuses(t, back) == ["online"]


async def test_events_of_another_tenant_never_leak_into_a_tenants_presence(
    presence, gateways, presence_out, dead_letters
):
    gw = gateways()
    mine, theirs = tenant(), tenant()
    # Same agent id and connection id in both tenants: only the tenant tells them apart.
    await gw.open(mine, "agent-1", "c-1")
    await gw.open(theirs, "agent-1", "c-1")
    await presence_out.wait_for(mine, "agent-1", "online")
    await presence_out.wait_for(theirs, "agent-1", "online")

    await gw.close(theirs, "agent-1", "c-1")
    # Another tenant's event keyed as ours is refused, not applied to our agent.
    await gw.send(ConnectionIdle(tenant_id=theirs, agent_id="agent-1", connection_id="c-1", device_id="d",
                                 gateway_id=gw.gateway_id, gateway_epoch=gw.epoch),
                  key=agent_key(mine, "agent-1"))
    await presence_out.wait_for(theirs, "agent-1", "offline")
    await eventually(lambda: [d for d in dead_letters.events if d.tenant_id == theirs], timeout=10)

    assert presence_out.statuses(mine, "agent-1") == ["online"]
    assert [d.reason for d in dead_letters.events] == ["invalid_event"]


async def test_redelivered_and_duplicated_events_change_nothing(presence, gateways, presence_out):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    opened = await gw.open(t, a, "tab-1")
    went_idle = await gw.idle(t, a, "tab-1")
    await presence_out.wait_for(t, a, "away")
    await gw.active(t, a, "tab-1")
    await presence_out.wait_for(t, a, "online")

    await gw.send(went_idle)  # the same event again, after a later one
    await gw.send(opened)
    await gw.close(t, a, "tab-1")
    await gw.send(opened)  # a replayed open cannot revive a closed connection
    await presence_out.wait_for(t, a, "offline")
    await grace_has_passed(gw, presence_out)

    assert presence_out.statuses(t, a) == ["online", "away", "online", "offline"]


async def test_a_whole_replay_of_the_connection_log_publishes_nothing_new(
    presence, gateways, presence_out, presence_settings
):
    gw = gateways()
    t, (a, b, c) = tenant(), agent_ids(3)
    await gw.open(t, a, "a-1")
    await gw.open(t, b, "b-1")
    await gw.idle(t, b, "b-1")
    await gw.open(t, c, "c-1")
    await gw.close(t, c, "c-1")
    await presence_out.wait_for(t, a, "online")
    await presence_out.wait_for(t, b, "away")
    await presence_out.wait_for(t, c, "offline")
    published = len(presence_out.events)
    await presence.stop()

    # A new consumer group redelivers every record from the start, against the same state.
    replay = await start_in_process(presence_settings(consumer_group="replay"))
    try:
        await eventually(lambda: _replayed_to_end(replay), timeout=15)
        await grace_has_passed(gw, presence_out)
    finally:
        await replay.stop()
    witness_records = 2
    assert len(presence_out.events) == published + witness_records
    assert presence_out.statuses(t, c) == ["online", "offline"]


async def _replayed_to_end(process) -> bool:
    consumer = process.ownership.subscriber.consumer
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None or (await consumer.committed(tp) or 0) < high:
            return False
    return True


async def test_malformed_connection_events_are_dead_lettered_and_the_consumer_moves_on(
    presence, gateways, presence_out, dead_letters, producer, kafka_topics
):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    topic = CONNECTIONS.name(kafka_topics)
    key = agent_key(t, a)
    await producer.send_and_wait(topic, b"{not json", key=key)
    await producer.send_and_wait(topic, b'{"type": "ConnectionOpened", "tenant_id": "%s", "agent_id": "%s"}'
                                 % (t.encode(), a.encode()), key=key)
    v2 = ConnectionOpened(tenant_id=t, agent_id=a, connection_id="c-v2", device_id="d",
                          gateway_id=gw.gateway_id, gateway_epoch=gw.epoch, schema_version=2)
    await producer.send_and_wait(topic, v2.to_bytes(), key=key)
    await producer.send_and_wait(topic, b'{"type": "ConnectionTeleported", "tenant_id": "x"}', key=key)
    await gw.open(t, a, "tab-1")
    await presence_out.wait_for(t, a, "online")

    await eventually(lambda: len(dead_letters.events) == 4, timeout=10,
                     message=lambda: f"dead letters: {[d.reason for d in dead_letters.events]}")
    letters = dead_letters.events
    assert [d.reason for d in letters] == [
        "malformed_json", "invalid_event", "unsupported_schema_version", "unknown_event_type"
    ]
    assert all(d.original_topic == topic and d.consumer == "im-presence" for d in letters)
    assert "connection_id" in letters[1].detail
    assert presence_out.statuses(t, a) == ["online"]


async def test_mongodb_outage_pauses_presence_and_nothing_is_lost_when_it_returns(
    presence_settings, private_mongo, gateways, presence_out, dead_letters, caplog
):
    process = await start_in_process(presence_settings(mongo_uri=private_mongo.uri))
    try:
        gw = gateways()
        t, (a, b) = tenant(), agent_ids(2)
        await gw.open(t, a, "a-tab")
        await gw.open(t, b, "b-tab")
        await presence_out.wait_for(t, a, "online")
        await presence_out.wait_for(t, b, "online")

        await asyncio.to_thread(private_mongo.stop)
        await gw.idle(t, a, "a-tab")
        await gw.close(t, b, "b-tab")
        await gw.open(t, b, "b-tab-reloaded")
        caplog.set_level(logging.WARNING, logger="im_runtime.kafka")
        await eventually(lambda: any(r.getMessage() == "transient failure: partition paused" for r in caplog.records),
                         timeout=30, message="the consumer never paused on the outage")
        await asyncio.to_thread(private_mongo.start)

        await presence_out.wait_for(t, a, "away", timeout=30)
        await grace_has_passed(gw, presence_out)
        assert presence_out.statuses(t, a) == ["online", "away"]
        assert presence_out.statuses(t, b) == ["online"]
        assert dead_letters.events == []  # a transient failure is retried, never dead-lettered
    finally:
        await process.stop()


async def test_an_overdue_deadline_does_not_fire_while_a_reopen_waits_unread_after_a_restart(
    presence, presence_settings, gateways, presence_out, mongo, mongo_db_name
):
    gw = gateways()
    t, (a,) = tenant(), agent_ids(1)
    await gw.open(t, a, "tab-1")
    await presence_out.wait_for(t, a, "online")
    await gw.close(t, a, "tab-1")

    async def pending_deadline():
        doc = (await presence_docs(mongo, mongo_db_name)).get(f"{t}:{a}")
        return doc and doc["grace_deadline"]

    deadline = await eventually(pending_deadline, timeout=10)
    await presence.stop()
    for _ in range(100):  # a backlog ahead of the reload, on the agent's own partition
        await gw.idle(t, a, "tab-gone")
    await gw.open(t, a, "tab-1-reloaded")  # the reload reaches Kafka while no presence runs
    await eventually(lambda: utcnow() > deadline + timedelta(seconds=GRACE_S), timeout=10)

    restarted = await start_in_process(presence_settings())
    try:
        await eventually(lambda: _replayed_to_end(restarted), timeout=15)
        await grace_has_passed(gw, presence_out)
    finally:
        await restarted.stop()
    assert presence_out.statuses(t, a) == ["online"]


async def test_a_retired_epoch_is_looked_for_once_per_recheck_not_every_sweep(presence, gateways, presence_out):
    """Issue 19: a gateway's retired epoch (kept for a day) made every sweep, every second, scan the
    owned agents for its connections: with 10,000 agents that scan alone kept the database at a
    core. It is asked when the epoch retires, then again once per IM_PRESENCE_GATEWAY_RECHECK_S."""
    gw = gateways()
    t, (gone,) = tenant(), agent_ids(1)
    await gw.open(t, gone, "c-gone")
    await presence_out.wait_for(t, gone, "online")
    store = presence.service.store
    asked: list[tuple] = []
    on_gateway = store.on_gateway

    async def counted(partitions, gateway_id, epochs):
        asked.append((gateway_id, epochs))
        return await on_gateway(partitions, gateway_id, epochs)

    store.on_gateway = counted
    await gw.reboot()
    await presence_out.wait_for(t, gone, "offline", timeout=GRACE_S + 10)  # expired by that scan
    sweeps = presence.service._swept_at
    await eventually(lambda: presence.service._swept_at is not None
                     and (presence.service._swept_at - sweeps).total_seconds() >= 3 * SWEEP_INTERVAL_S,
                     timeout=30, message="the sweeper stopped")
    assert len([a for a in asked if a[0] == gw.gateway_id]) == 1, asked
