"""The agents directory: upsert, deactivation (next call 401), roles, and the presence-ordered picker."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from im_contracts.events import AgentChanged, AgentPresence
from im_contracts.topics import AGENTS, PRESENCE, agent_key

from im_api_helpers import read_events, running
from support.wait import eventually

pytestmark = pytest.mark.integration
T = "acme"


async def test_admins_upsert_and_deactivate_agents_and_the_next_call_of_a_deactivated_agent_is_401(api, endpoints):
    r = await api.http.put("/v1/agents/alice", json={"display_name": "Alice", "email": "a@x.io"},
                           headers=api.admin(T))
    assert r.status_code == 200 and r.json()["display_name"] == "Alice" and r.json()["active"] is True
    r = await api.http.put("/v1/agents/alice", json={"display_name": "Alice Martin"},
                           headers=api.auth(T, "ticketing", "service"))
    assert r.status_code == 200 and r.json()["display_name"] == "Alice Martin"
    await api.add_agents(T, "bob")
    listed = await api.http.get("/v1/agents", headers=api.auth(T, "alice"))
    assert listed.status_code == 200
    # What the contract lists, no more: an agent's email is not every colleague's to read.
    assert all(set(a) == {"id", "display_name", "role", "presence"} for a in listed.json()["items"]), listed.text
    # Agents may not manage the directory.
    assert (await api.http.put("/v1/agents/bob", json={"display_name": "B"},
                               headers=api.auth(T, "alice"))).status_code == 403
    assert (await api.http.delete("/v1/agents/bob", headers=api.auth(T, "alice"))).status_code == 403
    assert (await api.http.delete("/v1/agents/alice", headers=api.admin(T))).status_code == 204
    r = await api.http.get("/v1/agents", headers=api.auth(T, "alice"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "inactive_agent"
    listed = (await api.http.get("/v1/agents", headers=api.auth(T, "bob"))).json()["items"]
    assert [a["id"] for a in listed] == ["bob"]
    assert (await api.http.delete("/v1/agents/nobody", headers=api.admin(T))).status_code == 404
    events = await read_events(endpoints.kafka_bootstrap, AGENTS, api.settings.topic_prefix, 4)
    alice = [e for k, e, _ in events if k == agent_key(T, "alice")]
    assert [(e.display_name, e.active) for e in alice] == [("Alice", True), ("Alice Martin", True),
                                                            ("Alice Martin", False)]
    assert all(isinstance(e, AgentChanged) for _, e, _ in events)


async def test_the_picker_lists_online_then_away_then_offline_by_name_with_filters_and_pages(api, endpoints):
    for agent, name in [("a1", "zoe"), ("a2", "Yann"), ("a3", "xavier"), ("a4", "Walt"), ("a5", "vic"),
                        ("a6", "Victor")]:
        r = await api.http.put(f"/v1/agents/{agent}", json={"display_name": name}, headers=api.admin(T))
        assert r.status_code == 200
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap)
    await producer.start()
    try:
        for agent, status in [("a1", "online"), ("a3", "away"), ("a2", "online"), ("a5", "online"),
                              ("a5", "offline")]:
            event = AgentPresence(tenant_id=T, agent_id=agent, status=status, connections=1)
            await producer.send_and_wait(PRESENCE.name(api.settings.topic_prefix), event.to_bytes(),
                                         key=agent_key(T, agent))
    finally:
        await producer.stop()

    async def order() -> list[str]:
        r = await api.http.get("/v1/agents", headers=api.auth(T, "a1"))
        return [a["id"] for a in r.json()["items"]]

    expected = ["a2", "a1", "a3", "a5", "a6", "a4"]  # Yann, zoe | xavier | vic, Victor, Walt
    await eventually(lambda: _equals(order(), expected), timeout=10)
    r = (await api.http.get("/v1/agents?q=VI", headers=api.auth(T, "a1"))).json()
    assert [a["id"] for a in r["items"]] == ["a5", "a6"]
    r = (await api.http.get("/v1/agents?status=online", headers=api.auth(T, "a1"))).json()
    assert [(a["id"], a["presence"]["status"]) for a in r["items"]] == [("a2", "online"), ("a1", "online")]
    walked, cursor = [], None
    while True:
        url = "/v1/agents?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.http.get(url, headers=api.auth(T, "a1"))).json()
        walked += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert walked == expected

    # The same walks with a budget of one directory row per request and every group walked by
    # name (no read by id): pages end early, some empty, and following next_cursor still yields
    # every agent once, in order, whatever the filters.
    directory = api.app.state.services.directory
    directory.scan_max, directory.scan_chunk, directory.by_id_max = 1, 1, 0
    for query, want in [("", expected), ("&q=vi", ["a5", "a6"]), ("&status=online", ["a2", "a1"]),
                        ("&status=offline", ["a5", "a6", "a4"])]:
        walked, cursor, sizes = [], None, []
        while True:
            url = "/v1/agents?limit=2" + query + (f"&cursor={cursor}" if cursor else "")
            page = (await api.http.get(url, headers=api.auth(T, "a1"))).json()
            walked += [a["id"] for a in page["items"]]
            sizes.append(len(page["items"]))
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert walked == want, query
        assert 0 in sizes or len(sizes) > len(want) // 2 + 1, f"{query}: the budget never cut a page"
    ready = await api.http.get("/readyz")
    assert ready.json()["checks"]["presence_cache"] is True


async def _equals(value, expected) -> bool:
    return (await value) == expected


async def test_an_agent_coming_online_while_the_list_is_read_is_still_listed(api):
    """Presence changes between a request's reads (the cache is fed by Kafka meanwhile): an agent
    read as offline-to-be when the online group was read, and online by the time the offline
    group is walked, must still appear — the request works on one snapshot of presence."""
    for agent in ("a1", "b2"):
        assert (await api.http.put(f"/v1/agents/{agent}", json={"display_name": agent},
                                   headers=api.admin(T))).status_code == 200
    store, presence = api.app.state.services.store, api.app.state.presence
    presence.apply(T, "a1", "online", None)  # the tenant's online set exists already
    read_page = store.active_agents_page

    async def page_after_b2_comes_online(*args, **kwargs):
        presence.apply(T, "b2", "online", None)  # lands while this request is under way
        return await read_page(*args, **kwargs)

    store.active_agents_page = page_after_b2_comes_online
    try:
        r = await api.http.get("/v1/agents", headers=api.auth(T, "a1"))
    finally:
        store.active_agents_page = read_page
    assert sorted(a["id"] for a in r.json()["items"]) == ["a1", "b2"]


async def test_a_deactivation_made_through_another_im_api_is_refused_there_within_the_recheck(api_settings):
    """Issue 19: the agent check remembers the directory's answers (ActiveAgents) and reads a
    tenant's directory versions again every IM_API_DIRECTORY_RECHECK_S: no read per request, and a
    deactivation made through another process moves a version, so it is refused there too."""
    quick = api_settings.model_copy(update={"directory_recheck_s": 0.5})
    async with running(quick) as one, running(quick) as two:
        await one.add_agents(T, "dora", "eve")
        active = two.app.state.services.active
        reads: list[str] = []
        load = active.load

        async def counted(tenant_id: str, agent_id: str) -> bool:
            reads.append(agent_id)
            return await load(tenant_id, agent_id)

        active.load = counted

        async def status(agent: str) -> int:
            return (await two.http.get("/v1/agents", headers=two.auth(T, agent))).status_code

        for _ in range(5):
            assert await status("dora") == 200 and await status("eve") == 200
        assert reads.count("dora") == 1 and reads.count("eve") == 1  # remembered, not read per call
        assert (await one.http.delete("/v1/agents/dora", headers=one.admin(T))).status_code == 204
        await eventually(lambda: _is(status("dora"), 401), timeout=30,
                         message="the second process still lets the deactivated agent in")
        assert reads.count("dora") == 2  # read again once its bucket's version moved
        assert await status("eve") == 200


async def _is(status, wanted: int) -> bool:
    return await status == wanted
