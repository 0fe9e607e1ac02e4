"""Assistance requests over Kafka: the related thread opened or reused, the message posted
as the requester once per request_id, every bad record dead-lettered with its reason, and a MongoDB
outage retried — against the real Kafka and MongoDB, through the in-process app's real consumer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging

import pytest
from im_contracts.events import SYSTEM_TENANT, DeadLetter, MessagePosted
from im_contracts.topics import DEAD_LETTERS, MESSAGES

from assistance_helpers import Producer, request_doc, service_token
from im_api_helpers import read_events, running
from support.wait import eventually

pytestmark = pytest.mark.integration
T = "acme"


async def related_threads(api, tenant: str, agent: str, ticket: str = "T-1") -> list[dict]:
    r = await api.http.get(f"/v1/related/ticket/{ticket}/conversations", headers=api.auth(tenant, agent))
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def messages(api, tenant: str, agent: str, conversation_id: str) -> list[dict]:
    r = await api.http.get(f"/v1/conversations/{conversation_id}/messages", headers=api.auth(tenant, agent))
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def thread_with(api, tenant: str, agent: str, count: int, ticket: str = "T-1") -> tuple[dict, list[dict]]:
    """The one related thread once it holds `count` messages."""

    async def ready():
        threads = await related_threads(api, tenant, agent, ticket)
        if len(threads) == 1 and threads[0]["last_seq"] >= count:
            return threads[0], await messages(api, tenant, agent, threads[0]["id"])
        return None

    return await eventually(ready, timeout=30, message=f"no related thread with {count} messages")


async def test_a_request_opens_the_related_thread_and_posts_the_message_as_the_requester(
        api, kafka_bootstrap, kafka_topics, jwt_secret, mongo, mongo_db_name):
    await api.add_agents(T, "alice", "bob", "carol")
    doc = request_doc(T, "alice", ["bob", "carol"], message="  Warranty case?  ")
    async with Producer(kafka_bootstrap, kafka_topics) as producer:
        await producer.send(doc, token=service_token(jwt_secret, T))

    thread, items = await thread_with(api, T, "bob", 1)
    assert sorted(p["id"] for p in thread["participants"]) == ["alice", "bob", "carol"]
    assert thread["related"] == {"type": "ticket", "id": "T-1", "title": "Printer"}
    assert thread["created_by"] == "alice" and thread["unread_count"] == 1
    [message] = items
    assert (message["sender_id"], message["body"], message["kind"]) == ("alice", "Warranty case?", "text")
    assert message["client_msg_id"].startswith("assist:")

    events = [e for _, e, _ in await read_events(kafka_bootstrap, MESSAGES, kafka_topics, 1)]
    assert isinstance(events[0], MessagePosted) and events[0].message.id == message["id"]
    assert sorted(events[0].recipients) == ["alice", "bob", "carol"]
    record = await mongo[mongo_db_name].assistance_requests.find_one({"tenant_id": T})
    assert (record["request_id"], record["conversation_id"], record["message_id"]) == (
        doc["request_id"], thread["id"], message["id"])
    assert "message" not in record and "body" not in json.dumps(record, default=str)


async def test_a_request_delivered_twice_posts_once_and_a_new_request_on_the_item_reuses_the_thread(
        api, kafka_bootstrap, kafka_topics, jwt_secret, mongo, mongo_db_name):
    await api.add_agents(T, "alice", "bob")
    first = request_doc(T, "alice", ["bob"], message="first ask")
    second = request_doc(T, "alice", ["bob"], message="second ask")
    token = service_token(jwt_secret, T)
    async with Producer(kafka_bootstrap, kafka_topics) as producer:
        # Same key: one partition, so the second request is processed after both copies of the first.
        await producer.send(first, token=token)
        await producer.send(first, token=token)  # a producer retry / redelivery: the same bytes again
        await producer.send(second, token=token)

    thread, items = await thread_with(api, T, "alice", 2)
    assert [(m["seq"], m["body"]) for m in items] == [(1, "first ask"), (2, "second ask")]
    db = mongo[mongo_db_name]
    assert await db.conversations.count_documents({"tenant_id": T}) == 1
    assert await db.messages.count_documents({"tenant_id": T}) == 2
    assert await db.assistance_requests.count_documents({"tenant_id": T}) == 2
    events = await read_events(kafka_bootstrap, MESSAGES, kafka_topics, 2, settle_s=1.0)
    assert sorted(e.message.body for _, e, _ in events) == ["first ask", "second ask"]


async def test_every_bad_record_is_dead_lettered_with_its_reason_and_the_consumer_moves_on(
        api, kafka_bootstrap, kafka_topics, jwt_secret, mongo, mongo_db_name):
    await api.add_agents(T, "alice", "bob", "gone")
    r = await api.http.delete("/v1/agents/gone", headers=api.admin(T))
    assert r.status_code == 204
    good = service_token(jwt_secret, T)
    secret_body = "customer card 4111 never in a log"
    valid = request_doc(T, "alice", ["bob"], message="after the bad ones")
    missing = request_doc(T, "alice", ["bob"], message=secret_body)
    del missing["requested_by"]
    cases = [
        ("malformed_json", b'{"tenant_id": "acme", not json', good),
        ("unsupported_schema_version", request_doc(T, "alice", ["bob"], schema_version=2), good),
        ("invalid_event", missing, good),
        ("unauthorized", request_doc(T, "alice", ["bob"], message=secret_body), None),
        ("unauthorized", request_doc(T, "alice", ["bob"]), service_token("another-secret-" * 3, T)),
        ("unauthorized", request_doc(T, "alice", ["bob"]), service_token(jwt_secret, "globex")),
        ("unauthorized", request_doc(T, "alice", ["bob"]), service_token(jwt_secret, T, role="agent",
                                                                           subject="alice")),
        ("unknown_tenant", request_doc("nobody-corp", "alice", ["bob"]), service_token(jwt_secret, "nobody-corp")),
        ("unknown_agent", request_doc(T, "alice", ["bob", "zed"], message=secret_body), good),
        ("unknown_agent", request_doc(T, "gone", ["bob"]), good),
    ]
    sent = []
    async with Producer(kafka_bootstrap, kafka_topics) as producer:
        for reason, value, token in cases:
            place = await producer.send(value, token=token, headers=[("source", b"ticketing")])
            raw = json.dumps(value).encode() if isinstance(value, dict) else value
            sent.append((reason, raw, place, token))
        await producer.send(valid, token=good)  # same key, same partition: behind every bad one
        # Its request_id again with another message: not applied, dead-lettered as rejected.
        _, reused_at = await producer.send({**valid, "message": "changed my mind"}, token=good)

    _, items = await thread_with(api, T, "bob", 1)
    assert [m["body"] for m in items] == ["after the bad ones"]
    letters = [e for _, e, _ in await read_events(kafka_bootstrap, DEAD_LETTERS, kafka_topics, len(cases) + 1,
                                                   settle_s=0.5)]
    assert all(isinstance(d, DeadLetter) for d in letters)
    assert len(letters) == len(cases) + 1
    by_offset = {d.original_offset: d for d in letters}
    assert by_offset[reused_at].reason == "rejected" and valid["request_id"] in by_offset[reused_at].detail
    for reason, raw, (partition, offset), token in sent:
        letter = by_offset[offset]
        assert letter.reason == reason, (reason, letter.detail)
        assert letter.original_partition == partition and letter.consumer == "im-api-assistance"
        assert letter.original_topic.endswith("helpdesk.assistance-requests.v1")
        assert base64.b64decode(letter.original_value_b64) == raw
        assert base64.b64decode(letter.original_key_b64) == b"acme:ticket:T-1"
        assert [name for name, _ in letter.original_headers] == ["source"], "authorization is never copied"
        assert secret_body not in letter.detail and (token is None or token not in letter.detail)
    unknown = [by_offset[offset].detail for reason, _, (_, offset), _ in sent if reason == "unknown_agent"]
    assert "zed" in unknown[0] and "bob" not in unknown[0] and "alice" not in unknown[0]
    assert "gone" in unknown[1]
    assert any(d.tenant_id == "nobody-corp" for d in letters if d.reason == "unknown_tenant")
    # Filed under the tenant whose valid token sent it, never the one a record merely claims: no
    # token or a forged one is the system tenant's; globex's token is globex's.
    filed = [(reason, by_offset[offset].tenant_id) for reason, _, (_, offset), _ in sent]
    assert filed[:7] == [("malformed_json", T), ("unsupported_schema_version", T), ("invalid_event", T),
                         ("unauthorized", SYSTEM_TENANT), ("unauthorized", SYSTEM_TENANT),
                         ("unauthorized", "globex"), ("unauthorized", T)], filed
    db = mongo[mongo_db_name]
    assert await db.conversations.count_documents({}) == 1 and await db.messages.count_documents({}) == 1


async def test_a_mongodb_outage_pauses_and_retries_the_request_instead_of_dead_lettering_it(
        api_settings, private_mongo, kafka_bootstrap, kafka_topics, jwt_secret, caplog):
    settings = api_settings.model_copy(update={"mongo_uri": private_mongo.uri})
    async with running(settings) as api:
        await api.add_agents(T, "alice", "bob")
        await thread_with_none(api)
        caplog.set_level(logging.WARNING, logger="im_runtime.kafka")
        await asyncio.to_thread(private_mongo.stop)
        try:
            async with Producer(kafka_bootstrap, kafka_topics) as producer:
                await producer.send(request_doc(T, "alice", ["bob"], message="while down"),
                                    token=service_token(jwt_secret, T))
            await eventually(
                lambda: any(r.getMessage() == "transient failure: partition paused" for r in caplog.records),
                timeout=40, message="the consumer never paused on the outage")
        finally:
            await asyncio.to_thread(private_mongo.start)
        _, items = await thread_with(api, T, "bob", 1)
        assert [m["body"] for m in items] == ["while down"]
    letters = await read_events(kafka_bootstrap, DEAD_LETTERS, kafka_topics, 0, timeout=10.0, settle_s=2.0)
    assert letters == [], "a transient failure is retried, never dead-lettered"


async def thread_with_none(api) -> None:
    assert await related_threads(api, T, "alice") == []


async def test_a_thread_holds_at_most_max_participants_at_every_door(
        api_settings, kafka_bootstrap, kafka_topics, jwt_secret, mongo, mongo_db_name):
    """Start, add and assistance intake all refuse past IM_API_MAX_PARTICIPANTS (here 6), and a refusal
    changes nothing; an assistance request naming 2,000 agents is dead-lettered with the reason
    before any directory read, and the valid request behind it is processed."""
    settings = api_settings.model_copy(update={"max_participants": 6})
    async with running(settings) as api:
        names = [f"a{i}" for i in range(1, 10)]
        await api.add_agents(T, *names)
        h = api.auth(T, "a1")
        r = await api.http.post("/v1/conversations", json={"participant_ids": names[1:7]}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_participants", r.text
        assert r.json()["error"]["field"] == "participant_ids"
        conv = await api.start(T, "a1", "a2", "a3")
        r = await api.http.post(f"/v1/conversations/{conv['id']}/participants", json={"agent_ids": ["a4", "a5", "a6"]},
                                headers=h)
        assert r.status_code == 200 and len(r.json()["participants"]) == 6, r.text
        before = await mongo[mongo_db_name].messages.count_documents({"conversation_id": conv["id"]})
        r = await api.http.post(f"/v1/conversations/{conv['id']}/participants", json={"agent_ids": ["a7"]}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_participants", r.text
        assert r.json()["error"]["field"] == "agent_ids"
        doc = await mongo[mongo_db_name].conversations.find_one({"_id": conv["id"]})
        assert len(doc["participants"]) == 6  # nothing half-written: no member, no system message
        assert await mongo[mongo_db_name].messages.count_documents({"conversation_id": conv["id"]}) == before

        # A thread above a lowered cap still lets its members leave (the cap bounds growth only).
        async with running(api_settings.model_copy(update={"max_participants": 3})) as lowered:
            r = await lowered.http.delete(f"/v1/conversations/{conv['id']}/participants/me",
                                          headers=lowered.auth(T, "a6"))
            assert r.status_code == 204, r.text

        crowd = request_doc(T, "a1", [f"agent{i}" for i in range(2_000)], ticket="T-9")
        fine = request_doc(T, "a1", ["a2"], ticket="T-9", message="just one colleague")
        async with Producer(kafka_bootstrap, kafka_topics) as producer:
            crowd_at = await producer.send(crowd, token=service_token(jwt_secret, T))
            await producer.send(fine, token=service_token(jwt_secret, T))
        _, items = await thread_with(api, T, "a2", 1, ticket="T-9")
        assert [m["body"] for m in items] == ["just one colleague"]
        async def crowd_letter():
            letters = [e for _, e, _ in await read_events(kafka_bootstrap, DEAD_LETTERS, kafka_topics, 1, settle_s=0.5)]
            return next((d for d in letters if d.original_offset == crowd_at[1] and d.consumer == "im-api-assistance"
                         and d.original_partition == crowd_at[0]), None)

        letter = await eventually(crowd_letter, timeout=30, interval=0.5, message="no dead letter for the crowd")
        assert letter.reason == "too_many_participants" and "2001" in letter.detail, letter.detail


async def test_a_900_kb_poison_record_is_dead_lettered_and_the_request_behind_it_is_processed(
        api, kafka_bootstrap, kafka_topics, jwt_secret):
    # Its whole value in base64 would make a dead letter above Kafka's 1 MiB record limit: that
    # produce failed, counted as transient, and the partition was re-read forever, for every tenant.
    await api.add_agents(T, "alice", "bob")
    good = service_token(jwt_secret, T)
    poison = b"\x00not json" + bytes(range(256)) * (900 * 1024 // 256)
    async with Producer(kafka_bootstrap, kafka_topics) as producer:
        _, poison_at = await producer.send(poison, token=good)
        await producer.send(request_doc(T, "alice", ["bob"], message="behind the poison"), token=good)

    _, items = await thread_with(api, T, "bob", 1)
    assert [m["body"] for m in items] == ["behind the poison"]
    [letter] = [e for _, e, _ in await read_events(kafka_bootstrap, DEAD_LETTERS, kafka_topics, 1, settle_s=0.5)]
    assert (letter.reason, letter.original_offset, letter.tenant_id) == ("malformed_json", poison_at, T)
    assert letter.original_value_size == len(poison) and letter.original_value_truncated
    assert letter.original_value_sha256 == hashlib.sha256(poison).hexdigest()
    assert base64.b64decode(letter.original_value_b64) == poison[: DeadLetter.KEPT_VALUE_BYTES]
