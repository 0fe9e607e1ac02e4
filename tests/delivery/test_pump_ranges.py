"""The pump's cursor arithmetic (pure): bounded reads up to a signalled cursor, when a read means
the queue may have been pruned under the connection, and when another read follows at once."""

from __future__ import annotations

import pytest
from im_delivery.gateway.ranges import more_to_send, must_check_retention, signalled_through

pytestmark = pytest.mark.unit


def test_a_signal_bounds_the_read_by_the_batch_and_without_one_the_next_batch_is_read():
    assert signalled_through(last_sent=10, durable=15, limit=100) == 15
    assert signalled_through(last_sent=10, durable=500, limit=100) == 110, "never more than a batch"
    assert signalled_through(last_sent=10, durable=10, limit=100) is None, "nothing announced past it"
    assert signalled_through(last_sent=10, durable=3, limit=100) is None


def test_only_a_jump_or_an_empty_complete_range_asks_whether_the_queue_was_pruned():
    assert not must_check_retention(last_sent=4, first_cursor=5, through=9), "the next cursor: no question"
    assert must_check_retention(last_sent=4, first_cursor=7, through=9), "5 and 6 missing: gap or pruned"
    assert must_check_retention(last_sent=4, first_cursor=None, through=9), "announced, yet nothing there"
    assert not must_check_retention(last_sent=4, first_cursor=None, through=0), "an unsignalled empty read: idle"


def test_another_read_follows_after_a_full_batch_or_while_a_signal_announced_more():
    assert more_to_send(read=100, limit=100, durable=0, last_sent=300)
    assert more_to_send(read=3, limit=100, durable=310, last_sent=303)
    assert not more_to_send(read=3, limit=100, durable=303, last_sent=303)
