"""Which outbox shards a relay round reads (pure: no server is touched): the shards local commits
wrote to, and every held shard at start, after a failed round, when a shard is acquired and at
least once per poll interval — not all sixteen on every local commit."""

from __future__ import annotations

import pytest
from im_api.relay import Relay
from im_api.settings import ApiSettings

pytestmark = pytest.mark.unit


def relay(poll_s: float = 3600.0) -> Relay:
    settings = ApiSettings(outbox_poll_s=poll_s, jwt_secret="x" * 32)
    r = Relay(store=None, client=None, settings=settings, make_producer=lambda: None, owner="test")  # type: ignore[arg-type]
    r.held = {shard: 1 for shard in range(16)}
    return r


def test_the_first_round_reads_every_held_shard_then_only_those_local_commits_wrote():
    r = relay()
    assert sorted(r._round_shards()) == list(range(16))
    assert r._round_shards() == [], "nothing written since"
    r.wake({3})
    r.wake({7, 3})
    assert sorted(r._round_shards()) == [3, 7]
    assert r._round_shards() == []


def test_a_shard_this_relay_does_not_hold_is_not_read():
    r = relay()
    r._round_shards()
    del r.held[5]
    r.wake({5, 6})
    assert r._round_shards() == [6]


def test_a_wake_without_shards_or_a_due_poll_reads_them_all_again():
    r = relay()
    r._round_shards()
    r.wake()  # a shard acquired, or a failed round
    assert sorted(r._round_shards()) == list(range(16))
    due = relay(poll_s=0.0)  # the poll interval has always passed: other processes' records
    due._round_shards()
    due.wake({2})
    assert sorted(due._round_shards()) == list(range(16))
