"""The bounded stop path every service uses (im_runtime.shutdown): order, deadlines, what is named."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from im_runtime.shutdown import Shutdown, raise_if_cancelled

pytestmark = pytest.mark.unit

logger = logging.getLogger("test.shutdown")


async def forever() -> None:
    await asyncio.get_running_loop().create_future()  # a server that never answers


class Deaf:
    """A library task that swallows its cancellation and keeps waiting (the hang CI saw), until the
    test releases it: otherwise the event loop's own teardown would wait for it for ever."""

    def __init__(self) -> None:
        self.released = False

    async def __call__(self) -> None:
        while True:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                if self.released:
                    raise


@pytest.fixture
def deaf():
    hang = Deaf()
    yield hang
    hang.released = True


def warnings_of(caplog) -> list[dict]:
    return [dict(r.fields, msg=r.getMessage()) for r in caplog.records
            if r.levelno == logging.WARNING and hasattr(r, "fields")]


async def test_steps_run_in_order_and_a_clean_stop_names_nothing(caplog):
    caplog.set_level(logging.INFO, logger.name)
    done: list[str] = []

    async def step(name: str) -> None:
        await asyncio.sleep(0)
        done.append(name)

    stop = Shutdown("svc", logger, grace_s=30)
    assert await stop.drain("consumers", lambda: step("consumers"))
    assert await stop.drain("flush", lambda: step("flush"))
    assert await stop.close("client", lambda: step("client"))
    stop.finished()
    assert done == ["consumers", "flush", "client"]
    assert stop.unfinished == []
    assert [r.getMessage() for r in caplog.records] == ["svc stopped"]


@pytest.mark.parametrize("kind", ["never-answers", "swallows-cancel"])
async def test_a_step_that_never_ends_is_abandoned_at_the_deadline_and_the_rest_still_run(kind, deaf, caplog):
    caplog.set_level(logging.INFO, logger.name)
    hang = forever if kind == "never-answers" else deaf
    closed = asyncio.Event()

    async def close() -> None:
        closed.set()

    grace = 0.5
    began = time.monotonic()
    stop = Shutdown("svc", logger, grace_s=grace, reserve_s=0.2)
    assert not await stop.drain("kafka consumers", hang)
    drained_at = time.monotonic()
    assert await stop.close("mongodb client", close)
    stop.finished()
    # The drain ends at its own deadline (the reserve is left for the close), never earlier.
    assert drained_at - began >= grace - 0.2
    assert closed.is_set()
    assert stop.unfinished == ["kafka consumers"]
    warned = warnings_of(caplog)
    assert warned[0]["msg"] == "did not stop within the grace period; abandoned"
    assert warned[0]["step"] == "kafka consumers" and warned[0]["service"] == "svc"
    assert warned[-1]["msg"] == "svc stopped" and warned[-1]["unfinished"] == ["kafka consumers"]


async def test_tasks_that_ignore_cancellation_are_named_and_left_behind(deaf, caplog):
    caplog.set_level(logging.INFO, logger.name)
    quiet = asyncio.create_task(forever(), name="quiet")
    stubborn = asyncio.create_task(deaf(), name="stubborn")
    await asyncio.sleep(0)
    stop = Shutdown("svc", logger, grace_s=0.4, reserve_s=0.1)
    assert not await stop.cancel("background tasks", [quiet, stubborn])
    assert quiet.cancelled()
    assert not stubborn.done()
    assert stop.unfinished == ["background tasks (stubborn)"]


async def test_a_failing_step_is_logged_by_error_type_and_the_next_one_runs(caplog):
    caplog.set_level(logging.INFO, logger.name)

    async def broken() -> None:
        raise ConnectionResetError("secret-bearing detail")

    ran = []
    stop = Shutdown("svc", logger, grace_s=5)
    assert not await stop.drain("relay", broken)
    assert await stop.close("client", lambda: asyncio.sleep(0, ran.append("client")))
    assert ran == ["client"] and stop.unfinished == ["relay"]
    warned = warnings_of(caplog)[0]
    assert warned["msg"] == "stop step failed" and warned["error"] == "ConnectionResetError"
    assert "secret-bearing" not in caplog.text


async def test_once_the_grace_is_spent_later_steps_are_abandoned_at_once():
    stop = Shutdown("svc", logger, grace_s=0.3, reserve_s=0.1)
    assert not await stop.drain("first", forever)
    assert not await stop.drain("second", forever)  # its deadline has passed: returns, never waits
    assert stop.unfinished == ["first", "second"]


async def test_a_loop_ends_even_when_its_cancellation_was_swallowed_on_the_way():
    """Python 3.11's wait_for (inside PyMongo) can drop a cancellation that lands as the awaited
    call completes: the loop's next round must end the task anyway."""

    async def call_that_swallows_a_cancel() -> None:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            return  # what 3.11's wait_for does when the inner call finished meanwhile

    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            raise_if_cancelled()
            rounds += 1
            await call_that_swallows_a_cancel()

    task = asyncio.create_task(loop())
    while rounds < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and task.cancelled()
