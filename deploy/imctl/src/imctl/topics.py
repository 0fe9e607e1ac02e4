"""Create and describe the contract's topics (partitions and compaction come from `contracts`)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from im_contracts.topics import ALL_TOPICS, Topic
from im_runtime.kafka import client_options
from im_runtime.settings import CommonSettings


def kafka_options(bootstrap: str) -> dict:
    """aiokafka options for `bootstrap` with the security settings of the environment
    (IM_KAFKA_SECURITY_PROTOCOL, IM_KAFKA_USERNAME, ...), as the services read them."""
    return client_options(CommonSettings(kafka_bootstrap=bootstrap))


async def create_topics(
    bootstrap: str,
    prefix: str = "",
    partitions: int | None = None,
    topics: tuple[Topic, ...] = ALL_TOPICS,
    progress=None,
) -> list[str]:
    """Create every topic that is missing; existing ones are left as they are. Idempotent."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        created = []
        for topic in topics:
            name = topic.name(prefix)
            if name in existing:
                continue
            new = NewTopic(
                name=name,
                num_partitions=partitions or topic.partitions,
                replication_factor=1 if partitions else _replication(len((await admin.describe_cluster())["brokers"])),
                topic_configs=topic.topic_config(),
            )
            try:
                await admin.create_topics([new])
            except TopicAlreadyExistsError:
                continue
            created.append(name)
            if progress:
                progress(f"created {name} ({new.num_partitions} partitions {topic.topic_config() or ''})")
        return created
    finally:
        await admin.close()


def _replication(brokers: int) -> int:
    return min(3, max(1, brokers))


async def describe_topics(bootstrap: str, prefix: str = "") -> list[dict]:
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [t.name(prefix) for t in ALL_TOPICS if t.name(prefix) in existing]
        described = await admin.describe_topics(names) if names else []
        by_name = {d["topic"]: d for d in described}
        rows = []
        for topic in ALL_TOPICS:
            d = by_name.get(topic.name(prefix))
            rows.append(
                {
                    "topic": topic.name(prefix),
                    "exists": d is not None,
                    "partitions": len(d["partitions"]) if d else 0,
                    "expected_partitions": topic.partitions,
                    "key": topic.key_rule,
                    "config": topic.topic_config(),
                }
            )
        return rows
    finally:
        await admin.close()
