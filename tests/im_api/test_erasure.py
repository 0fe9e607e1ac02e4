"""Erasing an agent's personal data through im-api against the real servers: the directory entry
at once (name, email, access), then the background job — bounded per round, resumable by another
instance from its state in MongoDB — redacts or keeps their messages as the tenant chose, rewords
the system lines that name them and rewrites the outbox records that do; afterwards no collection
holds their name or email. Refusals change nothing; another tenant gets 404; the audit log has the
request and its end."""

from __future__ import annotations

import pytest
from im_api.erasure import ERASED_NAME, Erasures, erase_in, without_name
from im_contracts.events import MessageChanged
from im_contracts.topics import MESSAGES

from im_api_helpers import read_events, running
from support.search import holders

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"
NEEDLES = (b"Alice Liddell", b"alice@acme.test")


def test_the_name_goes_from_lines_and_event_shapes():
    assert without_name("Bob added Alice Liddell and Carol", "Alice Liddell") == "Bob added Erased agent and Carol"
    assert without_name("Bob left the conversation", "Alice Liddell") is None
    assert without_name("Bob added Alice", "Al") is None  # a name inside another is not theirs
    assert without_name("Al left. Bob added Al and Carol", "Al") == f"{ERASED_NAME} left. Bob added {ERASED_NAME} and Carol"
    event = {"conversation": {"participants": [{"id": "alice", "display_name": "Alice Liddell"},
                                               {"id": "bob", "display_name": "Bob"}]},
             "request": {"asked_by": {"id": "alice", "display_name": "Alice Liddell"}, "claimed_by": None}}
    assert erase_in(event, "alice")
    assert event["conversation"]["participants"] == [{"id": "alice", "display_name": ERASED_NAME},
                                                     {"id": "bob", "display_name": "Bob"}]
    assert event["request"]["asked_by"]["display_name"] == ERASED_NAME
    assert not erase_in(event, "alice")  # nothing left: a repeated round changes nothing
    directory = {"type": "AgentChanged", "agent_id": "alice", "display_name": "Alice Liddell", "email": "a@x"}
    assert erase_in(directory, "alice") and directory["email"] is None
    assert not erase_in({"agent_id": "bob", "display_name": "Bob", "email": "b@x"}, "alice")


@pytest.fixture
async def quiet_api(api_settings):
    # The job's own loop is slowed down: the test runs its rounds itself, to see each one. Nothing
    # else could post as the erased agent here: the walk of their messages need not stay open.
    async with running(api_settings.model_copy(update={"erasure_interval_s": 3600})) as api:
        api.app.state.services.erasures.settle_s = 0
        yield api


