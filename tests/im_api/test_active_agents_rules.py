"""The auth check's memory of the directory (ActiveAgents), pure: a given clock and loader."""

from __future__ import annotations

import asyncio

from im_api.active_agents import ActiveAgents


class Directory:
    """The directory's answers, with the reads counted."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, str], bool] = {}
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def load(self, tenant_id: str, agent_id: str) -> bool:
        self.reads += 1
        answer = self.active.get((tenant_id, agent_id), False)
        if self.gate is not None:
            await self.gate.wait()
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_answer_is_used_for_at_most_the_bound_then_read_again():
    directory, clock = Directory(), Clock()
    directory.active[("t", "a")] = True
    cache = ActiveAgents(directory.load, ttl_s=1.0, clock=clock)
    assert await cache.is_active("t", "a") is True
    clock.now += 0.9
    assert await cache.is_active("t", "a") is True
    assert directory.reads == 1
    directory.active[("t", "a")] = False  # deactivated, and no change heard
    clock.now += 0.1  # the bound since the first read: read again
    assert await cache.is_active("t", "a") is False
    assert directory.reads == 2


async def test_a_change_heard_forgets_the_agent_at_once():
    directory, clock = Directory(), Clock()
    directory.active[("t", "a")] = directory.active[("t", "b")] = True
    cache = ActiveAgents(directory.load, ttl_s=60.0, clock=clock)
    assert await cache.is_active("t", "a") and await cache.is_active("t", "b")
    directory.active[("t", "a")] = False
    cache.changed("t", "a")
    assert await cache.is_active("t", "a") is False
    assert await cache.is_active("t", "b") is True
    assert directory.reads == 3  # b still remembered
    cache.forget_all()
    assert await cache.is_active("t", "b") is True and directory.reads == 4


async def test_a_read_that_overlapped_a_change_is_not_remembered():
    directory, clock = Directory(), Clock()
    directory.active[("t", "a")] = True
    cache = ActiveAgents(directory.load, ttl_s=60.0, clock=clock)
    directory.gate = asyncio.Event()
    reading = asyncio.create_task(cache.is_active("t", "a"))  # reads "active" ...
    await asyncio.sleep(0)
    directory.active[("t", "a")] = False
    cache.changed("t", "a")  # ... while the deactivation is heard
    directory.gate.set()
    assert await reading is True  # that call saw the directory before the change
    directory.gate = None
    assert await cache.is_active("t", "a") is False  # but its answer was not kept
    assert directory.reads == 2


async def test_a_zero_bound_reads_every_time_and_the_memory_is_bounded():
    directory, clock = Directory(), Clock()
    uncached = ActiveAgents(directory.load, ttl_s=0.0, clock=clock)
    for _ in range(3):
        await uncached.is_active("t", "a")
    assert directory.reads == 3 and len(uncached) == 0
    small = ActiveAgents(directory.load, ttl_s=60.0, max_entries=2, clock=clock)
    for agent in ("a", "b", "a", "c"):  # a used again: b is the least recently used
        await small.is_active("t", agent)
    assert len(small) == 2
    reads = directory.reads
    await small.is_active("t", "a")
    assert directory.reads == reads  # still remembered
    await small.is_active("t", "b")
    assert directory.reads == reads + 1  # forgotten
