"""Fixtures for e2e tests: the stack as real processes, and a Tansu broker for the smoke run."""

from __future__ import annotations

import pytest
from imctl import servers as local
from support.stack import Stack, start_stack


@pytest.fixture(scope="session")
def tansu(workdir):
    """A Tansu broker for the smoke run of the walking path on the no-Java fallback."""
    broker = local.TansuKafka(name="tansu", log_path=workdir / "tansu.log", port=local.free_port()).start()
    yield broker
    broker.stop()


@pytest.fixture
async def stack(services, service_env, kafka_topics, jwt_secret) -> Stack:
    return await start_stack(services, service_env, jwt_secret)
