"""Stopping a service within its grace period, whatever its clients and servers do.

Every service stops the same way: stop taking work, finish the work in hand, flush what must reach
Kafka, close the clients. Each of those awaits a server (Kafka, MongoDB) or a library's task, and
any of them can wait forever: a broker that stopped answering, a coordinator lookup that retries
without end, a task that swallows its cancellation. `Shutdown` runs each step as a task of its own
under one deadline and walks away from a step that overstays, naming it in the log, so the
process always reaches its exit and the orchestrator never has to SIGKILL it mid-write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from .logs import log

Step = Callable[[], Awaitable[object]]


class Shutdown:
    """One stop path: steps in order, all of them inside `grace_s` seconds from construction.

    `drain` steps (consumers finishing their batch, a flush) end `reserve_s` before the deadline,
    which is kept for the `close` steps, so even a drain that used up its time leaves the clients
    a moment to close their sockets. A step that does not finish by its deadline is cancelled and
    *not* awaited (a task that ignores cancellation must not hold the process), a step that fails
    is logged; either way the next step runs. `unfinished` names what did not stop cleanly."""

    def __init__(self, service: str, logger: logging.Logger, grace_s: float, reserve_s: float | None = None) -> None:
        self.service = service
        self.logger = logger
        self.started = time.monotonic()
        self.deadline = self.started + grace_s
        reserve = min(1.0, grace_s / 5) if reserve_s is None else reserve_s
        self.drain_deadline = self.deadline - reserve
        self.unfinished: list[str] = []

    async def drain(self, what: str, step: Step) -> bool:
        """A step that finishes work in hand; True when it completed in time without error."""
        return await self._run(what, step, self.drain_deadline)

    async def close(self, what: str, step: Step) -> bool:
        """A client's close: may use the reserve at the end of the grace period."""
        return await self._run(what, step, self.deadline)

    async def cancel(self, what: str, tasks: Iterable[asyncio.Task]) -> bool:
        """Cancels background tasks and waits for them until the drain deadline."""
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=self._left(self.drain_deadline))
            if stuck:
                names = sorted(t.get_name() for t in stuck)
                self._overstayed(f"{what} ({', '.join(names)})")
                return False
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self._failed(f"{what} ({task.get_name()})", task.exception())
        return True

    def finished(self) -> None:
        """The last log line of the service: how long the stop took and what did not stop."""
        fields: dict[str, object] = {"seconds": round(time.monotonic() - self.started, 3)}
        if self.unfinished:
            fields["unfinished"] = self.unfinished
        log(self.logger, logging.WARNING if self.unfinished else logging.INFO, f"{self.service} stopped", **fields)

    # --- internals ------------------------------------------------------------------------

    def _left(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    async def _run(self, what: str, step: Step, deadline: float) -> bool:
        async def run() -> None:
            await step()

        task = asyncio.create_task(run(), name=f"{self.service} stop: {what}")
        try:
            done, _ = await asyncio.wait({task}, timeout=self._left(deadline))
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            task.add_done_callback(_consume_outcome)
            self._overstayed(what)
            return False
        if task.cancelled():
            self._failed(what, asyncio.CancelledError())
            return False
        if task.exception() is not None:
            self._failed(what, task.exception())
            return False
        return True

    def _overstayed(self, what: str) -> None:
        self.unfinished.append(what)
        log(self.logger, logging.WARNING, "did not stop within the grace period; abandoned",
            service=self.service, step=what, grace_s=round(self.deadline - self.started, 3))

    def _failed(self, what: str, exc: BaseException | None) -> None:
        self.unfinished.append(what)
        log(self.logger, logging.WARNING, "stop step failed", service=self.service, step=what,
            error=type(exc).__name__)


def raise_if_cancelled() -> None:
    """Ends the current task if it was cancelled and the cancellation got lost on the way.

    Python 3.11's asyncio.wait_for (PyMongo's network layer uses it for every read and write)
    discards a cancellation that lands just as the awaited call completes: the task is left
    "cancelling" but runs on, and a `while True` loop never ends (seen: the outbox relay, a test
    waiting for it for ever). Every long-running loop calls this once per round."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _consume_outcome(task: asyncio.Task) -> None:
    # An abandoned step that fails later must not log "exception was never retrieved".
    if not task.cancelled():
        task.exception()
