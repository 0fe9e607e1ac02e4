"""Which agents may call: the directory's `active` flag, remembered for at most `ttl_s`.

Every agent token is checked against the directory, so a deactivated agent is refused. Reading the
directory on every request was one database command per call (issue 19); this remembers each
answer for `ttl_s` (1 s by default), so a deactivation takes effect within that bound whatever
happens elsewhere. Changes shorten it: a directory write in this process forgets the agent at
once, and every im-api hears `AgentChanged` on `im.agents.v1` (typically milliseconds later) and
forgets it too. Pure: the read of the directory is given (`load`), and so is the clock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class ActiveAgents:
    load: Callable[[str, str], Awaitable[bool]]  # the directory's answer, read now
    ttl_s: float
    max_entries: int = 100_000  # agents remembered (least recently used forgotten first)
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[tuple[str, str], tuple[bool, float]] = field(default_factory=OrderedDict)
    _changes: int = 0  # changes heard so far: a read that overlapped one is not remembered

    async def is_active(self, tenant_id: str, agent_id: str) -> bool:
        key = (tenant_id, agent_id)
        asked_at = self.clock()
        hit = self._entries.get(key)
        if hit is not None and asked_at - hit[1] < self.ttl_s:
            self._entries.move_to_end(key)
            return hit[0]
        changes = self._changes
        active = await self.load(tenant_id, agent_id)
        # Dated from before the read (never fresher than it is); not kept when a change was heard
        # meanwhile, since the read may predate it.
        if self.ttl_s > 0 and changes == self._changes:
            self._entries[key] = (active, asked_at)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return active

    def changed(self, tenant_id: str, agent_id: str) -> None:
        """The agent's directory entry changed: the next call reads it again."""
        self._changes += 1
        self._entries.pop((tenant_id, agent_id), None)

    def forget_all(self) -> None:
        """Changes may have been missed (the change reader restarted): read everyone again."""
        self._changes += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
