"""Rate limits: token buckets per key (an agent, a tenant, a socket), pure and clock-injected.

A bucket holds up to `burst` tokens and refills at `rate` per second; an action costs one token.
A caller checks several buckets at once (the agent's and its tenant's) and spends from all or
none, so a refusal by the tenant's bucket never drains the agent's. Memory is bounded: past
`max_keys` the least recently used bucket is forgotten — it had refilled anyway, or its key is
one of the rarest callers, which then merely starts again from a full bucket.

Limits are per process (each im-api or gateway replica counts its own callers): exact global
counting would cost a shared write per request; the settings say what one process allows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second; 0 or less: unlimited
    burst: float  # bucket size: how many actions may come at once after a quiet spell

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0


class Buckets:
    """Token buckets for one kind of key under one Limit."""

    def __init__(self, limit: Limit, max_keys: int = 100_000) -> None:
        # A bucket smaller than one action would refuse every action for ever.
        self.limit = limit if limit.unlimited or limit.burst >= 1 else Limit(limit.rate, 1.0)
        self.max_keys = max_keys
        self._state: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._state)

    def tokens(self, key: Hashable, now: float) -> float:
        if self.limit.unlimited:
            return math.inf
        tokens, at = self._state.get(key, (self.limit.burst, now))
        return min(self.limit.burst, tokens + max(0.0, now - at) * self.limit.rate)

    def wait(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are there (0: now)."""
        missing = cost - self.tokens(key, now)
        return 0.0 if missing <= 0 else missing / self.limit.rate

    def spend(self, key: Hashable, now: float, cost: float = 1.0) -> None:
        if self.limit.unlimited:
            return
        self._state[key] = (self.tokens(key, now) - cost, now)
        self._state.move_to_end(key)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)


def take(checks: Sequence[tuple[Buckets, Hashable]], now: float, cost: float = 1.0) -> float:
    """Spends `cost` from every (buckets, key) if all have it and returns 0; otherwise spends
    nothing and returns the seconds until all would have it (what Retry-After says)."""
    wait = max((b.wait(key, now, cost) for b, key in checks), default=0.0)
    if wait > 0:
        return wait
    for b, key in checks:
        b.spend(key, now, cost)
    return 0.0


def retry_after_s(wait: float) -> int:
    """Retry-After is whole seconds: rounded up, and at least 1 (0 would invite a hot retry loop)."""
    return max(1, math.ceil(wait))
