"""Real Kafka and MongoDB for every test (see tests/servers.py), and per-test unique names."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from imctl.topics import create_topics
from pymongo import AsyncMongoClient

from servers import Endpoints, session_workdir, start_endpoints, unique_name
from support.processes import ServiceProcess, ServiceRunner
from support.tasks import no_task_ignores_cancellation  # noqa: F401
# The watchdog's hooks: a hung test ends the run with a diagnosis instead of stalling CI.
from support.watchdog import (  # noqa: F401
    on_abort,
    pytest_configure,
    pytest_runtest_logreport,
    pytest_runtest_protocol,
)

# Tests shorten every interval through settings; this secret exists only inside the test run.
TEST_JWT_SECRET = "test-secret-" + secrets.token_hex(16)


@pytest.fixture(scope="session")
def workdir() -> Path:
    return session_workdir()


@pytest.fixture(scope="session")
def endpoints(workdir: Path, pytestconfig: pytest.Config) -> Iterator[Endpoints]:
    ep = start_endpoints(workdir)
    forget = on_abort(ep.stop)
    line = (
        f"[servers] Kafka: {ep.kafka_kind} at {ep.kafka_bootstrap} "
        f"(idempotent producer {'on' if ep.kafka_idempotence else 'off'}); "
        f"MongoDB: {ep.mongo_kind} at {ep.mongo_uri}"
    )
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown whatever the capture mode
        print(f"\n{line}", file=sys.stderr, flush=True)
    if os.environ.get("IM_TEST_REQUIRE_KAFKA") and ep.kafka_kind != os.environ["IM_TEST_REQUIRE_KAFKA"]:
        ep.stop()
        pytest.exit(f"CI requires Kafka kind {os.environ['IM_TEST_REQUIRE_KAFKA']}, got {ep.kafka_kind}", 3)
    try:
        yield ep
    finally:
        forget()
        ep.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(endpoints: Endpoints) -> str:
    return endpoints.kafka_bootstrap


@pytest.fixture(scope="session")
def mongo_uri(endpoints: Endpoints) -> str:
    return endpoints.mongo_uri


@pytest.fixture
def topic_prefix() -> str:
    """Every test its own topics: `t<random>.im.messages.v1` ..."""
    return unique_name("t") + "."


@pytest.fixture
def mongo_db_name() -> str:
    return unique_name("imtest_")


@pytest.fixture
async def kafka_topics(kafka_bootstrap: str, topic_prefix: str) -> str:
    """Creates every contract topic under this test's prefix (3 partitions each); the prefix."""
    await create_topics(kafka_bootstrap, topic_prefix, partitions=3)
    return topic_prefix


# A test's own MongoDB client never waits for ever on a reply (IM_MONGO_SOCKET_TIMEOUT_S is the
# services' equivalent): a wedged server fails the test by name instead of hanging the run. Above
# the server's transaction lifetime (60 s): a dropDatabase may wait for a killed process's open
# transaction to be aborted.
TEST_MONGO_SOCKET_TIMEOUT_MS = 120_000


@pytest.fixture
async def mongo(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[AsyncMongoClient]:
    """The test's database, dropped afterwards. Every service process of the test is stopped first
    (`services` depends on this fixture): SecantusDB wedged on a dropDatabase that raced live
    transactions of services still running (CI: every later command of every client hung)."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True,
                                                socketTimeoutMS=TEST_MONGO_SOCKET_TIMEOUT_MS)
    try:
        yield client
    finally:
        try:
            await client.drop_database(mongo_db_name)
        finally:
            await client.close()


@pytest.fixture
def jwt_secret() -> str:
    return TEST_JWT_SECRET


# The rate limits are tested on their own (tests/im_api/test_rate_limits.py, the gateway's
# frame limits in tests/delivery); elsewhere they would only throttle the load the tests make.
UNLIMITED_RATES = {f"IM_API_{what}_RATE_PER_{who}": "0" for what in ("SEND", "TICKET") for who in ("AGENT", "TENANT")}


@pytest.fixture
def service_env(endpoints: Endpoints, topic_prefix: str, mongo_db_name: str) -> dict[str, str]:
    """The environment every service process of this test gets (the same names as production)."""
    return {
        "IM_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "IM_KAFKA_IDEMPOTENCE": "true" if endpoints.kafka_idempotence else "false",
        "IM_MONGO_URI": endpoints.mongo_uri,
        "IM_MONGO_DB": mongo_db_name,
        "IM_TOPIC_PREFIX": topic_prefix,
        "IM_JWT_SECRET": TEST_JWT_SECRET,
        "IM_LOG_LEVEL": "INFO",
        **UNLIMITED_RATES,
    }


@pytest.fixture
async def services(workdir: Path, mongo: AsyncMongoClient) -> AsyncIterator[ServiceRunner]:
    """Starts service processes the way `make run` does; stops every one at the end, before the
    test's database is dropped (hence `mongo` here: fixtures are torn down in reverse)."""
    runner = ServiceRunner(workdir / "services")
    forget = on_abort(runner.stop_all)
    try:
        yield runner
    finally:
        forget()
        await asyncio.to_thread(runner.stop_all)


__all__ = ["ServiceProcess"]


@pytest.fixture
def private_kafka(endpoints: Endpoints, workdir: Path) -> Iterator:
    """A Kafka broker of this test's own, which the test may stop and start again (data kept).

    Same kind as the session's local broker (Apache when Java is present). `.stop()`, `.start()`,
    `.kill()`, `.bootstrap`, `.idempotence`.
    """
    from imctl import servers as local

    kind = "tansu" if endpoints.kafka_kind == "tansu" or not local.have_java() else "apache"
    broker = local.start_kafka(kind, workdir / unique_name("kafka-"))
    forget = on_abort(broker.stop)
    try:
        yield broker
    finally:
        forget()
        broker.stop()


@pytest.fixture
def private_mongo(workdir: Path) -> Iterator:
    """A SecantusDB of this test's own, which the test may stop and start again (data kept)."""
    from imctl import servers as local

    path = workdir / unique_name("mongo-")
    server = local.SecantusMongo(name="secantusdb-private", log_path=path / "mongo.log",
                                 data_dir=path / "data", port=local.free_port()).start()
    forget = on_abort(server.stop)
    try:
        yield server
    finally:
        forget()
        server.stop()


@pytest.fixture
async def own_mongo(private_mongo) -> AsyncIterator[tuple]:
    """(server, client) of this test's own MongoDB, for tests that SIGKILL a process in the middle
    of a transaction: SecantusDB has wedged around such an abandoned transaction, and it
    must never be the session's server, which every later test needs."""
    client: AsyncMongoClient = AsyncMongoClient(private_mongo.uri, tz_aware=True,
                                                socketTimeoutMS=TEST_MONGO_SOCKET_TIMEOUT_MS)
    try:
        yield private_mongo, client
    finally:
        await client.close()
