"""Create and describe the contract's topics (partitions and compaction come from `contracts`)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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
    body_retention_ms: int | None = None,
) -> list[str]:
    """Create every topic that is missing; existing ones keep their partitions, but the topics
    that carry message bodies get the deployment's retention (`IM_BODY_TOPICS_RETENTION_HOURS`
    unless `body_retention_ms` says otherwise), so shortening it reaches a running deployment.
    Idempotent."""
    if body_retention_ms is None:
        body_retention_ms = CommonSettings().body_topics_retention_hours * 3600 * 1000
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        created = []
        for topic in topics:
            name = topic.name(prefix)
            if name in existing:
                if topic.carries_bodies:
                    changed = await _align_retention(admin, name, topic.topic_config(body_retention_ms))
                    if changed and progress:
                        progress(f"{name}: retention.ms {changed[0]} -> {changed[1]}")
                continue
            new = NewTopic(
                name=name,
                num_partitions=partitions or topic.partitions,
                replication_factor=1 if partitions else _replication(len((await admin.describe_cluster())["brokers"])),
                topic_configs=topic.topic_config(body_retention_ms),
            )
            try:
                await admin.create_topics([new])
            except TopicAlreadyExistsError:
                continue
            created.append(name)
            if progress:
                progress(f"created {name} ({new.num_partitions} partitions {new.topic_configs or ''})")
        return created
    finally:
        await admin.close()


async def topic_configs(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    """A topic's current configuration on the broker (name -> value)."""
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    [resource] = response.resources
    return {entry[0]: entry[1] for entry in resource[4]}


async def _align_retention(admin: AIOKafkaAdminClient, name: str, wanted: dict[str, str]) -> tuple[str, str] | None:
    """Sets an existing topic's retention to `wanted`'s; (before, after) when it changed. The
    whole wanted config is sent: AlterConfigs replaces a topic's overrides rather than merging."""
    before = (await topic_configs(admin, name)).get("retention.ms")
    if before == wanted["retention.ms"]:
        return None
    await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=wanted)])
    return before or "", wanted["retention.ms"]


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
                    "config": topic.topic_config(CommonSettings().body_topics_retention_hours * 3600 * 1000),
                }
            )
        return rows
    finally:
        await admin.close()
