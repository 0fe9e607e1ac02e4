"""The one reader of a topic without a consumer group (im_runtime.reader), on the real broker: a
table read from the beginning says when it has caught up, a reader from the end sees only what
comes after it started, a partition subset is honoured, and a tombstone and a refused record pass
through their own paths. (A restart and its announcement: the signal reader's test in
tests/delivery/test_worker_parts.py.)"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from im_contracts.codec import RejectedRecord
from im_contracts.events import AgentPresence, Event, GatewayHeartbeat
from im_contracts.topics import GATEWAYS, PRESENCE, agent_key
from im_runtime.process import Process
from im_runtime.reader import TopicReader
from im_runtime.settings import CommonSettings
from support.wait import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap, kafka_topics) -> CommonSettings:
    return CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=kafka_topics, retry_initial_s=0.05,
                          retry_max_s=0.2)


@pytest.fixture
async def producer(kafka_bootstrap) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def presence(agent: str, status: str = "online") -> AgentPresence:
    return AgentPresence(tenant_id="acme", agent_id=agent, status=status, connections=1)


async def test_a_table_read_from_the_beginning_catches_up_and_keeps_reading(settings, producer, kafka_topics):
    name = PRESENCE.name(kafka_topics)
    seen: list[tuple[str | None, bytes]] = []
    refused: list[str] = []

    def on_event(event: Event | None, record) -> None:
        seen.append((None if event is None else event.agent_id, record.key))

    async def on_rejected(record, rejected: RejectedRecord) -> None:
        refused.append(rejected.reason)

    process = Process("test", settings, logging.getLogger("test.reader"), grace_s=5.0)
    try:
        for agent in ("ana", "ben", "cy"):
            await producer.send_and_wait(name, presence(agent).to_bytes(), key=agent_key("acme", agent))
        await producer.send_and_wait(name, None, key=agent_key("acme", "ben"))  # ben forgotten
        await producer.send_and_wait(name, b"{not json", key=agent_key("acme", "dee"))
        reader = TopicReader(settings, PRESENCE, on_event, start_at="beginning", on_rejected=on_rejected,
                             poll_timeout_ms=100)
        assert not reader.caught_up
        process.supervise("reader", reader.run)
        await eventually(lambda: reader.caught_up, timeout=20, message="never caught up with the table")
        assert reader.ready and await reader.reading()
        assert sorted(a for a, _ in seen if a) == ["ana", "ben", "cy"]
        assert (None, agent_key("acme", "ben")) in seen, "a tombstone reaches the reader as None"
        assert refused == ["malformed_json"]

        await producer.send_and_wait(name, presence("eve", "away").to_bytes(), key=agent_key("acme", "eve"))
        await eventually(lambda: ("eve", agent_key("acme", "eve")) in seen, timeout=20,
                         message="a record after the catch-up never arrived")
    finally:
        await process.stop()
    assert not reader.ready


async def test_a_reader_from_the_end_sees_only_later_records_of_its_own_partitions(settings, producer,
                                                                                   kafka_topics):
    name = PRESENCE.name(kafka_topics)
    seen: list[tuple[int, str]] = []  # (a compacted topic: every record needs a key)
    process = Process("test", settings, logging.getLogger("test.reader"), grace_s=5.0)
    reader = TopicReader(settings, PRESENCE, lambda event, record: seen.append((record.partition, event.agent_id)),
                         start_at="end", partitions=lambda count: [count - 1], poll_timeout_ms=100)
    try:
        for partition in (0, 1, 2):
            await producer.send_and_wait(name, presence("before").to_bytes(), key=b"k", partition=partition)
        await reader.open()
        process.supervise("reader", reader.run)
        for partition in (0, 1, 2):
            await producer.send_and_wait(name, presence(f"after-{partition}").to_bytes(), key=b"k",
                                         partition=partition)
        # A marker behind the others on partition 2: once it is read, nothing else is on its way.
        await producer.send_and_wait(name, presence("marker").to_bytes(), key=b"k", partition=2)
        await eventually(lambda: (2, "marker") in seen, timeout=20, message="the later records never arrived")
        assert seen == [(2, "after-2"), (2, "marker")], "only partition 2 (of 3), and nothing from before"
    finally:
        await process.stop()
        await reader.close()


async def test_a_null_record_on_a_topic_that_is_not_compacted_is_refused_not_handed_on(settings, producer,
                                                                                      kafka_topics):
    name = GATEWAYS.name(kafka_topics)
    beats: list[str] = []
    refused: list[str] = []

    async def on_rejected(record, rejected: RejectedRecord) -> None:
        refused.append(rejected.reason)

    process = Process("test", settings, logging.getLogger("test.reader"), grace_s=5.0)
    reader = TopicReader(settings, GATEWAYS, lambda event, record: beats.append(event.gateway_id),
                         start_at="end", on_rejected=on_rejected, poll_timeout_ms=100)
    try:
        await reader.open()
        process.supervise("reader", reader.run)
        await producer.send_and_wait(name, None, key=b"gw-1", partition=0)
        beat = GatewayHeartbeat(gateway_id="gw-1", epoch="e1", connection_count=0)
        await producer.send_and_wait(name, beat.to_bytes(), key=b"gw-1", partition=0)
        await eventually(lambda: beats, timeout=20, message="the beat after the null record never arrived")
        assert refused == ["malformed_json"] and beats == ["gw-1"]
    finally:
        await process.stop()
        await reader.close()
