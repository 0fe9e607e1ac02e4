"""The last line of defence against a hung test: a thread that ends the run when one test overstays.

pytest-timeout's signal method raises its failure in the main thread, and when that lands inside an
asyncio task step the task stores it as its own exception and the loop goes on waiting: the test
then hangs with no timer left (seen in CI: a teardown idle for 13 minutes past its 600 s timeout).
This watchdog does not depend on the main thread at all: past the test's timeout plus a margin it
prints what every thread and every pending asyncio task was doing, stops the servers the session
started (by their pids), prints the run's plain summary line and exits the process."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import io
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable

import pytest

_cleanups: list[Callable[[], None]] = []
outcomes: Counter = Counter()


def on_abort(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Registers `cleanup` to run before the watchdog ends the process; returns the unregister call."""
    _cleanups.append(cleanup)
    return lambda: _cleanups.remove(cleanup) if cleanup in _cleanups else None


def summary_line() -> str:
    """The plain closing line CI reads: 'N passed, N failed' (', N skipped' when any)."""
    line = f"{outcomes['passed']} passed, {outcomes['failed']} failed"
    if outcomes["skipped"]:
        line += f", {outcomes['skipped']} skipped"
    return line


def pending_tasks() -> str:
    """Every unfinished asyncio task in the process with its stack (read from another thread:
    diagnostics only, so a racy read is acceptable)."""
    out = io.StringIO()
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Task) and not obj.done():
            out.write(f"--- {obj.get_name()}: {obj.get_coro()!r}\n")
            try:
                obj.print_stack(file=out)
            except Exception as exc:  # noqa: BLE001 - a task finishing meanwhile
                out.write(f"    (stack unavailable: {exc!r})\n")
    return out.getvalue() or "(no pending asyncio tasks)\n"


class Watchdog:
    def __init__(self, nodeid: str, limit_s: float) -> None:
        self.nodeid = nodeid
        self.limit_s = limit_s
        self._timer = threading.Timer(limit_s, self._fire)
        self._timer.daemon = True

    def start(self) -> Watchdog:
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        err = _real_stderr()
        err.write(f"\n\n[watchdog] {self.nodeid} still running after {self.limit_s:.0f} s: ending the run\n")
        err.write("[watchdog] pending asyncio tasks:\n" + pending_tasks())
        err.write("[watchdog] threads:\n")
        err.flush()
        faulthandler.dump_traceback(file=err, all_threads=True)
        outcomes["failed"] += 1
        err.write(f"[watchdog] {self.nodeid} hung\n{summary_line()}\n")
        err.flush()
        # Stopping the servers may unblock the hung test and let the run print a little more;
        # the closing line is written again last, just before the exit.
        for cleanup in list(reversed(_cleanups)):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - stopping the rest matters more
                err.write(f"[watchdog] cleanup failed: {exc!r}\n")
        err.write(f"\n{summary_line()}\n")
        err.flush()
        os._exit(1)


_stderr: io.TextIOWrapper | None = None


def _real_stderr():
    """The run's own stderr, not pytest's capture of it (which a resumed test would swallow)."""
    return _stderr or sys.__stderr__


# --- the pytest hooks (imported by tests/conftest.py) ---------------------------------------

# How long past its own timeout a test may still run before the watchdog ends the whole run.
MARGIN_S = float(os.environ.get("IM_TEST_WATCHDOG_MARGIN_S", "120"))
_verdicts: dict[str, str] = {}
def pytest_configure(config: pytest.Config) -> None:
    global _stderr
    # pytest has already redirected file descriptor 2 to its capture file: keep a handle on the
    # descriptor it saved (the real stderr) for the watchdog's report.
    capture = config.pluginmanager.get_plugin("capturemanager")
    saved = getattr(getattr(getattr(capture, "_global_capturing", None), "err", None), "targetfd_save", None)
    if isinstance(saved, int):
        _stderr = io.TextIOWrapper(io.FileIO(os.dup(saved), "w"), line_buffering=True)


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 600)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    watchdog = Watchdog(item.nodeid, _timeout_of(item) + MARGIN_S).start()
    try:
        yield
    finally:
        watchdog.cancel()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """One verdict per test (a failed teardown fails a passed test), for the summary line."""
    before = _verdicts.get(report.nodeid)
    if report.failed:
        now = "failed"
    elif report.skipped:
        now = before or "skipped"
    elif report.when == "call":
        now = "passed"
    else:
        now = before
    if now is None or now == before or before == "failed":
        return
    if before is not None:
        outcomes[before] -= 1
    outcomes[now] += 1
    _verdicts[report.nodeid] = now
