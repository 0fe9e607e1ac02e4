"""Starting IMs, the thread list, participants, read markers, related lookup and tickets."""

from __future__ import annotations

import asyncio

import pytest
from im_contracts.events import ConversationStarted, ParticipantsChanged, ReadMarkerMoved
from im_contracts.topics import CONVERSATIONS, MESSAGES

from im_api_helpers import read_events

pytestmark = pytest.mark.integration
T = "acme"


async def test_same_agents_and_related_get_the_existing_thread_and_a_new_item_gets_a_new_one(api):
    await api.add_agents(T, "alice", "bob", "carol")
    r = await api.http.post("/v1/conversations", json={"participant_ids": ["bob"],
                            "related": {"type": "ticket", "id": "T-1", "title": "Printer"}},
                            headers=api.auth(T, "alice"))
    assert r.status_code == 201
    first = r.json()
    assert {p["id"] for p in first["participants"]} == {"alice", "bob"}
    assert first["related"] == {"type": "ticket", "id": "T-1", "title": "Printer"}
    assert first["last_message"] is None and first["last_seq"] == 0 and first["unread_count"] == 0
    # Bob starting with Alice about the same ticket: the same set (caller included) -> the same thread.
    r = await api.http.post("/v1/conversations", json={"participant_ids": ["alice", "bob"],
                            "related": {"type": "ticket", "id": "T-1"}}, headers=api.auth(T, "bob"))
    assert r.status_code == 200 and r.json()["id"] == first["id"]
    other_item = await api.start(T, "alice", "bob", related={"type": "chat", "id": "T-1"})
    no_item = await api.start(T, "alice", "bob")
    bigger = await api.start(T, "alice", "bob", "carol")
    assert len({first["id"], other_item["id"], no_item["id"], bigger["id"]}) == 4


async def test_concurrent_starts_of_one_identity_yield_one_thread(api):
    await api.add_agents(T, "alice", "bob")
    # Alice and Bob both press "start" on the same chat at once: the same identity, one thread.
    results = await asyncio.gather(*(api.http.post(
        "/v1/conversations", json={"participant_ids": ["bob" if i % 2 else "alice"],
                                   "related": {"type": "chat", "id": "C9"}},
        headers=api.auth(T, "alice" if i % 2 else "bob")) for i in range(8)))
    assert sorted(r.status_code for r in results) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in results}) == 1


