"""Which outbox shards a relay round reads (pure, with the clock passed in): the shards local
commits wrote to, and every held shard at start, after a failed round, when a shard is acquired
and at least once per poll interval — not all sixteen on every local commit."""

from __future__ import annotations

import pytest
from im_api.relay import Rounds, lease_plan

pytestmark = pytest.mark.unit

HELD = range(16)


def test_the_first_round_reads_every_held_shard_then_only_those_local_commits_wrote():
    rounds = Rounds(poll_s=1.0)
    assert rounds.next(HELD, now=100.0) == list(HELD)
    assert rounds.next(HELD, now=100.1) == [], "nothing written since"
    rounds.wrote({3})
    rounds.wrote({7, 3})
    assert rounds.next(HELD, now=100.2) == [3, 7]
    assert rounds.next(HELD, now=100.3) == []


def test_a_shard_this_relay_does_not_hold_is_not_read():
    rounds = Rounds(poll_s=1.0)
    rounds.next(HELD, now=0.0)
    rounds.wrote({5, 6})
    assert rounds.next([s for s in HELD if s != 5], now=0.5) == [6]


def test_a_wake_without_shards_or_a_due_poll_reads_them_all_again():
    rounds = Rounds(poll_s=1.0)
    rounds.next(HELD, now=0.0)
    rounds.wrote(None)  # a shard acquired, or a failed round
    assert rounds.next(HELD, now=0.1) == list(HELD)
    rounds.wrote({2})
    assert rounds.next(HELD, now=0.5) == [2]
    assert rounds.next(HELD, now=1.1) == list(HELD), "the poll interval passed: other processes' records"
    assert rounds.next(HELD, now=1.2) == []


def test_the_idle_wait_never_runs_past_the_next_full_round():
    """Partial rounds (local commits) must not push the full round out: other processes' records
    wait at most one poll interval."""
    rounds = Rounds(poll_s=1.0)
    rounds.next(HELD, now=0.0)  # a full round: the next is due at 1.0
    assert rounds.wait_s(now=0.0) == 1.0
    rounds.wrote({4})
    assert rounds.next(HELD, now=0.95) == [4]
    assert rounds.wait_s(now=0.95) == pytest.approx(0.05), "not a fresh second after the partial round"
    assert rounds.wait_s(now=1.2) == 0.0
    assert rounds.next(HELD, now=1.2) == list(HELD)


def test_a_relay_holds_its_fair_share_gives_up_the_highest_above_it_and_claims_from_its_own_start():
    alone = lease_plan(16, live_relays=1, held=[], owner="relay-a")
    assert alone.fair == 16 and alone.release == []
    assert sorted(alone.claim_order) == list(range(16)), "every shard is tried once"
    assert alone.claim_order[1] == (alone.claim_order[0] + 1) % 16, "in order from its start"

    three = lease_plan(16, live_relays=3, held=range(10), owner="relay-a")
    assert three.fair == 6, "ceil(16 / 3): the shares cover every shard"
    assert three.release == [9, 8, 7, 6], "the highest above the share are given up"
    assert lease_plan(16, live_relays=0, held=[3], owner="relay-a").fair == 16, "no live row yet: itself"

    starts = {lease_plan(16, 4, [], f"host-{i}").claim_order[0] for i in range(8)}
    assert len(starts) > 1, "relays starting together do not all race for one shard"
