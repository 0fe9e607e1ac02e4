"""imctl against the real broker: tokens, topics, assistance requests and dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import jwt
import pytest
from aiokafka import AIOKafkaProducer
from im_contracts.codec import RejectedRecord, header
from im_contracts.events import AssistanceRequested
from im_contracts.topics import ALL_TOPICS, ASSISTANCE_REQUESTS
from im_runtime.kafka import DeadLetters
from im_runtime.settings import CommonSettings
from support.topics import read_topic

pytestmark = pytest.mark.integration


def imctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imctl", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_token_mints_the_contract_claims(jwt_secret):
    out = imctl("token", "--tenant", "acme", "--agent", "alice", "--role", "admin",
                env={"IM_JWT_SECRET": jwt_secret})
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), jwt_secret, algorithms=["HS256"])
    assert (claims["tid"], claims["sub"], claims["role"]) == ("acme", "alice", "admin")
    assert claims["exp"] > claims["iat"]


def test_token_refuses_to_run_without_a_secret():
    env = {k: v for k, v in os.environ.items() if k != "IM_JWT_SECRET"}
    out = subprocess.run([sys.executable, "-m", "imctl", "token", "--tenant", "t", "--agent", "a"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "IM_JWT_SECRET" in out.stderr


def test_topics_create_then_describe_shows_every_contract_topic(kafka_bootstrap, topic_prefix):
    created = imctl("topics", "create", "--bootstrap", kafka_bootstrap, "--prefix", topic_prefix,
                    "--partitions", "2")
    assert created.returncode == 0, created.stderr
    assert f"{len(ALL_TOPICS)} topics created" in created.stderr
    again = imctl("topics", "create", "--bootstrap", kafka_bootstrap, "--prefix", topic_prefix)
    assert "0 topics created" in again.stderr, "idempotent"
    described = imctl("topics", "describe", "--bootstrap", kafka_bootstrap, "--prefix", topic_prefix)
    assert described.returncode == 0, described.stdout
    for topic in ALL_TOPICS:
        assert f"{topic.name(topic_prefix)}" in described.stdout
    assert "MISSING" not in described.stdout and "compact" in described.stdout


async def test_assist_publishes_a_valid_request_with_a_service_token(kafka_bootstrap, kafka_topics, jwt_secret):
    out = await asyncio.to_thread(
        imctl, "assist", "--bootstrap", kafka_bootstrap, "--prefix", kafka_topics, "--tenant", "acme",
        "--from", "alice", "--to", "bob, carol", "--ticket", "123", "--title", "Printer", "Need a hand",
        env={"IM_JWT_SECRET": jwt_secret},
    )
    assert out.returncode == 0, out.stderr
    sent = json.loads(out.stdout)
    reads = await read_topic(ASSISTANCE_REQUESTS, kafka_topics, bootstrap=kafka_bootstrap, count=1, timeout=20)
    record, event = reads[0].record, reads[0].event
    assert isinstance(event, AssistanceRequested)
    assert event.request_id == sent["request_id"] and event.agent_ids == ["bob", "carol"]
    assert (event.related.type, event.related.id, event.related.title) == ("ticket", "123", "Printer")
    assert record.key == b"acme:ticket:123"
    claims = jwt.decode(header(record.headers, "authorization").removeprefix("Bearer "), jwt_secret,
                        algorithms=["HS256"], audience="im-kafka")
    assert claims["role"] == "service" and claims["tid"] == "acme" and claims["aud"] == "im-kafka"


async def test_assist_asks_teams_and_refuses_a_request_that_asks_nobody(kafka_bootstrap, kafka_topics, jwt_secret):
    base = ["assist", "--bootstrap", kafka_bootstrap, "--prefix", kafka_topics, "--tenant", "acme", "--from", "alice",
            "--ticket", "9"]
    nobody = await asyncio.to_thread(imctl, *base, "Anyone?", env={"IM_JWT_SECRET": jwt_secret})
    assert nobody.returncode == 2 and "--team" in nobody.stderr
    out = await asyncio.to_thread(imctl, *base, "--team", "t1, t2", "Anyone?", env={"IM_JWT_SECRET": jwt_secret})
    assert out.returncode == 0, out.stderr
    reads = await read_topic(ASSISTANCE_REQUESTS, kafka_topics, bootstrap=kafka_bootstrap, count=1, timeout=20)
    event = reads[0].event
    assert isinstance(event, AssistanceRequested)
    assert (event.agent_ids, event.team_ids, event.message) == ([], ["t1", "t2"], "Anyone?")


async def test_dead_letters_lists_each_rejected_record_with_its_reason(kafka_bootstrap, kafka_topics, endpoints):
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=kafka_topics,
                              kafka_idempotence=endpoints.kafka_idempotence)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        letters = DeadLetters(producer, settings, "im-api.assistance")
        from aiokafka import ConsumerRecord

        for offset, (tenant, reason) in enumerate([("acme", "unauthorized"), ("globex", "malformed_json")]):
            record = ConsumerRecord(ASSISTANCE_REQUESTS.name(kafka_topics), 0, offset, 0, 0, b"k", b"{x",
                                    None, 2, 2, [("authorization", b"Bearer s3cret")])
            await letters.publish(record, RejectedRecord(reason, "why", tenant))
    finally:
        await producer.stop()
    out = await asyncio.to_thread(imctl, "dead-letters", "--bootstrap", kafka_bootstrap, "--prefix", kafka_topics)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "2 dead letters" in out.stderr
    assert "unauthorized" in lines[0] and "tenant=acme" in lines[0] and "@0" in lines[0]
    assert "malformed_json" in lines[1] and "s3cret" not in out.stdout
    only = await asyncio.to_thread(imctl, "dead-letters", "--bootstrap", kafka_bootstrap, "--prefix",
                                   kafka_topics, "--tenant", "globex", "--json")
    docs = [json.loads(line) for line in only.stdout.strip().splitlines()]
    assert [d["reason"] for d in docs] == ["malformed_json"]


def admin_env(jwt_secret: str, mongo_uri: str, db: str, **extra: str) -> dict[str, str]:
    return {"IM_JWT_SECRET": jwt_secret, "IM_MONGO_URI": mongo_uri, "IM_MONGO_DB": db, **extra}


def mint(secret: str, tenant: str, sub: str, role: str) -> str:
    from imctl.tokens import mint as mint_token

    return mint_token(secret, tenant, sub, role, 600)


async def test_migrate_creates_every_services_indexes_step_by_step_and_twice_is_harmless(mongo_uri, mongo_db_name,
                                                                                          mongo):
    for _ in range(2):
        out = await asyncio.to_thread(imctl, "migrate", "--mongo-uri", mongo_uri, "--db", mongo_db_name)
        assert out.returncode == 0, out.stderr
        assert all(f"[{i}/10]" in out.stderr for i in range(1, 11)) and "indexes in place: 10 steps" in out.stderr
    db = mongo[mongo_db_name]
    assert "history" in await db["messages"].index_information()
    assert "by_age" in await db["messages"].index_information()
    assert "pending" in await db["outbox"].index_information()
    assert "tenant_agent" in await db["presence_agents"].index_information()
    assert "by_tenant_time" in await db["operator_audit"].index_information()
    assert "agent" in await db["notification_prefs"].index_information()
    assert "due" in await db["notifier_agents"].index_information()
    assert "team_name" in await db["teams"].index_information()
    assert "by_tenant" in await db["audit_log"].index_information()
    assert "versions" in await db["message_versions"].index_information()
    names = set(await db.list_collection_names())
    assert {"agents", "conversations", "messages", "outbox", "presence_agents", "operator_audit"} <= names
    # Delivery's collections too (the worker's projections and the gateway's queue store).
    assert len(names) >= 12, names


async def test_tail_shows_one_tenants_messages_only_to_its_admin_and_leaves_an_audit_record(
        kafka_bootstrap, kafka_topics, jwt_secret, mongo_uri, mongo_db_name, mongo):
    from datetime import UTC, datetime

    from im_contracts.events import MessagePosted
    from im_contracts.models import Message
    from im_contracts.topics import MESSAGES, conversation_key

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for seq, (tenant, body) in enumerate([("acme", "printer on fire"), ("globex", "globex secret"),
                                              ("acme", "fixed it")], 1):
            event = MessagePosted(tenant_id=tenant, recipients=["alice", "bob"], message=Message(
                id=f"m{seq}", conversation_id=f"c-{tenant}", seq=seq, sender_id="alice", body=body, kind="text",
                client_msg_id=None, created_at=datetime.now(UTC)))
            await producer.send_and_wait(MESSAGES.name(kafka_topics), event.to_bytes(),
                                         key=conversation_key(f"c-{tenant}"))
    finally:
        await producer.stop()
    base = ["tail", "--bootstrap", kafka_bootstrap, "--prefix", kafka_topics, "--tenant", "acme",
            "--from-beginning", "--no-follow"]
    env = admin_env(jwt_secret, mongo_uri, mongo_db_name)
    audit = mongo[mongo_db_name]["operator_audit"]

    no_token = await asyncio.to_thread(imctl, *base, env={**env, "IM_ADMIN_TOKEN": ""})
    assert no_token.returncode == 2 and "admin token" in no_token.stderr and not no_token.stdout
    for wrong in (mint(jwt_secret, "acme", "alice", "agent"), mint(jwt_secret, "globex", "root", "admin"),
                  mint("another-secret-of-32-characters!", "acme", "root", "admin")):
        out = await asyncio.to_thread(imctl, *base, env={**env, "IM_ADMIN_TOKEN": wrong})
        assert out.returncode == 3 and out.stderr.startswith("refused") and not out.stdout, out.stderr
    assert await audit.count_documents({}) == 0  # refused: nothing shown, nothing recorded

    out = await asyncio.to_thread(imctl, *base, env={**env, "IM_ADMIN_TOKEN": mint(jwt_secret, "acme", "root", "admin")})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "c-acme #1 alice: printer on fire" in lines[0] and "#3 alice: fixed it" in lines[1]
    assert "globex" not in out.stdout and "2 messages" in out.stderr
    records = await audit.find({}).to_list()
    assert len(records) == 1
    assert records[0]["tenant_id"] == "acme" and records[0]["actor"] == "root" and records[0]["action"] == "tail"
    assert f"record {records[0]['_id']}" in out.stderr


async def test_dead_letter_bodies_are_shown_only_to_the_tenants_admin_audited(
        kafka_bootstrap, kafka_topics, endpoints, jwt_secret, mongo_uri, mongo_db_name, mongo):
    from aiokafka import ConsumerRecord

    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=kafka_topics,
                              kafka_idempotence=endpoints.kafka_idempotence)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        record = ConsumerRecord(ASSISTANCE_REQUESTS.name(kafka_topics), 0, 7, 0, 0, b"k", b'{"body": "private"',
                                None, 2, 2, [])
        await DeadLetters(producer, settings, "im-api.assistance").publish(
            record, RejectedRecord("malformed_json", "why", "acme"))
    finally:
        await producer.stop()
    base = ["dead-letters", "--bootstrap", kafka_bootstrap, "--prefix", kafka_topics]
    env = admin_env(jwt_secret, mongo_uri, mongo_db_name)
    plain = await asyncio.to_thread(imctl, *base, "--json", env=env)
    assert plain.returncode == 0 and "private" not in plain.stdout
    assert json.loads(plain.stdout)["original_value_b64"] == ""
    refused = await asyncio.to_thread(imctl, *base, "--bodies", "--tenant", "acme",
                                      env={**env, "IM_ADMIN_TOKEN": mint(jwt_secret, "acme", "bob", "agent")})
    assert refused.returncode == 3 and "private" not in refused.stdout
    shown = await asyncio.to_thread(imctl, *base, "--bodies", "--tenant", "acme",
                                    env={**env, "IM_ADMIN_TOKEN": mint(jwt_secret, "acme", "root", "admin")})
    assert shown.returncode == 0, shown.stderr
    assert "private" in shown.stdout and "malformed_json" in shown.stdout
    assert await mongo[mongo_db_name]["operator_audit"].count_documents(
        {"tenant_id": "acme", "action": "dead-letters --bodies"}) == 1


async def test_audit_lists_one_tenants_records_from_im_api_and_imctl_newest_first(jwt_secret, mongo_uri,
                                                                                   mongo_db_name, mongo):
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    await mongo[mongo_db_name]["audit_log"].insert_many([  # as im-api writes them
        {"tenant_id": "acme", "at": t0, "actor": "alice", "role": "agent", "action": "message.edit",
         "target": {"type": "message", "conversation_id": "c1", "seq": 2}, "request_id": "r1", "details": {}},
        {"tenant_id": "acme", "at": t0 + timedelta(minutes=1), "actor": "root", "role": "admin",
         "action": "message.delete", "target": {"type": "message", "conversation_id": "c1", "seq": 3},
         "request_id": "r2", "details": {}},
        {"tenant_id": "globex", "at": t0, "actor": "olga", "role": "admin", "action": "message.delete",
         "target": {"type": "message", "conversation_id": "g1", "seq": 1}, "request_id": "r3", "details": {}},
    ])
    env = admin_env(jwt_secret, mongo_uri, mongo_db_name)
    base = ["audit", "--tenant", "acme"]
    out = await asyncio.to_thread(imctl, *base, env={**env, "IM_ADMIN_TOKEN": mint(jwt_secret, "acme", "bob", "agent")})
    assert out.returncode == 3 and not out.stdout
    out = await asyncio.to_thread(imctl, *base, env={**env, "IM_ADMIN_TOKEN": mint(jwt_secret, "acme", "root", "admin")})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    # Its own listing first (imctl records it), then im-api's two, newest first; nothing of globex.
    assert [line.split()[3:5] for line in lines] == [["(admin)", "audit"], ["(admin)", "message.delete"],
                                                    ["(agent)", "message.edit"]]
    assert "seq=3" in lines[1] and "request=r2" in lines[1] and "olga" not in out.stdout
    out = await asyncio.to_thread(imctl, *base, "--action", "message.edit", "--json",
                                  env={**env, "IM_ADMIN_TOKEN": mint(jwt_secret, "acme", "root", "admin")})
    records = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [(r["source"], r["actor"], r["target"]["seq"]) for r in records] == [("im-api", "alice", 2)]
