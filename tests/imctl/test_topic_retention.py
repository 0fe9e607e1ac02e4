"""The topics that carry message bodies get the deployment's retention (a redaction cannot reach
Kafka's copies, so this bounds how long they live), at creation and, when the setting shortens,
on the topics that exist already; the others keep their own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from im_contracts.topics import ALL_TOPICS, MESSAGES, TYPING
from imctl.topics import kafka_options, topic_configs

pytestmark = pytest.mark.integration
HOUR_MS = 3600 * 1000


def create(bootstrap: str, prefix: str, hours: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imctl", "topics", "create", "--bootstrap", bootstrap,
                           "--prefix", prefix, "--partitions", "1"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "IM_BODY_TOPICS_RETENTION_HOURS": str(hours)})


async def retention(bootstrap: str, prefix: str) -> dict[str, str | None]:
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        return {t.base_name: (await topic_configs(admin, t.name(prefix))).get("retention.ms") for t in ALL_TOPICS}
    finally:
        await admin.close()


async def test_body_topics_take_the_setting_at_creation_and_when_it_changes(kafka_bootstrap, topic_prefix):
    out = create(kafka_bootstrap, topic_prefix, 5)
    assert out.returncode == 0, out.stderr
    first = await retention(kafka_bootstrap, topic_prefix)
    bodies = {t.base_name for t in ALL_TOPICS if t.carries_bodies}
    assert {"im.messages.v1", "im.conversations.v1", "im.inbox.v1", "im.dead-letters.v1",
            "helpdesk.assistance-requests.v1"} == bodies
    assert {name: first[name] for name in bodies} == {name: str(5 * HOUR_MS) for name in bodies}
    assert first[TYPING.base_name] == str(TYPING.retention_ms)  # its own, shorter, retention

    out = create(kafka_bootstrap, topic_prefix, 2)
    assert out.returncode == 0, out.stderr
    assert f"{MESSAGES.name(topic_prefix)}: retention.ms {5 * HOUR_MS} -> {2 * HOUR_MS}" in out.stdout + out.stderr
    second = await retention(kafka_bootstrap, topic_prefix)
    assert {name: second[name] for name in bodies} == {name: str(2 * HOUR_MS) for name in bodies}
    assert {k: v for k, v in second.items() if k not in bodies} == {k: v for k, v in first.items() if k not in bodies}

    out = create(kafka_bootstrap, topic_prefix, 2)  # nothing to change: nothing said
    assert out.returncode == 0 and "retention.ms" not in out.stdout + out.stderr
