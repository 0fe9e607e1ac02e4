"""Waiting for a condition (never a bare sleep): poll until it holds or the deadline passes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    condition: Callable[[], Any | Awaitable[Any]],
    timeout: float = 20.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> Any:
    """Returns the first truthy value of `condition()`; fails with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (after {timeout}s; last value: {last!r})")
        await asyncio.sleep(interval)
