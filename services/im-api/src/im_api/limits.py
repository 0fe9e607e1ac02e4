"""im-api's rate limits: sends and stream-ticket mints, per agent and per tenant (token buckets,
see im_runtime.ratelimit). A refusal is HTTP 429 with Retry-After and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from im_runtime.auth import Principal
from im_runtime.ratelimit import Buckets, Limit, retry_after_s, take

from .errors import ApiError
from .metrics import RATE_LIMITED
from .settings import ApiSettings


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


@dataclass
class RateLimits:
    send_agent: Buckets
    send_tenant: Buckets
    ticket_agent: Buckets
    ticket_tenant: Buckets
    clock: Callable[[], float] = field(default=time.monotonic)

    @classmethod
    def from_settings(cls, s: ApiSettings) -> RateLimits:
        def buckets(rate: float, burst: float) -> Buckets:
            return Buckets(Limit(rate, burst), max_keys=s.rate_limit_max_keys)

        return cls(buckets(s.send_rate_per_agent, s.send_burst_per_agent),
                   buckets(s.send_rate_per_tenant, s.send_burst_per_tenant),
                   buckets(s.ticket_rate_per_agent, s.ticket_burst_per_agent),
                   buckets(s.ticket_rate_per_tenant, s.ticket_burst_per_tenant))

    def send(self, principal: Principal) -> None:
        self._take("send", self.send_agent, self.send_tenant, principal)

    def ticket(self, principal: Principal) -> None:
        self._take("ticket", self.ticket_agent, self.ticket_tenant, principal)

    def _take(self, what: str, agent: Buckets, tenant: Buckets, principal: Principal) -> None:
        tenant_id = principal.tenant_id
        wait = take([(agent, (tenant_id, principal.agent_id)), (tenant, tenant_id)], self.clock())
        if wait > 0:
            RATE_LIMITED.labels(what).inc()
            seconds = retry_after_s(wait)
            raise RateLimited(f"too many {what}s; retry in {seconds} s",
                              headers={"Retry-After": str(seconds)})
