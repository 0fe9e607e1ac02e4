"""The retention job's rules without a server: what is past a tenant's limit, which tenants a round
looks at, how a round's budget is shared so one tenant's backlog cannot starve the others, and
which of a thread's copies go with its messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from im_api import retention_rules as rules
from im_contracts.retention import cutoff, retention_days, tenant_cutoffs

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_the_cutoff_is_the_limit_in_days_before_now_and_only_a_valid_setting_turns_retention_on():
    assert cutoff(30, NOW) == datetime(2026, 10, 28, 9, 0, tzinfo=UTC)
    assert [retention_days(d) for d in (None, {}, {"retention_days": None}, {"retention_days": 0},
                                        {"retention_days": 1}, {"retention_days": 3650},
                                        {"retention_days": 3651}, {"retention_days": True},
                                        {"retention_days": "30"})] == [None, None, None, None, 1, 3650, None, None, None]
    docs = [{"tenant_id": "acme", "retention_days": 7}, {"tenant_id": "globex", "retention_days": None},
            {"tenant_id": "initech"}, {"retention_days": 3}]
    assert tenant_cutoffs(docs, NOW) == {"acme": (7, NOW - timedelta(days=7))}


def test_a_quiet_tenant_is_skipped_until_its_oldest_message_can_pass_its_limit():
    retention = {"acme": (30, cutoff(30, NOW)), "globex": (7, cutoff(7, NOW)), "initech": (1, cutoff(1, NOW))}
    oldest = NOW - timedelta(days=3)
    quiet = {"acme": (30, rules.quiet_until(30, [oldest, None], NOW)),
             "globex": (30, NOW + timedelta(days=20)),  # found quiet under a longer limit: due now
             "initech": (1, NOW)}  # its quiet time has come
    assert quiet["acme"][1] == oldest + timedelta(days=30)
    assert rules.due_tenants(retention, quiet, NOW) == ["globex", "initech"]
    assert rules.due_tenants(retention, quiet, oldest + timedelta(days=30)) == ["acme", "globex", "initech"]
    # Nothing kept at all: what is written from now on passes the limit `days` from now at the earliest.
    assert rules.quiet_until(7, [None, None], NOW) == NOW + timedelta(days=7)
    assert rules.quiet_until(7, [NOW - timedelta(days=1), NOW - timedelta(days=5)], NOW) == NOW + timedelta(days=2)


def test_a_round_shares_its_budget_fairly_and_one_big_backlog_cannot_starve_the_others():
    # One tenant with a year of backlog, two with a little: the small ones are done in one round.
    shares = rules.fair_shares([("big", 500), ("small", 3), ("mid", 40)], 100)
    assert shares == {"big": 57, "small": 3, "mid": 40}
    assert sum(shares.values()) == 100
    # Less work than budget: everyone gets all of theirs.
    assert rules.fair_shares([("a", 2), ("b", 0), ("c", 5)], 100) == {"a": 2, "b": 0, "c": 5}
    # Units that do not divide go to the first in turn.
    assert rules.fair_shares([("a", 9), ("b", 9), ("c", 9)], 8) == {"a": 3, "b": 3, "c": 2}
    assert rules.fair_shares([("a", 9)], 0) == {"a": 0}


def test_with_more_tenants_than_budget_the_turn_rotates_so_each_is_served_within_a_few_rounds():
    tenants = [f"t{i}" for i in range(7)]
    served: list[str] = []
    turn = 0
    for _ in range(3):  # budget 3 per round, every tenant with plenty of work
        order = rules.turn_order(tenants, turn)
        shares = rules.fair_shares([(t, 100) for t in order], 3)
        now_served = [t for t in order if shares[t]]
        served += now_served
        turn = rules.next_turn(turn, len(order), len(now_served))
    assert served[:7] == tenants and len(served) == 9  # all seven within three rounds
    # Everyone served: the turn still moves, so the remainder goes round.
    assert rules.next_turn(4, 3, 3) == 5 and rules.turn_order(["a", "b", "c"], 5) == ["c", "a", "b"]
    assert rules.turn_order([], 3) == []


def test_a_share_goes_to_messages_first_then_to_sent_outbox_records():
    assert rules.split_share(10, 4, 20) == (4, 6)
    assert rules.split_share(10, 30, 20) == (10, 0)
    assert rules.split_share(10, 0, 3) == (0, 3)


def test_a_preview_goes_when_its_message_is_past_the_limit_and_a_question_with_the_first_message():
    cut = NOW - timedelta(days=30)
    old, young = cut - timedelta(seconds=1), cut + timedelta(seconds=1)
    messages = [{"conversation_id": "c1", "seq": 1}, {"conversation_id": "c1", "seq": 2},
                {"conversation_id": "c2", "seq": 5}]
    seqs = rules.by_conversation(messages)
    assert seqs == {"c1": [1, 2], "c2": [5]}
    threads = [
        {"_id": "c1", "last_message": {"seq": 2, "created_at": old}, "team_request": {"question": "help?"}},
        {"_id": "c2", "last_message": {"seq": 9, "created_at": young}, "team_request": {"question": "other?"}},
        {"_id": "c3", "last_message": None, "team_request": None},
    ]
    previews, questions = rules.stale_derived(threads, seqs, cut)
    assert previews == [("c1", 2)]  # c2's preview is a newer message: kept
    assert questions == ["c1"]  # c2's first message is not deleted: its question stays
