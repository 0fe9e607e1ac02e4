"""Presence as real processes (`python -m im_presence`): a crash and restart, and two processes in one group."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest
from presence_kit import agent_ids, grace_has_passed, presence_docs, tenant
from support.wait import eventually

pytestmark = pytest.mark.e2e


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as client:
        try:
            return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False


async def test_presence_killed_mid_flight_and_restarted_keeps_every_status_and_fires_pending_deadlines(
    start_presence, gateways, presence_out, mongo, mongo_db_name
):
    # A longer grace here, so the pending deadline is certainly still pending at the crash.
    first = start_presence(IM_PRESENCE_OFFLINE_GRACE_S="3")
    await first.wait_ready()
    gw = gateways()
    t, (stays, idles, leaves) = tenant(), agent_ids(3)
    for agent in (stays, idles, leaves):
        await gw.open(t, agent, f"{agent}-tab")
    await gw.idle(t, idles, f"{idles}-tab")
    await presence_out.wait_for(t, stays, "online")
    await presence_out.wait_for(t, idles, "away")
    await presence_out.wait_for(t, leaves, "online")

    await gw.close(t, leaves, f"{leaves}-tab")

    async def deadline_pending() -> bool:
        doc = (await presence_docs(mongo, mongo_db_name)).get(f"{t}:{leaves}")
        return bool(doc and doc["grace_deadline"])

    await eventually(deadline_pending, timeout=10)
    await asyncio.to_thread(first.kill)  # SIGKILL: no clean shutdown, the deadline only exists in MongoDB
    assert presence_out.latest(t, leaves) == "online"

    second = start_presence(IM_PRESENCE_OFFLINE_GRACE_S="3", IM_PRESENCE_COUNT_INTERVAL_S="0.2")
    await second.wait_ready(timeout=60)
    await presence_out.wait_for(t, leaves, "offline", timeout=30)
    # The restarted process goes on applying events where the first stopped.
    await gw.active(t, idles, f"{idles}-tab")
    await presence_out.wait_for(t, idles, "online")

    assert presence_out.statuses(t, stays) == ["online"]
    assert presence_out.statuses(t, idles) == ["online", "away", "online"]
    assert presence_out.statuses(t, leaves) == ["online", "offline"]
    base = second.ready_url.removesuffix("/readyz")
    async with httpx.AsyncClient(timeout=5.0) as client:
        assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
        ready = (await client.get(f"{base}/readyz")).json()
        assert ready["checks"] == {"mongodb": True, "kafka": True, "consumer_assigned": True, "gateway_heartbeats": True}
        metrics = (await client.get(f"{base}/metrics")).text
        assert 'im_presence_published_total{status="offline"} 1.0' in metrics

        async def counted() -> str:
            text = (await client.get(f"{base}/metrics")).text
            return text if 'im_presence_agents{status="online"} 2.0' in text else ""

        # stays and idles are online again, leaves is offline: the owned agents counted by status.
        metrics = await eventually(counted, timeout=10)
    assert 'im_presence_agents{status="offline"} 1.0' in metrics
    assert 'im_presence_agents{status="away"} 0.0' in metrics


async def test_two_presence_processes_in_one_group_lose_nothing_and_show_no_false_offline_across_rebalances(
    start_presence, gateways, presence_out, mongo, mongo_db_name
):
    first = start_presence()
    await first.wait_ready()
    gw = gateways()
    t, agents = tenant(), agent_ids(12)
    reloads, leave_early, leave_late, idles = agents[:3], agents[3:6], agents[6:9], agents[9:]
    for agent in agents:
        await gw.open(t, agent, f"{agent}-1")
    for agent in agents:
        await presence_out.wait_for(t, agent, "online")

    # A second process joins: the group rebalances and the two share the partitions.
    second = start_presence()
    await second.wait_ready(timeout=60)
    await eventually(lambda: _ready(first.ready_url), timeout=30, message="the first process owns nothing")
    for agent in reloads:
        await gw.close(t, agent, f"{agent}-1")
        await gw.open(t, agent, f"{agent}-2")
    for agent in leave_early:
        await gw.close(t, agent, f"{agent}-1")
    for agent in idles:
        await gw.idle(t, agent, f"{agent}-1")
    for agent in leave_early:
        await presence_out.wait_for(t, agent, "offline")
    for agent in idles:
        await presence_out.wait_for(t, agent, "away")

    # Departures with pending grace deadlines, then the first process leaves (SIGTERM) and its
    # partitions move while reloads and activity keep coming.
    for agent in leave_late:
        await gw.close(t, agent, f"{agent}-1")
    first.signal(signal.SIGTERM)
    for agent in reloads:
        await gw.close(t, agent, f"{agent}-2")
        await gw.open(t, agent, f"{agent}-3")
    for agent in idles:
        await gw.active(t, agent, f"{agent}-1")
    await asyncio.to_thread(first.stop)
    assert "presence stopped" in first.tail(), "the first process did not shut down cleanly"
    for agent in leave_late:
        await presence_out.wait_for(t, agent, "offline", timeout=30)
    for agent in idles:
        await presence_out.wait_for(t, agent, "online", timeout=30)
    await grace_has_passed(gw, presence_out)

    for agent in reloads:
        assert presence_out.statuses(t, agent) == ["online"], agent
    for agent in leave_early + leave_late:
        assert presence_out.statuses(t, agent) == ["online", "offline"], agent
    for agent in idles:
        assert presence_out.statuses(t, agent) == ["online", "away", "online"], agent
    docs = await presence_docs(mongo, mongo_db_name)
    for agent in reloads:
        assert [c["id"] for c in docs[f"{t}:{agent}"]["connections"]] == [f"{agent}-3"]
