"""After every test: no asyncio task may outlive it by ignoring cancellation.

pytest-asyncio closes a test's event loop by cancelling every task still pending and waiting for
all of them, without a bound: one task that swallows its cancellation (a client library's, or a
service's own) and the run hangs in `select()` with no timer left — what CI saw after an im-api
teardown. This fixture does the same cancellation first, with a bound, and turns such a task into
a failure that names it and shows where it waits."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

CANCEL_WAIT_S = float(os.environ.get("IM_TEST_TASK_CANCEL_S", "10"))


def describe(task: asyncio.Task) -> str:
    out = io.StringIO()
    out.write(f"{task.get_name()}: {task.get_coro()!r}\n")
    task.print_stack(file=out)
    return out.getvalue()


async def cancel_leftovers(wait_s: float) -> list[str]:
    """Cancels every other pending task of this loop; the ones still pending after `wait_s`, described.
    Their coroutines are closed, so the loop's own teardown can finish."""
    me = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in leftovers:
        task.cancel()
    if not leftovers:
        return []
    _, stuck = await asyncio.wait(leftovers, timeout=wait_s)
    described = [describe(t) for t in stuck]
    for task in stuck:
        task.get_coro().close()  # the next cancel() of this task then completes it
    return described


@pytest.fixture(autouse=True)
async def no_task_ignores_cancellation():
    yield
    stuck = await cancel_leftovers(CANCEL_WAIT_S)
    if stuck:
        pytest.fail(f"{len(stuck)} task(s) ignored cancellation for {CANCEL_WAIT_S} s after the test:\n"
                    + "\n".join(stuck), pytrace=False)