async def test_start_with_unknown_deactivated_or_only_yourself_is_422_naming_them(api):
    await api.add_agents(T, "alice", "bob", "dave")
    assert (await api.http.delete("/v1/agents/dave", headers=api.admin(T))).status_code == 204
    r = await api.http.post("/v1/conversations", json={"participant_ids": ["bob", "zed", "dave"]},
                            headers=api.auth(T, "alice"))
    assert r.status_code == 422
    error = r.json()["error"]
    assert "zed" in error["message"] and "dave" in error["message"]
    assert {e["field"] for e in error["errors"]} == {"participant_ids[1]", "participant_ids[2]"}
    r = await api.http.post("/v1/conversations", json={"participant_ids": ["alice"]}, headers=api.auth(T, "alice"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "self_only_conversation"
    listed = await api.http.get("/v1/conversations", headers=api.auth(T, "alice"))
    assert listed.json()["items"] == []


async def test_first_message_is_posted_once_by_client_msg_id(api):
    await api.add_agents(T, "alice", "bob")
    body = {"participant_ids": ["bob"], "first_message": {"body": "hello", "client_msg_id": "m1"}}
    a = await api.http.post("/v1/conversations", json=body, headers=api.auth(T, "alice"))
    b = await api.http.post("/v1/conversations", json=body, headers=api.auth(T, "alice"))
    assert (a.status_code, b.status_code) == (201, 200)
    assert b.json()["last_seq"] == 1 and b.json()["last_message"]["body"] == "hello"


async def test_thread_list_pages_walk_a_snapshot_while_messages_arrive(api):
    await api.add_agents(T, "alice", *[f"a{i}" for i in range(9)])
    threads = []
    for i in range(9):
        c = await api.start(T, "alice", f"a{i}")
        await api.send(T, "alice", c["id"], f"m{i}", f"m{i}")
        threads.append(c["id"])
    seen: list[str] = []
    r = await api.http.get("/v1/conversations?limit=3", headers=api.auth(T, "alice"))
    page = r.json()
    assert [c["id"] for c in page["items"]] == threads[::-1][:3]  # most recent first
    seen += [c["id"] for c in page["items"]]
    moved = {threads[0], threads[4]}  # not yet listed: they jump to the top after the snapshot
    while page["next_cursor"]:
        for cid in moved:
            await api.send(T, "a0" if cid == threads[0] else "a4", cid, "bump", f"bump-{len(seen)}")
        r = await api.http.get(f"/v1/conversations?limit=3&cursor={page['next_cursor']}",
                               headers=api.auth(T, "alice"))
        assert r.status_code == 200
        page = r.json()
        seen += [c["id"] for c in page["items"]]
    assert len(seen) == len(set(seen)), "an item was repeated"
    # Every thread that did not change after the snapshot was listed exactly once.
    assert set(threads) - moved <= set(seen)
    fresh = (await api.http.get("/v1/conversations?limit=2", headers=api.auth(T, "alice"))).json()
    assert {c["id"] for c in fresh["items"]} == moved
    assert fresh["items"][0]["unread_count"] >= 1 and isinstance(fresh["stream_cursor"], int)


async def test_stream_cursor_comes_from_deliverys_head(api, mongo, mongo_db_name):
    await mongo[mongo_db_name].delivery_heads.insert_one(
        {"_id": f"{T}:alice", "tenant_id": T, "agent_id": "alice", "cursor": 41})
    await api.add_agents(T, "alice")
    r = await api.http.get("/v1/conversations", headers=api.auth(T, "alice"))
    assert r.json()["stream_cursor"] == 41


async def test_adding_participants_records_it_and_new_ones_read_the_whole_history(api, endpoints):
    await api.add_agents(T, "alice", "bob", "carol", "dave")
    c = await api.start(T, "alice", "bob")
    await api.send(T, "alice", c["id"], "before carol", "m1")
    r = await api.http.post(f"/v1/conversations/{c['id']}/participants", json={"agent_ids": ["carol", "zed"]},
                            headers=api.auth(T, "bob"))
    assert r.status_code == 422 and "zed" in r.json()["error"]["message"]
    r = await api.http.post(f"/v1/conversations/{c['id']}/participants", json={"agent_ids": ["carol"]},
                            headers=api.auth(T, "bob"))
    assert r.status_code == 200
    assert [p["id"] for p in r.json()["participants"]] == ["alice", "bob", "carol"]
    history = (await api.http.get(f"/v1/conversations/{c['id']}/messages", headers=api.auth(T, "carol"))).json()
    assert [(m["seq"], m["kind"], m["body"]) for m in history["items"]] == [
        (1, "text", "before carol"), (2, "system", "Bob added Carol")]
    changes = await read_events(endpoints.kafka_bootstrap, CONVERSATIONS, api.settings.topic_prefix, 2)
    kinds = [e for _, e, _ in changes]
    started = [e for e in kinds if isinstance(e, ConversationStarted)]
    changed = [e for e in kinds if isinstance(e, ParticipantsChanged)]
    assert started[0].recipients == ["alice", "bob"]
    assert changed[0].added == ["carol"] and changed[0].changed_by == "bob"
    assert set(changed[0].recipients) == {"alice", "bob", "carol"}


async def test_a_leaver_loses_access_and_is_not_a_recipient_of_later_messages(api, endpoints):
    await api.add_agents(T, "alice", "bob", "carol")
    c = await api.start(T, "alice", "bob", "carol")
    r = await api.http.delete(f"/v1/conversations/{c['id']}/participants/me", headers=api.auth(T, "carol"))
    assert r.status_code == 204
    for call in (api.http.get(f"/v1/conversations/{c['id']}", headers=api.auth(T, "carol")),
                 api.http.get(f"/v1/conversations/{c['id']}/messages", headers=api.auth(T, "carol")),
                 api.send(T, "carol", c["id"], "still here?", "x1")):
        assert (await call).status_code == 404
    assert (await api.send(T, "alice", c["id"], "after carol", "m2")).status_code == 201
    history = (await api.http.get(f"/v1/conversations/{c['id']}/messages", headers=api.auth(T, "alice"))).json()
    assert [m["body"] for m in history["items"]] == ["Carol left the conversation", "after carol"]
    posted = await read_events(endpoints.kafka_bootstrap, MESSAGES, api.settings.topic_prefix, 2)
    by_seq = {e.message.seq: e for _, e, _ in posted}
    assert sorted(by_seq[1].recipients) == ["alice", "bob"] and sorted(by_seq[2].recipients) == ["alice", "bob"]
    changes = await read_events(endpoints.kafka_bootstrap, CONVERSATIONS, api.settings.topic_prefix, 2)
    left = [e for _, e, _ in changes if isinstance(e, ParticipantsChanged)][0]
    assert left.removed == ["carol"] and "carol" in left.recipients


async def test_read_marker_only_moves_forward_and_agrees_with_the_list_and_badge(api, endpoints):
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    for i in range(5):
        await api.send(T, "alice", c["id"], f"m{i}", f"m{i}")
    assert (await api.http.get("/v1/me/unread", headers=api.auth(T, "bob"))).json() == {"total": 5, "conversations": 1, "capped": False}
    assert (await api.http.get("/v1/me/unread", headers=api.auth(T, "alice"))).json() == {"total": 0, "conversations": 0, "capped": False}
    r = await api.http.post(f"/v1/conversations/{c['id']}/read", json={"seq": 3}, headers=api.auth(T, "bob"))
    assert r.json() == {"last_read_seq": 3, "unread_count": 2}
    r = await api.http.post(f"/v1/conversations/{c['id']}/read", json={"seq": 1}, headers=api.auth(T, "bob"))
    assert r.json() == {"last_read_seq": 3, "unread_count": 2}
    listed = (await api.http.get("/v1/conversations", headers=api.auth(T, "bob"))).json()["items"][0]
    assert (listed["last_read_seq"], listed["unread_count"]) == (3, 2)
    r = await api.http.post(f"/v1/conversations/{c['id']}/read", json={"seq": 99}, headers=api.auth(T, "bob"))
    assert r.json() == {"last_read_seq": 5, "unread_count": 0}
    await api.send(T, "bob", c["id"], "reply", "r1")
    assert (await api.http.get(f"/v1/conversations/{c['id']}", headers=api.auth(T, "bob"))).json()["unread_count"] == 0
    assert (await api.http.get("/v1/me/unread", headers=api.auth(T, "alice"))).json() == {"total": 1, "conversations": 1, "capped": False}
    events = await read_events(endpoints.kafka_bootstrap, CONVERSATIONS, api.settings.topic_prefix, 3)
    moves = [e.seq for _, e, _ in events if isinstance(e, ReadMarkerMoved)]
    assert moves == [3, 5]


async def test_related_lookup_shows_the_callers_threads_and_admins_see_all(api):
    await api.add_agents(T, "alice", "bob", "carol")
    mine = await api.start(T, "alice", "bob", related={"type": "ticket", "id": "T-7"})
    theirs = await api.start(T, "bob", "carol", related={"type": "ticket", "id": "T-7"})
    await api.start(T, "alice", "carol", related={"type": "chat", "id": "T-7"})
    r = await api.http.get("/v1/related/ticket/T-7/conversations", headers=api.auth(T, "alice"))
    assert [c["id"] for c in r.json()["items"]] == [mine["id"]]
    r = await api.http.get("/v1/related/ticket/T-7/conversations", headers=api.admin(T))
    assert {c["id"] for c in r.json()["items"]} == {mine["id"], theirs["id"]}


async def test_a_stream_ticket_names_the_agent_and_device_for_the_gateway(api):
    from im_runtime.auth import TokenVerifier

    await api.add_agents(T, "alice")
    r = await api.http.post("/v1/stream/tickets", json={"device_id": "laptop-1"}, headers=api.auth(T, "alice"))
    assert r.status_code == 201
    body = r.json()
    assert body["url"].startswith(api.settings.stream_public_url + "?ticket=")
    ticket = TokenVerifier(api.settings).verify_ticket(body["ticket"])
    assert (ticket.tenant_id, ticket.agent_id, ticket.device_id) == (T, "alice", "laptop-1")
    assert body["expires_at"].endswith("Z")


async def test_a_service_token_acts_for_an_active_agent_by_header_or_claim(api):
    await api.add_agents(T, "alice", "bob", "dave")
    c = await api.start(T, "alice", "bob")
    by_header = {**api.auth(T, "ticketing", "service"), "X-Acting-Agent-Id": "bob"}
    r = await api.http.post(f"/v1/conversations/{c['id']}/messages", json={"body": "via ticketing",
                            "client_msg_id": "s1"}, headers=by_header)
    assert r.status_code == 201 and r.json()["sender_id"] == "bob"
    by_claim = api.auth(T, "chat", "service", acting_agent_id="alice")
    r = await api.http.get(f"/v1/conversations/{c['id']}", headers=by_claim)
    assert r.status_code == 200 and r.json()["last_read_seq"] == 0 and r.json()["unread_count"] == 1
    assert (await api.http.delete("/v1/agents/dave", headers=api.admin(T))).status_code == 204
    r = await api.http.get("/v1/me/unread", headers={**api.auth(T, "ticketing", "service"),
                                                      "X-Acting-Agent-Id": "dave"})
    assert r.status_code == 401
