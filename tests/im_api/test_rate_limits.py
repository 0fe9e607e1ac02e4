"""Rate limits on sends and ticket mints, per agent and per tenant: 429 with Retry-After, nothing
written, other agents and tenants unaffected, and the allowance back once the time has passed.

The limiter's clock is the test's (a settable number), so "time passes" is exact, never slept."""

from __future__ import annotations

import pytest

from im_api_helpers import running
from support.reads import Reads
from test_bad_input_and_isolation import assert_error

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def limited(api_settings):
    settings = api_settings.model_copy(update=dict(
        send_rate_per_agent=1.0, send_burst_per_agent=3.0, send_rate_per_tenant=2.0, send_burst_per_tenant=5.0,
        ticket_rate_per_agent=0.5, ticket_burst_per_agent=2.0, ticket_rate_per_tenant=10.0,
        ticket_burst_per_tenant=10.0))
    reads = Reads()
    async with running(settings, event_listeners=[reads]) as api:
        api.reads = reads
        clock = Clock()
        api.app.state.services.limits.clock = clock
        api.clock = clock
        yield api


async def history(api, tenant, agent, cid) -> list[str]:
    r = await api.http.get(f"/v1/conversations/{cid}/messages", headers=api.auth(tenant, agent))
    return [m["body"] for m in r.json()["items"]]


async def test_an_agent_past_its_send_limit_gets_429_with_retry_after_and_nothing_is_written(limited):
    api = limited
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")  # a start is a send: one of alice's three
    for n in (1, 2):
        assert (await api.send(T, "alice", c["id"], f"m{n}", f"m{n}")).status_code == 201
    with api.reads.counting():
        refused = await api.send(T, "alice", c["id"], "m3", "m3")
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "1"
    # Not even the directory read (the relay's own polling of the outbox goes on meanwhile).
    touched = {c: n for c, n in api.reads.commands.items() if c in ("agents", "conversations", "messages")}
    assert touched == {}, f"a refused send costs no database command: {touched}"
    assert await history(api, T, "bob", c["id"]) == ["m1", "m2"]
    assert (await api.send(T, "bob", c["id"], "bob's", "b1")).status_code == 201, "another agent is not limited"
    api.clock.now += 1.0
    assert (await api.send(T, "alice", c["id"], "m3", "m3")).status_code == 201
    assert await history(api, T, "bob", c["id"]) == ["m1", "m2", "bob's", "m3"]


async def test_a_tenant_past_its_send_limit_is_refused_while_another_tenant_sends(limited):
    api = limited
    agents = ["a1", "a2", "a3"]
    await api.add_agents(T, *agents)
    await api.add_agents(OTHER, "zed", "yan")
    c = await api.start(T, "a1", "a2", "a3")  # tenant: 4 left of 5
    statuses = [(await api.send(T, a, c["id"], f"{a}-{n}", f"{a}-{n}")).status_code
                for n in (1, 2) for a in agents]
    assert statuses == [201, 201, 201, 201, 429, 429]  # every agent within its own 3
    refused = await api.send(T, "a3", c["id"], "again", "again")
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert len(await history(api, T, "a1", c["id"])) == 4
    other = await api.start(OTHER, "zed", "yan")
    assert (await api.send(OTHER, "zed", other["id"], "unaffected", "z1")).status_code == 201
    api.clock.now += 0.5  # the tenant refills at 2/s: one send's worth
    assert (await api.send(T, "a3", c["id"], "later", "later")).status_code == 201


async def test_ticket_mints_are_limited_per_agent(limited):
    api = limited
    await api.add_agents(T, "alice", "bob")

    async def mint(agent):
        return await api.http.post("/v1/stream/tickets", json={"device_id": "d1"}, headers=api.auth(T, agent))

    assert [(await mint("alice")).status_code for _ in range(2)] == [201, 201]
    refused = await mint("alice")
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "2"  # one token at 0.5/s
    assert (await mint("bob")).status_code == 201
    api.clock.now += 2.0
    assert (await mint("alice")).status_code == 201
