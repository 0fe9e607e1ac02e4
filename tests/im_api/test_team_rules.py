"""The team-request rules (im_api.team_rules), pure: who is offered, escalation, claim and release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from im_api import team_rules as rules

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
TEAMS = [{"id": "t1", "name": "Tier 2"}]


def request(**changes):
    base = rules.new_request(TEAMS, "alice", "Printer?", ["bob", "carol"], T0, 300)
    return {**base, **changes}


def test_an_offer_goes_to_the_present_members_and_never_to_the_threads_participants():
    status = {"bob": "online", "carol": "away", "dave": "offline", "alice": "online"}
    assert rules.offer_targets(["alice", "bob", "carol", "dave", "bob"], status, {"alice"}, True) == ["bob", "carol"]


def test_with_nobody_present_the_tenant_setting_decides_whether_offline_members_get_it():
    status = {"bob": "offline"}
    assert rules.offer_targets(["bob", "dave"], status, set(), True) == ["bob", "dave"]
    assert rules.offer_targets(["bob", "dave"], status, set(), False) == []


def test_escalation_adds_everyone_not_offered_yet_offline_ones_included():
    assert rules.escalation_targets(["bob", "carol", "dave", "alice"], ["bob"], {"alice"}) == ["carol", "dave"]
    assert rules.escalation_targets(["bob"], ["bob"], set()) == []


def test_several_teams_escalate_at_the_first_timeout_and_a_team_without_one_uses_the_tenants():
    assert rules.claim_timeout([600, None, 120], 300) == 120
    assert rules.claim_timeout([None], 300) == 300
    assert rules.claim_timeout([900, None], 300) == 300


def test_the_question_is_the_first_message_cut_to_its_preview_length():
    assert rules.question_of("short") == "short"
    long = "x" * 1000
    cut = rules.question_of(long)
    assert len(cut) == 280 and cut.endswith("…")
    assert rules.question_of(None) is None


def test_only_a_member_it_is_open_to_claims_and_a_taken_request_names_its_winner():
    open_ = request()
    assert rules.claim_outcome(open_, ["bob", "carol"], "bob") == "claim"
    assert rules.claim_outcome(open_, ["bob", "carol"], "dave") == "not_offered"
    assert rules.claim_outcome(None, [], "bob") == "not_offered"
    taken = rules.claimed(open_, "carol", T0 + timedelta(seconds=5))
    assert taken["status"] == "claimed" and taken["claimed_by"] == "carol"
    assert rules.claim_outcome(taken, [], "bob") == "taken"
    assert rules.claim_outcome(taken, [], "carol") == "already_yours"
    assert rules.claim_outcome(taken, [], "dave") == "not_offered"
    # Handed back and re-offered to bob only: carol, who held it, cannot take it again at once.
    again = rules.released(taken, ["bob"], T0 + timedelta(seconds=9))
    assert rules.claim_outcome(again, ["bob"], "carol") == "not_offered"
    assert rules.claim_outcome(again, ["bob"], "bob") == "claim"


def test_the_asker_or_the_holder_releases_a_taken_request_and_it_opens_again_with_a_new_clock():
    taken = rules.claimed(request(), "carol", T0 + timedelta(seconds=5))
    participants = ["alice", "carol"]
    assert rules.release_outcome(taken, "alice", "alice", participants) == "release"
    assert rules.release_outcome(taken, "carol", "alice", participants) == "release"
    assert rules.release_outcome(taken, "bob", "alice", participants) == "not_allowed"  # offered, not holding
    assert rules.release_outcome(taken, "erin", "alice", participants) == "not_visible"
    assert rules.release_outcome(request(), "alice", "alice", ["alice"]) == "not_claimed"
    later = T0 + timedelta(minutes=10)
    again = rules.released(taken, ["bob", "dave"], later)
    assert again["status"] == "open" and again["claimed_by"] is None and again["opened_at"] == later
    assert again["offered"] == ["bob", "carol", "dave"]
    assert rules.escalate_at(again) == later + timedelta(seconds=300)


def test_an_open_request_escalates_once_and_a_taken_one_never():
    open_ = request()
    assert rules.escalate_at(open_) == T0 + timedelta(seconds=300)
    assert rules.escalate_at(rules.escalated(open_, ["dave"])) is None
    assert rules.escalated(open_, ["dave"])["offered"] == ["bob", "carol", "dave"]
    assert rules.escalate_at(rules.claimed(open_, "bob", T0)) is None


def test_the_view_names_the_asker_and_the_winner_and_lists_who_may_claim_now():
    conv = {"_id": "c1", "related": {"type": "ticket", "id": "T-1", "title": None},
            "team_request": rules.claimed(request(), "bob", T0), "offered_to": []}
    view = rules.request_view(conv, {"alice": "Alice", "bob": "Bob"})
    assert view["asked_by"] == {"id": "alice", "display_name": "Alice"}
    assert view["claimed_by"] == {"id": "bob", "display_name": "Bob"}
    assert view["status"] == "claimed" and view["offered_to"] == [] and view["escalate_at"] is None
    assert view["teams"] == TEAMS and view["related"]["id"] == "T-1"
    assert rules.request_view({"_id": "c2"}, {}) is None
    assert rules.names_needed(conv) == {"alice", "bob"}
    assert rules.team_names({"teams": [{"name": "A"}, {"name": "B"}, {"name": "C"}]}) == "A, B and C"
