"""The one consumer policy every service uses, against the real broker and MongoDB.

Bad records go to im.dead-letters.v1 with their reason and the consumer moves on; a transient
failure pauses only its partition, retries with backoff, and loses nothing.
"""

import base64
import json
import time

import pytest
from faststream.kafka import KafkaBroker
from im_contracts.events import Typing
from im_contracts.topics import DEAD_LETTERS, TYPING, conversation_key
from im_runtime.kafka import DeadLetters, Subscription, TransientError, make_producer
from im_runtime.settings import CommonSettings
from support.topics import read_events
from support.wait import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(service_env):
    env = {k: v for k, v in service_env.items()}
    return CommonSettings(
        kafka_bootstrap=env["IM_KAFKA_BOOTSTRAP"],
        kafka_idempotence=env["IM_KAFKA_IDEMPOTENCE"] == "true",
        topic_prefix=env["IM_TOPIC_PREFIX"],
        mongo_uri=env["IM_MONGO_URI"],
        mongo_db=env["IM_MONGO_DB"],
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )


async def test_bad_records_are_dead_lettered_and_transient_failures_retry_without_loss(
    settings, kafka_topics
):
    producer = make_producer(settings)
    await producer.start()
    seen: list[str] = []
    failures = {"left": 3}

    async def handle(event: Typing, record) -> None:
        if event.agent_id == "flaky" and failures["left"] > 0:
            failures["left"] -= 1
            raise TransientError("mongo is down")
        if event.agent_id == "bug":
            raise ValueError("a bug")
        seen.append(event.agent_id)

    broker = KafkaBroker(settings.kafka_bootstrap)
    sub = Subscription(
        name="test", topics=[TYPING], group_id=f"{settings.topic_prefix}g", handle=handle,
        dead_letters=DeadLetters(producer, settings, "test-consumer"), settings=settings,
    )
    sub.register(broker)
    await broker.start()
    topic = TYPING.name(settings.topic_prefix)
    try:
        key = conversation_key("c1")  # one partition: order is observable
        for agent in ("a1", "flaky", "a2"):
            await producer.send_and_wait(topic, Typing(tenant_id="t", conversation_id="c1", agent_id=agent).to_bytes(), key=key)
        await producer.send_and_wait(topic, b"{not json", key=key)
        await producer.send_and_wait(topic, json.dumps({"type": "Typing", "tenant_id": "t", "schema_version": 9}).encode(), key=key)
        await producer.send_and_wait(topic, Typing(tenant_id="t", conversation_id="c1", agent_id="bug").to_bytes(), key=key)
        await producer.send_and_wait(topic, Typing(tenant_id="t", conversation_id="c1", agent_id="a3").to_bytes(), key=key)

        await eventually(lambda: len(seen) >= 4, timeout=30, message=lambda: f"seen {seen}")
        assert seen == ["a1", "flaky", "a2", "a3"], "in order, the flaky one retried, nothing lost"
        assert failures["left"] == 0
        letters = await read_events(DEAD_LETTERS, settings.topic_prefix, bootstrap=settings.kafka_bootstrap,
                                    count=3, timeout=20)
        assert [d.reason for d in letters] == ["malformed_json", "unsupported_schema_version", "processing_failed"]
        assert base64.b64decode(letters[0].original_value_b64) == b"{not json"
        assert letters[0].original_topic == topic and letters[0].consumer == "test-consumer"
        assert letters[1].tenant_id == "t"
    finally:
        await broker.stop()
        await producer.stop()


async def test_an_idle_subscription_waits_in_its_poll_instead_of_waking_every_few_milliseconds(
    settings, kafka_topics
):
    """Issue 19: FastStream's batch poll slept its timeout after every empty poll, so an idle
    consumer woke ~100 times a second (or, with a longer timeout, let a record wait out the
    sleep). The poll now waits in aiokafka's getmany, which returns as soon as a record arrives:
    an idle subscription polls about once per `kafka_poll_wait_ms`, and still gets what is sent."""
    settings = settings.model_copy(update={"kafka_poll_wait_ms": 400})
    producer = make_producer(settings)
    await producer.start()
    seen: list[str] = []

    async def handle(event: Typing, record) -> None:
        seen.append(event.agent_id)

    broker = KafkaBroker(settings.kafka_bootstrap)
    sub = Subscription(
        name="idle", topics=[TYPING], group_id=f"{settings.topic_prefix}idle", handle=handle,
        dead_letters=DeadLetters(producer, settings, "test-consumer"), settings=settings,
    )
    subscriber = sub.register(broker)
    polls: list[float] = []  # when each poll began
    poll = subscriber.get_msg

    async def counted(consumer):
        polls.append(time.monotonic())
        return await poll(consumer)

    subscriber.get_msg = counted
    await broker.start()
    try:
        await eventually(lambda: sub.membership.joined, timeout=30, message="the group assigned the topic")
        first = len(polls)
        # Four more polls with nothing sent: each must have waited out the poll wait in getmany,
        # so three intervals take at least three waits (a lower bound: a slow machine only adds).
        await eventually(lambda: len(polls) >= first + 4, timeout=30, message=lambda: f"{len(polls) - first} polls")
        gaps = [b - a for a, b in zip(polls[first:first + 4], polls[first + 1:first + 4])]
        assert all(gap >= 0.4 * 0.9 for gap in gaps), f"idle polls {gaps} s apart, not about 0.4 s"
        await producer.send_and_wait(TYPING.name(settings.topic_prefix),
                                     Typing(tenant_id="t", conversation_id="c9", agent_id="late").to_bytes(),
                                     key=conversation_key("c9"))
        await eventually(lambda: seen == ["late"], timeout=20, message=lambda: f"seen {seen}")
    finally:
        await broker.stop()
        await producer.stop()
