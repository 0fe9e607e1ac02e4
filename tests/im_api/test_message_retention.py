"""Message retention through im-api against the real servers: a tenant admin sets `retention_days`
(audited, validated, other settings untouched); the job's rounds then delete exactly the tenant's
messages older than the limit — with their earlier versions, the thread previews and team request
questions made from them and the tenant's sent outbox records of that age — at most a batch per
round, leave every newer message, every unsent record and every other tenant alone, and audit
what they delete."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from im_api.settings import ApiSettings
from im_api.store import now
from prometheus_client import REGISTRY
from pymongo import monitoring

from im_api_helpers import Api, fast_settings, running
from support.wait import eventually

pytestmark = pytest.mark.integration
T, QUIET, OTHER = "acme", "initech", "globex"
URL = "/v1/admin/message-settings"


@pytest.fixture
def api_settings(endpoints, kafka_topics: str, mongo_db_name: str, jwt_secret: str, mongo) -> ApiSettings:
    # Rounds are run by the test, one at a time: the job's own loop runs one at start-up (no
    # tenant has retention yet) and then waits an hour.
    return fast_settings(kafka_bootstrap=endpoints.kafka_bootstrap, kafka_idempotence=endpoints.kafka_idempotence,
                         topic_prefix=kafka_topics, mongo_uri=endpoints.mongo_uri, mongo_db=mongo_db_name,
                         jwt_secret=jwt_secret, retention_batch=3, retention_interval_s=3600.0)


async def test_admins_set_retention_days_partially_validated_and_audited(api: Api):
    await api.add_agents(T, "alice")
    r = await api.http.get(URL, headers=api.admin(T))
    assert r.status_code == 200 and r.json()["retention_days"] is None and r.json()["edit_window_s"] == 900
    r = await api.http.put(URL, json={"retention_days": 30}, headers=api.admin(T))
    assert r.status_code == 200, r.text
    assert (r.json()["retention_days"], r.json()["edit_window_s"], r.json()["updated_by"]) == (30, 900, "root")
    r = await api.http.put(URL, json={"edit_window_s": 60}, headers=api.admin(T))
    assert (r.json()["retention_days"], r.json()["edit_window_s"]) == (30, 60)  # left out: kept
    for body, field in [({"retention_days": 0}, "retention_days"), ({"retention_days": 3651}, "retention_days"),
                        ({"retention_days": "a month"}, "retention_days"), ({"retention_days": 1.5}, "retention_days"),
                        ({"edit_window_s": None}, "edit_window_s"), ({"keep_for": 3}, "keep_for")]:
        r = await api.http.put(URL, json=body, headers=api.admin(T))
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (body, r.text)
    r = await api.http.put(URL, json={"retention_days": 7}, headers=api.auth(T, "alice"))
    assert r.status_code == 403
    assert (await api.http.get(URL, headers=api.auth(T, "alice"))).status_code == 403
    r = await api.http.put(URL, json={"retention_days": None}, headers=api.admin(T))
    assert r.status_code == 200 and r.json()["retention_days"] is None and r.json()["edit_window_s"] == 60
    assert (await api.http.get(URL, headers=api.admin(OTHER))).json()["retention_days"] is None

    audit = (await api.http.get("/v1/admin/audit", params={"action": "settings.change"},
                                headers=api.admin(T))).json()["items"]
    assert [(a["actor"], a["details"]) for a in audit] == [
        ("root", {"retention_days": [30, None]}), ("root", {"edit_window_s": [900, 60]}),
        ("root", {"retention_days": [None, 30]})]


async def seed(api: Api, mongo, db_name: str) -> dict:
    """Threads in three tenants; returns their ids. Every message is posted through the API."""
    for tenant in (T, QUIET, OTHER):
        await api.add_agents(tenant, "alice", "bob", "carol")
    r = await api.http.post("/v1/teams", json={"name": "Tier 2", "member_ids": ["carol"]}, headers=api.admin(T))
    assert r.status_code == 201, r.text
    team = r.json()["id"]
    a = (await api.start(T, "alice", "bob"))["id"]
    b = (await api.start(T, "alice", "carol"))["id"]
    r = await api.http.post("/v1/conversations", json={
        "team_ids": [team], "first_message": {"body": "the customer's card is 4111", "client_msg_id": "q1"}},
        headers=api.auth(T, "bob"))
    assert r.status_code == 201, r.text
    c = r.json()["id"]
    for seq in range(1, 5):
        assert (await api.send(T, "alice", a, f"a{seq}", f"a{seq}")).status_code == 201
    for seq in range(1, 3):
        assert (await api.send(T, "alice", b, f"b{seq}", f"b{seq}")).status_code == 201
    r = await api.http.patch(f"/v1/conversations/{a}/messages/2", json={"body": "a2, edited"},
                             headers=api.auth(T, "alice"))
    assert r.status_code == 200, r.text
    other = (await api.start(OTHER, "alice", "bob"))["id"]
    quiet = (await api.start(QUIET, "alice", "bob"))["id"]
    for seq in range(1, 3):
        assert (await api.send(OTHER, "alice", other, f"o{seq}", f"o{seq}")).status_code == 201
        assert (await api.send(QUIET, "alice", quiet, f"q{seq}", f"q{seq}")).status_code == 201
    outbox = mongo[db_name]["outbox"]
    await eventually(lambda: _all_sent(outbox), timeout=30, message="the relay never published the seed")
    return {"a": a, "b": b, "c": c, "other": other, "quiet": quiet}


async def _all_sent(outbox) -> bool:
    return await outbox.count_documents({"sent_at": None}) == 0


async def backdate(db, tenant: str, conversation_id: str, seqs: list[int], when) -> None:
    """The API stamps created_at with the server's clock and a test cannot wait days: the only way
    to have old messages is to move their time in MongoDB. The thread's preview is a copy of its
    last message and carries the same time, as it would have."""
    await db["messages"].update_many({"tenant_id": tenant, "conversation_id": conversation_id, "seq": {"$in": seqs}},
                                     {"$set": {"created_at": when}})
    await db["conversations"].update_one(
        {"_id": conversation_id, "tenant_id": tenant, "last_message.seq": {"$in": seqs}},
        {"$set": {"last_message.created_at": when}})


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rounds_delete_exactly_the_messages_past_the_limit_with_their_copies_a_batch_at_a_time(
        api: Api, mongo, mongo_db_name):
    ids = await seed(api, mongo, mongo_db_name)
    db = mongo[mongo_db_name]
    old = now() - timedelta(days=2)
    await backdate(db, T, ids["a"], [1, 2, 3], old)  # a4 stays young: a's preview stays
    await backdate(db, T, ids["b"], [1, 2], old)
    await backdate(db, T, ids["c"], [1], old)  # the team request's question
    await backdate(db, OTHER, ids["other"], [1, 2], old)  # retention off there
    # Every record of these two relayed so far was "sent two days ago"; then one
    # more change of acme's makes a young record, and a record no relay will send (shard 99)
    # is old but unsent.
    outbox = db["outbox"]
    await outbox.update_many({"tenant_id": {"$in": [T, OTHER]}}, {"$set": {"sent_at": old, "created_at": old}})
    old_records = await outbox.count_documents({"tenant_id": T})
    assert old_records >= 9
    r = await api.http.patch(f"/v1/conversations/{ids['a']}/messages/4", json={"body": "a4, edited"},
                             headers=api.auth(T, "alice"))
    assert r.status_code == 200
    await eventually(lambda: _all_sent(outbox), timeout=30)
    await outbox.insert_one({"tenant_id": T, "shard": 99, "conversation_id": ids["a"], "order": 99, "topic": "x",
                             "key": b"k", "value": b"v", "headers": [], "created_at": old, "sent_at": None})
    versions_before = await db["message_versions"].count_documents({"tenant_id": T})
    assert versions_before == 2  # a2's first body, a4's first body

    retention = api.app.state.retention
    assert await retention.round() == {}  # nobody has retention on yet
    for tenant in (T, QUIET):
        r = await api.http.put(URL, json={"retention_days": 1}, headers=api.admin(tenant))
        assert r.status_code == 200, r.text

    deleted_before = counter("im_api_retention_messages_deleted_total")
    rounds = []
    while done := await retention.round():
        assert set(done) == {T}, done
        rounds.append(done[T])
        assert done[T]["messages"] + done[T]["outbox"] <= 3, done  # the batch bounds every round
        assert len(rounds) < 20
    expected_messages = 3 + 2 + 1
    assert sum(r["messages"] for r in rounds) == expected_messages
    assert sum(r["outbox"] for r in rounds) == old_records
    assert len(rounds) == -(-(expected_messages + old_records) // 3)  # full rounds, messages first
    assert [r["messages"] for r in rounds[:2]] == [3, 3]
    assert counter("im_api_retention_messages_deleted_total") - deleted_before == expected_messages

    # Exactly the old ones went; the young ones and the other tenants' are all there.
    left = {(m["conversation_id"], m["seq"]) async for m in db["messages"].find({"tenant_id": T})}
    assert left == {(ids["a"], 4)}
    assert await db["messages"].count_documents({"tenant_id": OTHER}) == 2
    assert await db["messages"].count_documents({"tenant_id": QUIET}) == 2
    versions = await db["message_versions"].find({"tenant_id": T}).to_list()
    assert [(v["seq"], v["body"]) for v in versions] == [(4, "a4")]  # a2's old body went with a2
    threads = {c["_id"]: c async for c in db["conversations"].find({"tenant_id": T})}
    assert threads[ids["a"]]["last_message"]["seq"] == 4
    assert threads[ids["b"]]["last_message"] is None and threads[ids["c"]]["last_message"] is None
    assert threads[ids["c"]]["team_request"]["question"] is None
    assert threads[ids["c"]]["team_request"]["status"] == "open"  # the request itself is kept
    assert await outbox.count_documents({"tenant_id": T, "sent_at": {"$lt": now() - timedelta(days=1)}}) == 0
    assert await outbox.count_documents({"tenant_id": T, "sent_at": None}) == 1  # never an unsent one
    assert await outbox.count_documents({"tenant_id": T}) >= 2  # the edit's records, sent just now
    assert await outbox.count_documents({"tenant_id": OTHER}) >= 4

    # What readers see: the history of the young part, and threads without the deleted previews.
    history = (await api.http.get(f"/v1/conversations/{ids['a']}/messages", headers=api.auth(T, "bob"))).json()
    assert [m["seq"] for m in history["items"]] == [4]
    listed = {c["id"]: c for c in (await api.http.get("/v1/conversations",
                                                        headers=api.auth(T, "carol"))).json()["items"]}
    assert listed[ids["b"]]["last_message"] is None
    assert listed[ids["c"]]["team_request"]["question"] is None
    assert "4111" not in str(await db["conversations"].find({"tenant_id": T}).to_list())

    # One audit record per round that deleted something, by the job, with what it deleted; none
    # in the tenants whose rounds deleted nothing.
    audit = (await api.http.get("/v1/admin/audit", params={"action": "retention.delete"},
                                headers=api.admin(T))).json()["items"]
    assert len(audit) == len(rounds)
    assert {(a["actor"], a["role"]) for a in audit} == {("system:retention", "system")}
    assert sum(a["details"]["messages"] for a in audit) == expected_messages
    assert sum(a["details"]["outbox_records"] for a in audit) == old_records
    assert all(a["details"]["retention_days"] == 1 and a["target"]["type"] == "messages" for a in audit)
    for tenant in (QUIET, OTHER):
        r = await api.http.get("/v1/admin/audit", params={"action": "retention.delete"}, headers=api.admin(tenant))
        assert r.json()["items"] == []

    # A message that ages past the limit later goes in a later round (the tenant was quiet till then).
    retention.quiet.clear()  # its quiet time is a day away; the test cannot wait for it
    await backdate(db, T, ids["a"], [4], old)
    assert (await retention.round())[T]["messages"] == 1
    assert await db["messages"].count_documents({"tenant_id": T}) == 0
    assert await db["message_versions"].count_documents({"tenant_id": T}) == 0


async def test_an_interrupted_round_is_finished_by_the_next_and_two_processes_do_not_both_run_rounds(
        api: Api, mongo, mongo_db_name):
    ids = await seed(api, mongo, mongo_db_name)
    db = mongo[mongo_db_name]
    old = now() - timedelta(days=2)
    await backdate(db, T, ids["a"], [1, 2, 3, 4], old)
    await api.http.put(URL, json={"retention_days": 1}, headers=api.admin(T))
    retention = api.app.state.retention
    cutoff = now() - timedelta(days=1)
    # A round killed after the copies were removed and before the messages: the previews and
    # versions are gone, the messages are still there.
    messages = await retention.expired_messages(T, cutoff, 10)
    assert len(messages) == 4
    from im_api import retention_rules as rules
    from collections import Counter
    await retention._derived(T, [m["_id"] for m in messages], rules.by_conversation(messages), cutoff, Counter())
    thread = await db["conversations"].find_one({"_id": ids["a"]})
    assert thread["last_message"] is None and await db["messages"].count_documents({"tenant_id": T}) == 7
    done = await retention.round()
    assert done[T]["messages"] == 3  # the batch
    assert (await retention.round())[T]["messages"] == 1
    assert {(m["conversation_id"], m["seq"]) async for m in db["messages"].find({"tenant_id": T})} == {
        (ids["b"], 1), (ids["b"], 2), (ids["c"], 1)}

    # A second process: it does not run rounds while this one holds the lease.
    from im_api.retention import Retention
    second = Retention(db, retention.audit, "second-process", budget=3, lease_s=60, outbox_retention_s=7 * 86400)
    assert not await second.hold(now())
    await retention.release()  # a clean stop hands it over at once
    assert await second.hold(now())
    assert not await retention.hold(now())


async def test_one_round_of_many_messages_costs_a_few_commands_plus_one_per_thread_preview(
        endpoints, kafka_topics, mongo_db_name, jwt_secret, mongo):
    """What a round costs: it reads and deletes by lists, never a command per message."""
    commands = CommandNames()
    settings = fast_settings(kafka_bootstrap=endpoints.kafka_bootstrap, kafka_idempotence=endpoints.kafka_idempotence,
                             topic_prefix=kafka_topics, mongo_uri=endpoints.mongo_uri, mongo_db=mongo_db_name,
                             jwt_secret=jwt_secret, retention_batch=500, retention_interval_s=3600.0)
    async with running(settings, event_listeners=[commands]) as api:
        await api.add_agents(T, "alice", *[f"b{i}" for i in range(10)])
        threads = [(await api.start(T, "alice", f"b{i}"))["id"] for i in range(10)]
        for n in range(20):
            for i, cid in enumerate(threads):
                assert (await api.send(T, "alice", cid, f"m{n}", f"{i}-{n}")).status_code == 201
        db = mongo[mongo_db_name]
        old = now() - timedelta(days=2)
        for cid in threads:
            await backdate(db, T, cid, list(range(1, 21)), old)
        await api.http.put(URL, json={"retention_days": 1}, headers=api.admin(T))
        retention = api.app.state.retention
        commands.mine.clear()
        started = time.monotonic()
        done = await retention.round()
        took = time.monotonic() - started
        assert done[T]["messages"] == 200 and done[T]["previews"] == 10
        ours = [(name, where) for name, where, relay in commands.mine if not relay and where in (
            "messages", "message_versions", "conversations", "outbox", "audit_log", "retention_lease",
            "message_settings")]
        # lease, settings, the tenant's old messages and old outbox records, the audit record;
        # twice (versions delete, threads read) around the messages' delete, plus one per preview.
        assert len(ours) <= 10 + len(threads), ours
        print(f"\n[retention] one round of 200 messages in 10 threads: {len(ours)} commands, {took * 1000:.0f} ms")


class CommandNames(monitoring.CommandListener):
    """(command, collection, the relay's?) of every command this client sends. The relay's reads of
    unsent records (and its backlog count) go on meanwhile: they are told apart by their filter."""

    def __init__(self) -> None:
        self.mine: list[tuple[str, str, bool]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        relay = event.command_name == "aggregate" or "'sent_at': None" in str(command.get("filter"))
        self.mine.append((event.command_name, str(command.get(event.command_name)), relay))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
