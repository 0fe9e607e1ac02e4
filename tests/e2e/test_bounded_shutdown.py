"""SIGTERM stops every service within its grace period even when Kafka or MongoDB stopped
answering (a frozen broker, a hung database host): the process exits, and its log names the
steps it had to abandon. Before, a stop waited on the frozen server without end."""

from __future__ import annotations

import asyncio
import time

import pytest
from imctl.topics import create_topics
from support.stack import start_stack

pytestmark = pytest.mark.e2e

GRACE_S = 3.0
# What a stop may take beyond the grace: uvicorn's own shutdown and the interpreter's exit. Wide on
# purpose (a busy machine): what this test tells apart is "bounded" from "waits on the server",
# and a stop that waits on a frozen server takes the driver's 30 s request timeout or for ever.
EXIT_MARGIN_S = 12.0


@pytest.mark.timeout(400)
@pytest.mark.parametrize("frozen", ["kafka", "mongodb"])
async def test_every_service_stops_within_its_grace_while_a_server_is_frozen(
        frozen, private_kafka, private_mongo, services, service_env, topic_prefix, jwt_secret):
    await create_topics(private_kafka.bootstrap, topic_prefix, partitions=3)
    env = {**service_env, "IM_KAFKA_BOOTSTRAP": private_kafka.bootstrap, "IM_MONGO_URI": private_mongo.uri,
           "IM_API_SHUTDOWN_GRACE_S": str(GRACE_S), "IM_DELIVERY_SHUTDOWN_GRACE_S": str(GRACE_S),
           "IM_PRESENCE_SHUTDOWN_TIMEOUT_S": str(GRACE_S)}
    stack = await start_stack(services, env, jwt_secret)
    server = private_kafka if frozen == "kafka" else private_mongo
    server.pause()
    try:
        began = time.monotonic()
        for proc in stack.procs.values():
            proc.signal(15)  # SIGTERM to all at once, as a rollout or `compose down` does
        exits = await asyncio.gather(*(asyncio.to_thread(wait_exit, p, GRACE_S + EXIT_MARGIN_S)
                                       for p in stack.procs.values()))
        took = {name: round(t - began, 1) if t else None for name, t in zip(stack.procs, exits, strict=True)}
    finally:
        server.resume()
    logs = {name: p.tail(200) for name, p in stack.procs.items()}
    assert all(t is not None for t in took.values()), f"still running after {GRACE_S + EXIT_MARGIN_S} s: {took}\n" + \
        "\n".join(f"--- {n}\n{logs[n][-3000:]}" for n, t in took.items() if t is None)
    for name, proc in stack.procs.items():
        assert proc.proc.returncode in (0, -15), f"{name} exited {proc.proc.returncode}:\n{logs[name][-3000:]}"
        assert " stopped\"" in logs[name], f"{name} logged no final 'stopped' line:\n{logs[name][-3000:]}"


def wait_exit(proc, timeout: float) -> float | None:
    """The monotonic time the process exited, or None if it still runs after `timeout` s."""
    try:
        proc.proc.wait(timeout)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
        return None
    return time.monotonic()
