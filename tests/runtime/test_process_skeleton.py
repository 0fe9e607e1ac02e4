"""The process skeleton every service starts and stops through (no server needed: the steps are
plain coroutines): stop in the reverse start order, supervised loops restarted after a failure,
and a start that fails half-way stops what did start."""

from __future__ import annotations

import asyncio
import logging

import pytest
from im_runtime.process import Process
from im_runtime.settings import CommonSettings
from support.wait import eventually

pytestmark = pytest.mark.unit

SETTINGS = CommonSettings(retry_initial_s=0.01, retry_max_s=0.02)


def process() -> Process:
    return Process("test", SETTINGS, logging.getLogger("test.process"), grace_s=5.0)


async def test_stop_runs_every_step_in_the_reverse_order_they_were_registered_in():
    p, done = process(), []

    def step(name):
        async def run():
            done.append(name)
        return run

    p.on_stop("close", "client", step("client"))
    p.on_stop("drain", "producer flush", step("flush"))
    forever = p.supervise("loop", asyncio.Event().wait)  # runs until cancelled
    p.on_stop("drain", "consumers", step("consumers"))
    assert await p.stop() == []
    assert done == ["consumers", "flush", "client"]
    assert forever.cancelled(), "the supervised loop was cancelled between the consumers and the flush"
    assert p.readiness.draining
    assert await p.stop() == [] and done == ["consumers", "flush", "client"], "a second stop does nothing"


async def test_a_supervised_loop_that_fails_is_started_again_and_one_that_must_not_restart_ends():
    p, runs = process(), []

    async def flaky():
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("a bug in a rare path")
        await asyncio.Event().wait()  # the third run stays up until the stop cancels it

    p.supervise("flaky", flaky)
    await eventually(lambda: len(runs) == 3, timeout=10, message="restarted after each failure")

    async def broken():
        raise RuntimeError("fatal")

    once = p.supervise("once", broken, restart=False)
    await asyncio.wait({once}, timeout=10)
    assert once.done() and isinstance(once.exception(), RuntimeError)
    await p.stop()


async def test_a_start_that_fails_half_way_stops_what_did_start_and_raises():
    p, stopped = process(), []

    async def close():
        stopped.append("first")

    async def start():
        p.on_stop("close", "first", close)
        raise ConnectionError("the second dependency is down for good")

    with pytest.raises(ConnectionError):
        async with p.lifespan(start)(None):
            pytest.fail("never served")
    assert stopped == ["first"]


async def test_a_loop_cut_off_by_an_outage_is_a_warning_and_a_bug_is_an_error_with_its_traceback(caplog):
    p, runs = process(), []

    async def flaky():
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("Kafka went away")
        if len(runs) == 2:
            raise KeyError("a bug")
        await asyncio.Event().wait()

    caplog.set_level(logging.WARNING, logger="test.process")
    p.supervise("flaky", flaky)
    await eventually(lambda: len(runs) == 3, timeout=10, message="restarted after each failure")
    await p.stop()
    lines = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == "test.process"
             and "restarting" in r.getMessage()]
    assert lines == [(logging.WARNING, "background loop interrupted; restarting", False),
                     (logging.ERROR, "background loop failed; restarting", True)]
