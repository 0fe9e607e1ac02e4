"""Token buckets (pure, with an injected clock): burst, refill, all-or-nothing, bounded memory."""

import pytest
from im_runtime.ratelimit import Buckets, Limit, retry_after_s, take

pytestmark = pytest.mark.unit


def test_a_burst_is_allowed_then_the_rate_and_the_wait_is_exact():
    b = Buckets(Limit(rate=2, burst=3))
    assert [take([(b, "alice")], now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert take([(b, "alice")], now=10.0) == pytest.approx(0.5)  # one token at 2/s
    assert take([(b, "alice")], now=10.5) == 0.0
    assert take([(b, "alice")], now=10.5) == pytest.approx(0.5)
    assert take([(b, "bob")], now=10.5) == 0.0, "another key has its own bucket"


def test_a_bucket_never_fills_past_its_burst():
    b = Buckets(Limit(rate=1, burst=2))
    take([(b, "a")], now=0.0)
    assert b.tokens("a", now=1000.0) == 2


def test_a_refusal_by_one_bucket_spends_from_none():
    agent, tenant = Buckets(Limit(rate=1, burst=5)), Buckets(Limit(rate=1, burst=1))
    assert take([(agent, "alice"), (tenant, "acme")], now=0.0) == 0.0
    assert take([(agent, "alice"), (tenant, "acme")], now=0.0) == pytest.approx(1.0)
    assert agent.tokens("alice", now=0.0) == 4, "the tenant's refusal left the agent's tokens alone"


def test_unlimited_spends_nothing_and_keeps_no_state():
    b = Buckets(Limit(rate=0, burst=0))
    assert all(take([(b, i)], now=0.0) == 0.0 for i in range(1000))
    assert len(b) == 0


def test_memory_is_bounded_by_forgetting_the_least_recently_used():
    b = Buckets(Limit(rate=1, burst=1), max_keys=100)
    for i in range(10_000):
        take([(b, i)], now=0.0)
    assert len(b) == 100
    assert take([(b, 9_999)], now=0.0) > 0, "the most recent keys are remembered"


def test_retry_after_is_whole_seconds_rounded_up_and_never_zero():
    assert [retry_after_s(w) for w in (0.0, 0.01, 1.0, 1.2)] == [1, 1, 1, 2]


def test_a_burst_below_one_action_still_lets_one_through_at_the_rate():
    b = Buckets(Limit(rate=2, burst=0.5))
    assert take([(b, "a")], now=0.0) == 0.0
    assert take([(b, "a")], now=0.0) == pytest.approx(0.5)
