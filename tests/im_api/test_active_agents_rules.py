"""The agent check's memory of the directory (ActiveAgents), pure: given reads and clock."""

from __future__ import annotations

import asyncio

from im_api.active_agents import ActiveAgents


class Directory:
    """The directory as the check sees it: agents' flags and bucket versions, reads counted."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, str], bool] = {}
        self.bucket_versions: dict[str, dict[int, int]] = {}
        self.reads: list[str] = []
        self.gate: asyncio.Event | None = None

    @staticmethod
    def bucket(agent_id: str) -> int:
        return 0 if agent_id < "m" else 1

    def change(self, tenant_id: str, agent_id: str, active: bool) -> None:
        """What a directory transaction does: the flag and its bucket's version together."""
        self.active[(tenant_id, agent_id)] = active
        versions = self.bucket_versions.setdefault(tenant_id, {})
        versions[self.bucket(agent_id)] = versions.get(self.bucket(agent_id), 0) + 1

    async def load(self, tenant_id: str, agent_id: str) -> bool:
        self.reads.append(agent_id)
        answer = self.active.get((tenant_id, agent_id), False)
        if self.gate is not None:
            await self.gate.wait()
        return answer

    async def versions(self, tenant_id: str) -> dict[int, int]:
        self.reads.append(f"versions:{tenant_id}")
        await asyncio.sleep(0)  # a read takes a round trip: other calls run meanwhile
        return dict(self.bucket_versions.get(tenant_id, {}))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def check(directory: Directory, clock: Clock, ttl_s: float = 1.0, **kw) -> ActiveAgents:
    return ActiveAgents(directory.load, directory.versions, directory.bucket, ttl_s, clock=clock, **kw)


async def test_answers_are_remembered_and_a_tenants_versions_read_once_per_bound():
    directory, clock = Directory(), Clock()
    directory.change("t", "ann", True)
    directory.change("t", "zoe", True)
    agents = check(directory, clock)
    for _ in range(5):
        assert await agents.is_active("t", "ann") and await agents.is_active("t", "zoe")
    assert directory.reads == ["versions:t", "ann", "zoe"]
    clock.now += 1.0  # the bound: the versions are read again, the answers still hold
    assert await agents.is_active("t", "ann")
    assert directory.reads == ["versions:t", "ann", "zoe", "versions:t"]


async def test_a_change_elsewhere_is_seen_within_the_bound_and_only_its_buckets_agents_are_read_again():
    directory, clock = Directory(), Clock()
    for agent in ("ann", "bob", "zoe"):
        directory.change("t", agent, True)
    agents = check(directory, clock)
    assert all([await agents.is_active("t", a) for a in ("ann", "bob", "zoe")])
    directory.change("t", "ann", False)  # deactivated through another process
    clock.now += 0.9
    assert await agents.is_active("t", "ann") is True  # within the bound: not yet seen
    clock.now += 0.1
    directory.reads.clear()
    assert await agents.is_active("t", "ann") is False
    assert await agents.is_active("t", "bob") is True  # same bucket: read again too
    assert await agents.is_active("t", "zoe") is True  # other bucket: still remembered
    assert directory.reads == ["versions:t", "ann", "bob"]


async def test_a_change_made_here_is_seen_at_once():
    directory, clock = Directory(), Clock()
    directory.change("t", "ann", True)
    agents = check(directory, clock, ttl_s=60.0)
    assert await agents.is_active("t", "ann")
    directory.change("t", "ann", False)
    agents.changed("t", "ann")
    assert await agents.is_active("t", "ann") is False


async def test_a_read_that_overlapped_a_change_made_here_is_not_remembered():
    directory, clock = Directory(), Clock()
    directory.change("t", "ann", True)
    agents = check(directory, clock, ttl_s=60.0)
    await agents.is_active("t", "zoe")  # the tenant's versions are remembered
    directory.gate = asyncio.Event()
    reading = asyncio.create_task(agents.is_active("t", "ann"))  # reads "active" ...
    await asyncio.sleep(0)
    directory.change("t", "ann", False)
    agents.changed("t", "ann")  # ... while the deactivation is made here
    directory.gate.set()
    assert await reading is True  # that call saw the directory before the change
    directory.gate = None
    assert await agents.is_active("t", "ann") is False  # but its answer was not kept


async def test_tenants_are_apart_a_zero_bound_reads_every_time_and_the_memory_is_bounded():
    directory, clock = Directory(), Clock()
    directory.change("t", "ann", True)
    directory.change("u", "ann", False)
    agents = check(directory, clock)
    assert await agents.is_active("t", "ann") is True and await agents.is_active("u", "ann") is False
    uncached = check(directory, clock, ttl_s=0.0)
    directory.reads.clear()
    for _ in range(3):
        await uncached.is_active("t", "ann")
    assert directory.reads == ["ann"] * 3
    small = check(directory, clock, ttl_s=60.0, max_entries=2)
    for agent in ("ann", "bob", "ann", "cat"):  # ann used again: bob is the least recently used
        await small.is_active("t", agent)
    assert len(small) == 2
    directory.reads.clear()
    await small.is_active("t", "ann")
    await small.is_active("t", "bob")
    assert directory.reads == ["bob"]


async def test_calls_arriving_while_a_tenants_versions_are_read_share_that_read():
    directory, clock = Directory(), Clock()
    for agent in ("ann", "bob", "cat"):
        directory.change("t", agent, True)
    agents = check(directory, clock)
    await asyncio.gather(*(agents.is_active("t", a) for a in ("ann", "bob", "cat")))
    clock.now += 1.0  # expired: the next calls, at once, read the versions once between them
    directory.reads.clear()
    answers = await asyncio.gather(*(agents.is_active("t", a) for a in ("ann", "bob", "cat", "ann")))
    assert answers == [True] * 4 and directory.reads == ["versions:t"]
