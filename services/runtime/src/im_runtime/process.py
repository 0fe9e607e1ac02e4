"""One shape for every service process: what it starts, how it tells it is ready, and how it stops.

A service's composition root builds a `Process` and, in start order, connects MongoDB, starts its
producers and consumers, and supervises its background loops. Each of those registers how it is
stopped at the moment it is started, so the stop runs in exactly the reverse order — the last
thing started (the consumers taking work in) stops first, the MongoDB client closes last — and
every step runs under the one grace period (`Shutdown`). Readiness is the named checks the
service adds; `/readyz` answers from them (`health_router(process.readiness)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from .health import Check, Readiness
from .kafka import is_transient, make_producer, start_with_retry
from .mongo import connect, reachable
from .settings import CommonSettings
from .shutdown import Shutdown, raise_if_cancelled

StopKind = Literal["drain", "close", "cancel"]


class Process:
    def __init__(self, service: str, settings: CommonSettings, logger: logging.Logger, grace_s: float,
                 readiness_timeout_s: float = 2.0) -> None:
        self.service = service
        self.settings = settings
        self.logger = logger
        self.grace_s = grace_s
        self.readiness = Readiness(timeout_s=readiness_timeout_s)
        self._stops: list[tuple[StopKind, str, Any]] = []

    # --- readiness ------------------------------------------------------------------------

    def check(self, name: str, check: Check) -> None:
        """A named readiness check (`/readyz` lists each by name)."""
        self.readiness.add(name, check)

    # --- starting -------------------------------------------------------------------------

    def on_stop(self, kind: StopKind, what: str, step: Any) -> None:
        """How something just started is stopped: `drain` (finish the work in hand), `close` (a
        client; may use the reserve at the end of the grace period) or `cancel` (a task)."""
        self._stops.append((kind, what, step))

    async def connect_mongo(self, **options: Any) -> tuple[AsyncMongoClient, AsyncDatabase]:
        """The MongoDB client (retried at start-up), closed last; readiness `mongodb`."""
        client, db = await connect(self.settings, **options)
        self.on_stop("close", "mongodb client", client.close)
        self.check("mongodb", lambda: reachable(client))
        return client, db

    async def start_producer(self, what: str = "kafka producer", *, flush: bool = True,
                             **overrides: Any) -> AIOKafkaProducer:
        """An idempotent producer (retried at start-up); at stop it flushes (`flush`), then closes."""
        producer = make_producer(self.settings, **overrides)
        await start_with_retry(producer.start, what, self.settings)
        self.on_stop("close", what, producer.stop)
        if flush:
            self.on_stop("drain", f"{what} flush", producer.flush)
        return producer

    async def start(self, what: str, start: Callable[[], Awaitable[Any]],
                    stop: Callable[[], Awaitable[Any]] | None = None, kind: StopKind = "drain") -> None:
        """Starts a dependency (retried while it is not reachable yet) and registers its stop."""
        await start_with_retry(start, what, self.settings)
        if stop is not None:
            self.on_stop(kind, what, stop)

    def supervise(self, name: str, loop: Callable[[], Awaitable[Any]], restart: bool = True) -> asyncio.Task:
        """Runs a background loop until the stop cancels it. A loop that fails is logged and, with
        `restart`, started again after a backoff (the retry settings), so one bug in a rare path
        does not silently end a job the service needs; without it, the task ends (a readiness
        check that watches the task then reports it)."""

        async def run() -> None:
            delay = self.settings.retry_initial_s
            while True:
                raise_if_cancelled()
                started = time.monotonic()
                try:
                    await loop()
                    return  # a loop that returns has finished its work
                except Exception as exc:
                    if not restart:
                        raise
                    if time.monotonic() - started >= self.settings.retry_max_s:
                        delay = self.settings.retry_initial_s  # it ran well since the last failure
                    fields = {"loop": name, "error": type(exc).__name__, "retry_in_s": round(delay, 3)}
                    if is_transient(exc):  # Kafka or MongoDB away: not the loop's fault
                        self.logger.warning("background loop interrupted; restarting", extra={"fields": fields})
                    else:  # with the traceback: a loop only gets here through a bug of its own
                        self.logger.error("background loop failed; restarting", exc_info=True,
                                          extra={"fields": fields})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.retry_max_s)

        task = asyncio.create_task(run(), name=name)
        self.on_stop("cancel", name, task)
        return task

    # --- stopping -------------------------------------------------------------------------

    async def stop(self) -> list[str]:
        """Not ready any more, then every stop step in reverse start order, all within the grace
        period; what did not stop cleanly (also logged)."""
        self.readiness.draining = True
        stop = Shutdown(self.service, self.logger, self.grace_s)
        steps, self._stops = self._stops, []
        for kind, what, step in reversed(steps):
            if kind == "cancel":
                await stop.cancel(what, [step])
            elif kind == "drain":
                await stop.drain(what, step)
            else:
                await stop.close(what, step)
        stop.finished()
        return stop.unfinished

    def lifespan(self, start: Callable[[], Awaitable[None]]) -> Callable[[Any], contextlib.AbstractAsyncContextManager]:
        """A FastAPI lifespan: `start()`, serve, `stop()` — also when the start fails half-way, so
        what did start is stopped in order."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            try:
                await start()
            except BaseException:
                await self.stop()
                raise
            try:
                yield
            finally:
                await self.stop()

        return lifespan