async def test_an_erasure_redacts_rewords_and_leaves_no_name_or_email(quiet_api, mongo, mongo_db_name):
    api = quiet_api
    r = await api.http.put("/v1/agents/alice", json={"display_name": "Alice Liddell", "email": "alice@acme.test"},
                           headers=api.admin(T))
    assert r.status_code == 200
    await api.add_agents(T, "bob", "carol")
    first = await api.start(T, "alice", "bob")
    for i in range(5):
        assert (await api.send(T, "alice", first["id"], f"note {i} from me", f"a{i}")).status_code == 201
    assert (await api.send(T, "bob", first["id"], "thanks", "b1")).status_code == 201
    second = await api.start(T, "bob", "carol")
    r = await api.http.post(f"/v1/conversations/{second['id']}/participants", json={"agent_ids": ["alice"]},
                            headers=api.auth(T, "bob"))
    assert r.status_code == 200, r.text  # "Bob added Alice Liddell"
    r = await api.http.delete(f"/v1/conversations/{first['id']}/participants/me", headers=api.auth(T, "alice"))
    assert r.status_code == 204  # "Alice Liddell left the conversation"
    db = mongo[mongo_db_name]
    assert set(await holders(db, NEEDLES)) >= {"agents", "messages", "outbox"}  # else the test proves nothing

    url = "/v1/admin/agents/alice/erase"
    body = {"messages": "redact", "reason": "her request (HR-2291)"}
    for headers, status in [(api.auth(T, "bob"), 403), (api.admin(OTHER), 404)]:
        assert (await api.http.post(url, json=body, headers=headers)).status_code == status
    r = await api.http.post(url, json={"messages": "shred", "reason": "x"}, headers=api.admin(T))
    assert r.status_code == 422 and r.json()["error"]["field"] == "messages"
    r = await api.http.post("/v1/admin/agents/root/erase", json=body, headers=api.admin(T))
    assert r.status_code == 422 and r.json()["error"]["code"] == "cannot_erase_self"
    assert (await db["agents"].find_one({"tenant_id": T, "agent_id": "alice"}))["display_name"] == "Alice Liddell"

    r = await api.http.post(url, json=body, headers=api.admin(T))
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running" and r.json()["messages"] == "redact"
    # At once: the directory entry, and her access.
    agent = await db["agents"].find_one({"tenant_id": T, "agent_id": "alice"})
    assert (agent["display_name"], agent["email"], agent["active"]) == (ERASED_NAME, None, False)
    thread = (await api.http.get(f"/v1/conversations/{second['id']}", headers=api.auth(T, "bob"))).json()
    assert {p["id"]: p["display_name"] for p in thread["participants"]}["alice"] == ERASED_NAME
    r = await api.http.get("/v1/conversations", headers=api.auth(T, "alice"))
    assert r.status_code == 401
    assert (await api.http.post(url, json=body, headers=api.admin(T))).status_code == 409

    # The job: rounds of 2 items; halfway, another instance (a restart) takes over from MongoDB.
    services = api.app.state.services
    rounds = 0
    while await services.erasures.round(2):
        rounds += 1
        if rounds == 3:
            services.erasures = Erasures(services.lifecycle, services.erasures.db, settle_s=0)
        assert rounds < 40, "the erasure never finished"
    assert rounds >= 5  # bounded: 7 of her messages and 2 threads take several rounds
    status = (await api.http.get("/v1/admin/agents/alice/erasure", headers=api.admin(T))).json()
    assert status["status"] == "done" and status["finished_at"]
    assert status["counts"]["messages_redacted"] == 5 and status["counts"]["lines_rewritten"] == 2

    assert await holders(db, NEEDLES) == {}
    history = (await api.http.get(f"/v1/conversations/{second['id']}/messages", headers=api.auth(T, "bob"))).json()
    assert [m["body"] for m in history["items"] if m["kind"] == "system"] == [f"Bob added {ERASED_NAME}"]
    thread = (await api.http.get(f"/v1/conversations/{second['id']}", headers=api.auth(T, "bob"))).json()
    assert {p["id"]: p["display_name"] for p in thread["participants"]}["alice"] == ERASED_NAME
    history = (await api.http.get(f"/v1/conversations/{first['id']}/messages", headers=api.auth(T, "bob"))).json()
    assert [(m["body"], bool(m["redacted_at"])) for m in history["items"]] == [
        *[("", True)] * 5, ("thanks", False), (f"{ERASED_NAME} left the conversation", False)]

    events = await read_events(api.settings.kafka_bootstrap, MESSAGES, api.settings.topic_prefix, 15)
    reworded = [e for _, e, _ in events if isinstance(e, MessageChanged) and e.change == "reworded"]
    assert sorted(e.message.body for e in reworded) == [
        f"Bob added {ERASED_NAME}", f"{ERASED_NAME} left the conversation"]
    assert "alice" in next(e for e in reworded if "left" in e.message.body).recipients  # she had a copy
    audit = (await api.http.get("/v1/admin/audit", headers=api.admin(T))).json()["items"]
    erasure = [(a["action"], a["details"]) for a in audit if a["action"].startswith("agent.erase")]
    assert erasure[0][0] == "agent.erase.finished" and erasure[0][1]["messages_redacted"] == 5
    assert erasure[1] == ("agent.erase", {"messages": "redact", "reason": "her request (HR-2291)"})
    assert sum(a["action"] == "message.redact" for a in audit) == 5


async def test_kept_messages_stay_under_the_erased_name(quiet_api):
    api = quiet_api
    await api.add_agents(T, "dave", "erin")
    conv = await api.start(T, "dave", "erin")
    assert (await api.send(T, "dave", conv["id"], "the printer is fixed", "d1")).status_code == 201
    r = await api.http.post("/v1/admin/agents/dave/erase", json={"messages": "keep", "reason": "left the company"},
                            headers=api.admin(T))
    assert r.status_code == 202
    while await api.app.state.services.erasures.round(10):
        pass
    history = (await api.http.get(f"/v1/conversations/{conv['id']}/messages", headers=api.auth(T, "erin"))).json()
    assert [(m["sender_id"], m["body"], m["redacted_at"]) for m in history["items"]] == [
        ("dave", "the printer is fixed", None)]
    thread = (await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.auth(T, "erin"))).json()
    assert {p["id"]: p["display_name"] for p in thread["participants"]}["dave"] == ERASED_NAME
    # An upsert afterwards makes a new entry (a returning employee), which can be erased again.
    r = await api.http.put("/v1/agents/dave", json={"display_name": "Dave"}, headers=api.admin(T))
    assert r.status_code == 200 and r.json()["active"] is True
    r = await api.http.post("/v1/admin/agents/dave/erase", json={"messages": "keep", "reason": "again"},
                            headers=api.admin(T))
    assert r.status_code == 202
