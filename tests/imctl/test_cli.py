"""imctl against the real broker: tokens, topics, assistance requests and dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import jwt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from im_contracts.codec import RejectedRecord, decode_record, header
from im_contracts.events import AssistanceRequested
from im_contracts.topics import ALL_TOPICS, ASSISTANCE_REQUESTS, DEAD_LETTERS
from im_runtime.kafka import DeadLetters
from im_runtime.settings import CommonSettings

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
    consumer = AIOKafkaConsumer(ASSISTANCE_REQUESTS.name(kafka_topics), bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    event = decode_record(ASSISTANCE_REQUESTS, record.value)
    assert isinstance(event, AssistanceRequested)
    assert event.request_id == sent["request_id"] and event.agent_ids == ["bob", "carol"]
    assert (event.related.type, event.related.id, event.related.title) == ("ticket", "123", "Printer")
    assert record.key == b"acme:ticket:123"
    claims = jwt.decode(header(record.headers, "authorization").removeprefix("Bearer "), jwt_secret,
                        algorithms=["HS256"])
    assert claims["role"] == "service" and claims["tid"] == "acme"


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
