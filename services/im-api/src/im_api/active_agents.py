"""Which agents may call: the directory's `active` flag, without a database read per request.

Every agent token is checked against the directory, so a deactivated agent is refused. Reading the
directory on every request was one database command per call (issue 19). Instead each process
remembers the answers, each with the version of the directory bucket the agent is in
(`Store.count_directory_change` moves it in the transaction of every change of that bucket's
agents), and re-reads a tenant's bucket versions at most every `ttl_s`: one read per tenant, not
per request. An answer whose bucket moved since is read again. So a deactivation made anywhere is
refused everywhere within `ttl_s` (plus one read), and at once by the process that made it
(`changed`). Pure: the directory's reads and the clock are given.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class ActiveAgents:
    load: Callable[[str, str], Awaitable[bool]]  # the agent's flag, read now
    versions: Callable[[str], Awaitable[dict[int, int]]]  # the tenant's bucket versions, read now
    bucket: Callable[[str], int]  # the bucket an agent id is in
    ttl_s: float  # how long a tenant's versions are used before they are read again (0: no memory)
    max_entries: int = 100_000  # answers (and tenants) remembered; least recently used go first
    clock: Callable[[], float] = time.monotonic
    _agents: OrderedDict[tuple[str, str], tuple[bool, int]] = field(default_factory=OrderedDict)
    _tenants: OrderedDict[str, tuple[dict[int, int], float]] = field(default_factory=OrderedDict)
    _changes: int = 0  # changes made here so far: a read that overlapped one is not kept
    _reading: dict[str, asyncio.Future] = field(default_factory=dict)  # versions being read, by tenant

    async def is_active(self, tenant_id: str, agent_id: str) -> bool:
        if self.ttl_s <= 0:
            return await self.load(tenant_id, agent_id)
        version = (await self._versions(tenant_id)).get(self.bucket(agent_id), 0)
        key = (tenant_id, agent_id)
        hit = self._agents.get(key)
        if hit is not None and hit[1] == version:
            self._agents.move_to_end(key)
            return hit[0]
        changes = self._changes
        active = await self.load(tenant_id, agent_id)
        # Read after the version: it is at least as new as that version, so keeping it under that
        # version is safe (a later change moves the version and it is read again).
        if changes == self._changes:
            _put(self._agents, key, (active, version), self.max_entries)
        return active

    async def _versions(self, tenant_id: str) -> dict[int, int]:
        asked_at = self.clock()
        hit = self._tenants.get(tenant_id)
        if hit is not None and asked_at - hit[1] < self.ttl_s:
            return hit[0]
        # One read per tenant at a time: the calls arriving meanwhile wait for it (a busy tenant's
        # requests would otherwise all read the versions when they expire).
        reading = self._reading.get(tenant_id)
        if reading is None:
            reading = self._reading[tenant_id] = asyncio.ensure_future(self._read_versions(tenant_id, asked_at))
            reading.add_done_callback(lambda _: self._reading.pop(tenant_id, None))
        return await asyncio.shield(reading)

    async def _read_versions(self, tenant_id: str, asked_at: float) -> dict[int, int]:
        changes = self._changes
        versions = await self.versions(tenant_id)
        if changes == self._changes:  # dated from before the read: never fresher than it is
            _put(self._tenants, tenant_id, (versions, asked_at), self.max_entries)
        return versions

    def changed(self, tenant_id: str, agent_id: str) -> None:
        """This process changed the agent: its next check reads the directory."""
        self._changes += 1
        self._agents.pop((tenant_id, agent_id), None)
        self._tenants.pop(tenant_id, None)

    def __len__(self) -> int:
        return len(self._agents)


def _put(entries: OrderedDict, key, value, max_entries: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > max_entries:
        entries.popitem(last=False)
