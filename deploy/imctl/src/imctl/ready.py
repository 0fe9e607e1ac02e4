"""Waiting for a process to report ready: the one way the launcher, the compose stack, the
benchmark and the tests wait for a service (its `/readyz` answering 200)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx


class NotReady(RuntimeError):
    """A process did not report ready in time, or exited first; the message says which."""


async def wait_ready(url: str, timeout: float, *, alive: Callable[[], bool] | None = None,
                     interval: float = 0.05) -> None:
    """Polls `url` until it answers 200 (the condition, never a fixed sleep). `alive`: stop at
    once when the process has exited — a crash is not a slow start."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise NotReady(f"{url}: the process exited")
            try:
                answer = await client.get(url)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(interval)
    raise NotReady(f"{url} not ready within {timeout}s: {last}")


def wait_ready_blocking(url: str, timeout: float, *, alive: Callable[[], bool] | None = None,
                        interval: float = 0.05) -> None:
    """`wait_ready` for synchronous callers (also from a thread of their own)."""
    asyncio.run(wait_ready(url, timeout, alive=alive, interval=interval))
