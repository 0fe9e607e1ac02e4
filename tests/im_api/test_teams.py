"""Teams and team requests through im-api against the real servers: admins manage teams, agents
list them with online counts; a thread asking a team is offered to the present members, one
claim wins, the asker releases it back, an unclaimed one escalates; every step's event is on
Kafka in the thread's order; bad input is refused naming the field, and another tenant's team
is 404 everywhere."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from im_contracts.events import AgentPresence, ParticipantsChanged, TeamRequestChanged
from im_contracts.topics import CONVERSATIONS, PRESENCE, agent_key

from im_api_helpers import fast_settings, read_events, running
from support.wait import eventually

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"
TICKET = {"type": "ticket", "id": "T-77", "title": "Printer on fire"}


async def set_presence(api, tenant: str, statuses: dict[str, str]) -> None:
    """Presence as the presence service publishes it; waits until this im-api has read it."""
    producer = AIOKafkaProducer(bootstrap_servers=api.settings.kafka_bootstrap)
    await producer.start()
    try:
        for agent, status in statuses.items():
            event = AgentPresence(tenant_id=tenant, agent_id=agent, status=status, connections=1)
            await producer.send_and_wait(PRESENCE.name(api.settings.topic_prefix), event.to_bytes(),
                                         key=agent_key(tenant, agent))
    finally:
        await producer.stop()
    presence = api.app.state.presence
    await eventually(lambda: _true(all(presence.get(tenant, a)[0] == s for a, s in statuses.items())), timeout=15)


async def _true(value: bool) -> bool:
    return value


async def make_team(api, tenant: str, name: str, members: list[str], **extra) -> dict:
    r = await api.http.post("/v1/teams", json={"name": name, "member_ids": members, **extra},
                            headers=api.admin(tenant))
    assert r.status_code == 201, r.text
    return r.json()


async def ask(api, tenant: str, me: str, team_ids: list[str], body: str = "Can someone look at this?",
              related: dict | None = TICKET, **more) -> dict:
    r = await api.http.post("/v1/conversations", json={
        "team_ids": team_ids, "related": related, **more,
        "first_message": {"body": body, "client_msg_id": f"ask-{me}-{'-'.join(team_ids)}"}},
        headers=api.auth(tenant, me))
    assert r.status_code in (200, 201), r.text
    return r.json()


async def listed(api, tenant: str, agent: str) -> dict[str, dict]:
    r = await api.http.get("/v1/conversations", headers=api.auth(tenant, agent))
    assert r.status_code == 200, r.text
    return {c["id"]: c for c in r.json()["items"]}


async def test_admins_manage_teams_and_agents_list_them_with_online_counts(api):
    await api.add_agents(T, "alice", "bob", "carol", "dave")
    team = await make_team(api, T, "  Tier   2 ", ["bob", "carol"])
    assert team["name"] == "Tier 2" and team["member_count"] == 2
    assert [m["id"] for m in team["members"]] == ["bob", "carol"]
    await set_presence(api, T, {"bob": "online", "carol": "away", "dave": "online"})

    r = await api.http.get("/v1/teams", headers=api.auth(T, "bob"))
    assert r.status_code == 200
    (shown,) = r.json()["items"]
    assert (shown["id"], shown["online_count"], shown["away_count"], shown["is_member"]) == (team["id"], 1, 1, True)
    assert "members" not in shown or shown["members"] is None
    r = await api.http.get(f"/v1/teams/{team['id']}", headers=api.auth(T, "alice"))
    assert {m["id"]: m["status"] for m in r.json()["members"]} == {"bob": "online", "carol": "away"}
    assert r.json()["is_member"] is False

    # Membership, rename, timeout: admins and services only.
    r = await api.http.put(f"/v1/teams/{team['id']}/members/dave", headers=api.auth(T, "bob"))
    assert r.status_code == 403
    r = await api.http.post("/v1/teams", json={"name": "Mine"}, headers=api.auth(T, "bob"))
    assert r.status_code == 403
    r = await api.http.put(f"/v1/teams/{team['id']}/members/dave", headers=api.auth(T, "svc", "service"))
    assert r.status_code == 200 and r.json()["member_count"] == 3 and r.json()["online_count"] == 2
    r = await api.http.put(f"/v1/teams/{team['id']}/members/dave", headers=api.admin(T))  # again: no change
    assert r.status_code == 200 and r.json()["member_count"] == 3
    r = await api.http.delete(f"/v1/teams/{team['id']}/members/carol", headers=api.admin(T))
    assert [m["id"] for m in r.json()["members"]] == ["bob", "dave"]
    r = await api.http.patch(f"/v1/teams/{team['id']}", json={"name": "Tier Two", "claim_timeout_s": 60},
                             headers=api.admin(T))
    assert r.status_code == 200 and (r.json()["name"], r.json()["claim_timeout_s"]) == ("Tier Two", 60)
    billing = await make_team(api, T, "Billing", [])
    r = await api.http.get("/v1/teams?q=ti", headers=api.auth(T, "alice"))
    assert [t["name"] for t in r.json()["items"]] == ["Tier Two"]

    # Refused with the field named, nothing changed.
    bad = [
        ("post", "/v1/teams", {"name": "tier two"}, 409, "name", "team_name_taken"),
        ("post", "/v1/teams", {"name": "   "}, 422, "name", "invalid_name"),
        ("post", "/v1/teams", {"name": "X", "member_ids": ["bob", "ghost"]}, 422, "member_ids[1]", "unknown_agents"),
        ("post", "/v1/teams", {"name": "X", "claim_timeout_s": 0}, 422, "claim_timeout_s", None),
        ("post", "/v1/teams", {"name": "X", "colour": "red"}, 422, "colour", None),
        ("patch", f"/v1/teams/{team['id']}", {"name": "BILLING"}, 409, "name", "team_name_taken"),
        ("put", f"/v1/teams/{team['id']}/members/ghost", None, 422, "agent_id", "unknown_agents"),
    ]
    for method, url, body, status, field, code in bad:
        r = await api.http.request(method.upper(), url, json=body, headers=api.admin(T))
        assert r.status_code == status, (url, body, r.text)
        error = r.json()["error"]
        assert error["field"] == field, r.text
        assert code is None or error["code"] == code
    r = await api.http.get("/v1/teams", headers=api.admin(T))
    assert [(t["name"], t["member_count"]) for t in r.json()["items"]] == [("Billing", 0), ("Tier Two", 2)]

    r = await api.http.delete(f"/v1/teams/{billing['id']}", headers=api.admin(T))
    assert r.status_code == 204
    r = await api.http.get(f"/v1/teams/{billing['id']}", headers=api.admin(T))
    assert r.status_code == 404 and r.json()["error"]["field"] == "team_id"

    # The tenant's settings: admins only.
    r = await api.http.get("/v1/admin/team-settings", headers=api.admin(T))
    assert r.json()["offer_offline_when_none_online"] is True and r.json()["claim_timeout_s"] == 300
    r = await api.http.put("/v1/admin/team-settings", json={"claim_timeout_s": 30}, headers=api.auth(T, "bob"))
    assert r.status_code == 403
    r = await api.http.put("/v1/admin/team-settings", json={"claim_timeout_s": -5}, headers=api.admin(T))
    assert r.status_code == 422 and r.json()["error"]["field"] == "claim_timeout_s"


async def test_a_team_request_is_offered_to_present_members_and_exactly_one_claim_wins(api, endpoints):
    await api.add_agents(T, "alice", "bob", "carol", "dave", "erin")
    team = await make_team(api, T, "Tier 2", ["alice", "bob", "carol", "dave"])
    await set_presence(api, T, {"alice": "online", "bob": "online", "carol": "away", "dave": "offline"})

    question = "Printer on fire, " + "x" * 400
    conv = await ask(api, T, "alice", [team["id"]], body=question)
    request = conv["team_request"]
    assert [p["id"] for p in conv["participants"]] == ["alice"]
    assert request["status"] == "open" and request["offered_to"] == ["bob", "carol"]
    assert request["teams"] == [{"id": team["id"], "name": "Tier 2"}] and request["related"]["id"] == "T-77"
    assert request["asked_by"]["id"] == "alice" and len(request["question"]) == 280
    assert request["escalate_at"] is not None and request["escalated"] is False

    # The same team about the same ticket again: the same request.
    again = await ask(api, T, "alice", [team["id"]], body=question)
    assert again["id"] == conv["id"]

    # Offered members see it in their list (not its history); the offline member does not.
    assert conv["id"] in await listed(api, T, "bob") and conv["id"] in await listed(api, T, "carol")
    offer = (await listed(api, T, "bob"))[conv["id"]]
    assert offer["last_message"] is None and offer["unread_count"] == 0  # the question, not the thread
    assert offer["team_request"]["question"].startswith("Printer on fire")
    assert conv["id"] not in await listed(api, T, "dave")
    r = await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.auth(T, "bob"))
    assert r.status_code == 200 and r.json()["team_request"]["status"] == "open"
    r = await api.http.get(f"/v1/conversations/{conv['id']}/messages", headers=api.auth(T, "bob"))
    assert r.status_code == 404
    r = await api.http.post(f"/v1/conversations/{conv['id']}/claim", headers=api.auth(T, "dave"))
    assert r.status_code == 404  # never offered

    # Bob and Carol claim at once: exactly one wins, the other is told who.
    answers = await asyncio.gather(*(api.http.post(f"/v1/conversations/{conv['id']}/claim",
                                                   headers=api.auth(T, a)) for a in ("bob", "carol")))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 409], [r.text for r in answers]
    won = next(r for r in answers if r.status_code == 200).json()
    lost = next(r for r in answers if r.status_code == 409).json()["error"]
    winner = won["team_request"]["claimed_by"]["id"]
    loser = "carol" if winner == "bob" else "bob"
    assert lost["code"] == "already_claimed" and lost["details"]["claimed_by"]["id"] == winner
    assert winner.capitalize() in lost["message"]
    assert {p["id"] for p in won["participants"]} == {"alice", winner}
    assert won["last_message"]["kind"] == "system" and "took the request for Tier 2" in won["last_message"]["body"]
    assert conv["id"] not in await listed(api, T, loser)
    assert (await listed(api, T, "alice"))[conv["id"]]["team_request"]["claimed_by"]["id"] == winner
    r = await api.http.post(f"/v1/conversations/{conv['id']}/claim", headers=api.auth(T, winner))
    assert r.status_code == 200  # the winner pressing again changes nothing
    r = await api.http.get(f"/v1/conversations/{conv['id']}/messages", headers=api.auth(T, winner))
    assert [m["body"][:16] for m in r.json()["items"]][0] == "Printer on fire,"

    # Only the asker (or the holder) releases; the request opens again to who is present, but
    # for the member who held it.
    r = await api.http.post(f"/v1/conversations/{conv['id']}/release", headers=api.auth(T, loser))
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_allowed"
    r = await api.http.post(f"/v1/conversations/{conv['id']}/release", headers=api.auth(T, "alice"))
    assert r.status_code == 200, r.text
    back = r.json()
    assert back["team_request"]["status"] == "open" and back["team_request"]["claimed_by"] is None
    assert back["team_request"]["offered_to"] == [loser]  # not back to the one who held it
    assert [p["id"] for p in back["participants"]] == ["alice"]
    assert "released the request back to Tier 2" in back["last_message"]["body"]
    r = await api.http.post(f"/v1/conversations/{conv['id']}/release", headers=api.auth(T, "alice"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_claimed"
    r = await api.http.post(f"/v1/conversations/{conv['id']}/claim", headers=api.auth(T, winner))
    assert r.status_code == 404  # released away from them: not theirs to take back at once
    r = await api.http.post(f"/v1/conversations/{conv['id']}/claim", headers=api.auth(T, loser))
    assert r.status_code == 200 and r.json()["team_request"]["claimed_by"]["id"] == loser
    # The helper leaving the thread hands the request back rather than strand it.
    r = await api.http.delete(f"/v1/conversations/{conv['id']}/participants/me", headers=api.auth(T, loser))
    assert r.status_code == 204
    r = await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.auth(T, "alice"))
    assert r.json()["team_request"]["status"] == "open" and r.json()["team_request"]["offered_to"] == [winner]
    assert "handed the request back to Tier 2" in r.json()["last_message"]["body"]

    # On Kafka, in the thread's order: offered, then per claim/release the participants, the
    # system line and the request's change.
    events = await read_events(api.settings.kafka_bootstrap, CONVERSATIONS, api.settings.topic_prefix, 10)
    mine = [e for _, e, _ in events if getattr(e, "conversation", None) and e.conversation.id == conv["id"]
            or isinstance(e, TeamRequestChanged) and e.request.conversation_id == conv["id"]]
    kinds = [(type(e).__name__, getattr(e, "change", None)) for e in mine]
    assert kinds == [("ConversationStarted", None), ("TeamRequestChanged", "offered"),
                     ("ParticipantsChanged", None), ("TeamRequestChanged", "claimed"),
                     ("ParticipantsChanged", None), ("TeamRequestChanged", "released"),
                     ("ParticipantsChanged", None), ("TeamRequestChanged", "claimed"),
                     ("ParticipantsChanged", None), ("TeamRequestChanged", "released")]
    offered, claimed = mine[1], mine[3]
    assert offered.newly_offered == ["bob", "carol"] and offered.seq == 1
    # Every member of the team learns that it is handled, the offline one included.
    assert {"alice", "bob", "carol", "dave"} <= set(claimed.recipients)
    assert isinstance(mine[4], ParticipantsChanged) and mine[4].removed == [winner]


async def test_nobody_present_and_escalation(api_settings):
    settings = fast_settings(**{**api_settings.model_dump(), "team_escalation_interval_s": 0.2})
    async with running(settings) as api:
        await api.add_agents(T, "alice", "bob", "carol")
        await set_presence(api, T, {"alice": "online", "bob": "offline", "carol": "offline"})
        team = await make_team(api, T, "Night", ["bob", "carol"], claim_timeout_s=1)
        r = await api.http.put("/v1/admin/team-settings", json={"offer_offline_when_none_online": False},
                               headers=api.admin(T))
        assert r.status_code == 200
        conv = await ask(api, T, "alice", [team["id"]])
        assert conv["team_request"]["offered_to"] == []

        async def escalated() -> bool:
            r = await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.auth(T, "alice"))
            return r.json()["team_request"]["escalated"]

        await eventually(escalated, timeout=20)
        r = await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.auth(T, "alice"))
        request = r.json()["team_request"]
        assert request["offered_to"] == ["bob", "carol"] and request["escalate_at"] is None
        assert conv["id"] in await listed(api, T, "carol")
        events = await read_events(settings.kafka_bootstrap, CONVERSATIONS, settings.topic_prefix, 3)
        offers = [e for _, e, _ in events if isinstance(e, TeamRequestChanged) and e.request.conversation_id == conv["id"]]
        assert [(o.change, o.request.escalated, o.newly_offered) for o in offers] == [
            ("offered", False, []), ("offered", True, ["bob", "carol"])]
        assert set(offers[1].recipients) == {"alice", "bob", "carol"} and offers[1].seq == 1

        # With the setting on, offline members get it at once when nobody is present.
        await api.http.put("/v1/admin/team-settings", json={"offer_offline_when_none_online": True},
                           headers=api.admin(T))
        conv2 = await ask(api, T, "alice", [team["id"]], related={"type": "chat", "id": "C-1"})
        assert conv2["team_request"]["offered_to"] == ["bob", "carol"]


async def test_bad_requests_and_another_tenants_team_are_refused_and_change_nothing(api):
    await api.add_agents(T, "alice", "bob")
    await api.add_agents(OTHER, "olga", "oscar")
    ours = await make_team(api, T, "Tier 2", ["bob"])
    theirs = await make_team(api, OTHER, "Tier 2", ["oscar"])
    lonely = await make_team(api, T, "Just me", ["alice"])

    for method, url in [("get", f"/v1/teams/{theirs['id']}"), ("patch", f"/v1/teams/{theirs['id']}"),
                        ("delete", f"/v1/teams/{theirs['id']}"),
                        ("put", f"/v1/teams/{theirs['id']}/members/bob"),
                        ("delete", f"/v1/teams/{theirs['id']}/members/oscar"),
                        ("get", "/v1/teams/not-a-team-id")]:
        r = await api.http.request(method.upper(), url, json={"name": "Mine"} if method == "patch" else None,
                                   headers=api.admin(T))
        assert r.status_code == 404, (url, r.text)
    r = await api.http.post("/v1/conversations", json={"team_ids": [ours["id"], theirs["id"]],
                                                       "first_message": {"body": "Hi", "client_msg_id": "q0"}},
                            headers=api.auth(T, "alice"))
    assert r.status_code == 404 and r.json()["error"]["field"] == "team_ids[1]"
    assert r.json()["error"]["code"] == "unknown_team"
    question = {"body": "Anyone?", "client_msg_id": "q1"}
    r = await api.http.post("/v1/conversations", json={"team_ids": [lonely["id"]], "first_message": question},
                            headers=api.auth(T, "alice"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "nobody_to_ask"
    r = await api.http.post("/v1/conversations", json={"team_ids": [ours["id"]]}, headers=api.auth(T, "alice"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "first_message"
    assert r.json()["error"]["code"] == "question_required"
    r = await api.http.post("/v1/conversations", json={"team_ids": [ours["id"], ours["id"], theirs["id"]],
                                                       "first_message": question}, headers=api.auth(T, "alice"))
    assert r.status_code == 404 and r.json()["error"]["field"] == "team_ids[2]"
    r = await api.http.post("/v1/conversations", json={"team_ids": []}, headers=api.auth(T, "alice"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "self_only_conversation"
    r = await api.http.post("/v1/conversations", json={"team_ids": [ours["id"]] * 6}, headers=api.auth(T, "alice"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "team_ids"
    assert await listed(api, T, "alice") == {} and await listed(api, T, "bob") == {}
    r = await api.http.get("/v1/teams", headers=api.auth(OTHER, "olga"))
    assert [t["id"] for t in r.json()["items"]] == [theirs["id"]]
    after = (await api.http.get(f"/v1/teams/{theirs['id']}", headers=api.admin(OTHER))).json()
    assert after["name"] == "Tier 2" and [m["id"] for m in after["members"]] == ["oscar"]

    # A request of ours cannot be claimed, released or seen from the other tenant.
    await set_presence(api, T, {"bob": "online"})
    conv = await ask(api, T, "alice", [ours["id"]])
    for action in ("claim", "release"):
        r = await api.http.post(f"/v1/conversations/{conv['id']}/{action}", headers=api.auth(OTHER, "oscar"))
        assert r.status_code == 404
    r = await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.auth(OTHER, "oscar"))
    assert r.status_code == 404


async def test_the_thread_list_pages_through_own_threads_and_offers_interleaved(api):
    """Two index walks merged on one key: every thread and every offer once, newest first, across
    pages of two."""
    await api.add_agents(T, "alice", "bob", "carol", "dave")
    await set_presence(api, T, {"alice": "online"})
    team = await make_team(api, T, "Tier 2", ["alice"])
    made = []
    for i in range(3):
        own = await api.start(T, "alice", "bob", related={"type": "ticket", "id": f"own-{i}"})
        offer = await ask(api, T, ["carol", "dave"][i % 2], [team["id"]], related={"type": "ticket", "id": f"ask-{i}"})
        made += [own["id"], offer["id"]]
    seen, cursor = [], None
    while True:
        r = await api.http.get("/v1/conversations", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                               headers=api.auth(T, "alice"))
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]  # newest first, each once
