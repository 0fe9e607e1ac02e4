"""Presence fixtures: gateways, output readers and presence processes (in-process or real), on real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaProducer
from im_contracts.topics import DEAD_LETTERS, PRESENCE
from im_presence.app import PresenceProcess
from im_presence.settings import PresenceSettings
from imctl.servers import free_port
from support.topics import TopicTail
from presence_kit import (
    GATEWAY_TIMEOUT_S,
    GRACE_S,
    SWEEP_INTERVAL_S,
    GatewayDouble,
    PresenceReader,
    short_timings,
    start_in_process,
)


@pytest.fixture
async def producer(endpoints) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, acks="all",
                         enable_idempotence=endpoints.kafka_idempotence, linger_ms=1)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def gateways(producer, kafka_topics) -> AsyncIterator[Callable[..., GatewayDouble]]:
    made: list[GatewayDouble] = []

    def make(gateway_id: str | None = None, beating: bool = True) -> GatewayDouble:
        gw = GatewayDouble(producer, kafka_topics, gateway_id or f"gw-{uuid.uuid4().hex[:8]}")
        if beating:
            gw.start_beating()
        made.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in made:
            await gw.stop_beating()


@pytest.fixture
async def presence_out(kafka_bootstrap, kafka_topics) -> AsyncIterator[PresenceReader]:
    reader = await PresenceReader(kafka_bootstrap, kafka_topics, PRESENCE).start()
    try:
        yield reader
    finally:
        await reader.stop()


@pytest.fixture
async def dead_letters(kafka_bootstrap, kafka_topics) -> AsyncIterator[TopicTail]:
    reader = await TopicTail(kafka_bootstrap, kafka_topics, DEAD_LETTERS).start()
    try:
        yield reader
    finally:
        await reader.stop()


@pytest.fixture
def presence_settings(service_env, kafka_topics) -> Callable[..., PresenceSettings]:
    def make(**overrides) -> PresenceSettings:
        env = {**service_env, **short_timings()}
        values = {
            "kafka_bootstrap": env["IM_KAFKA_BOOTSTRAP"],
            "kafka_idempotence": env["IM_KAFKA_IDEMPOTENCE"] == "true",
            "topic_prefix": kafka_topics,
            "mongo_uri": env["IM_MONGO_URI"],
            "mongo_db": env["IM_MONGO_DB"],
            "offline_grace_s": GRACE_S,
            "gateway_timeout_s": GATEWAY_TIMEOUT_S,
            "sweep_interval_s": SWEEP_INTERVAL_S,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.5,
            "connect_timeout_s": 10.0,
        }
        values.update(overrides)
        return PresenceSettings(**values)

    return make


@pytest.fixture
async def presence(presence_settings, mongo) -> AsyncIterator[PresenceProcess]:
    """One presence process, in-process, owning every partition."""
    process = await start_in_process(presence_settings())
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
def start_presence(services, service_env) -> Callable:
    """Starts `python -m im_presence` as a real process; returns it (call `await p.wait_ready()`)."""
    count = 0

    def start(**env):
        nonlocal count
        count += 1
        port = free_port()
        full_env = {**service_env, **short_timings(), "IM_PRESENCE_PORT": str(port), **env}
        return services.start(f"presence-{count}", ["-m", "im_presence"], full_env,
                              ready_url=f"http://127.0.0.1:{port}/readyz")

    return start
