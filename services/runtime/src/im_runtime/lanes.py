"""Work queued per tenant and served round robin: the pure core of every stage that must not let
one tenant's backlog delay another's work (im-api's group commit, delivery's stages).

A stage takes a batch of ONE tenant at a time, from the tenant whose turn it is; a tenant whose
batch is in progress is not served again until `done`, so its own work keeps its order and never
races itself, while other tenants' batches run beside it. A tenant that just had a batch goes to
the back of the line: with A's thousand items and B's one queued, B's batch is at most one turn
away, whatever A's backlog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class TenantLanes(Generic[K, T]):
    def __init__(self) -> None:
        self._queues: dict[K, deque[T]] = {}
        self._turns: deque[K] = deque()  # tenants with queued work and no batch in progress
        self._busy: set[K] = set()
        self._size = 0

    def __len__(self) -> int:
        """Items queued (not those of batches in progress)."""
        return self._size

    @property
    def busy(self) -> frozenset[K]:
        return frozenset(self._busy)

    def put(self, tenant: K, item: T) -> None:
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = deque()
        if not queue and tenant not in self._busy:
            self._turns.append(tenant)
        queue.append(item)
        self._size += 1

    def take(self, max_items: int) -> tuple[K, list[T]] | None:
        """The next tenant's oldest items (at most `max_items`), or None when no tenant without a
        batch in progress has work. The tenant is busy until `done(tenant)`."""
        if not self._turns:
            return None
        tenant = self._turns.popleft()
        queue = self._queues[tenant]
        batch = [queue.popleft() for _ in range(min(max_items, len(queue)))]
        self._size -= len(batch)
        if not queue:
            del self._queues[tenant]
        self._busy.add(tenant)
        return tenant, batch

    def done(self, tenant: K) -> None:
        """The tenant's batch is finished: its next items (if any) wait for its next turn."""
        self._busy.discard(tenant)
        if self._queues.get(tenant):
            self._turns.append(tenant)
