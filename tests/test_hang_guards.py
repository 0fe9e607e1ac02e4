"""The two guards against a hung run: a task that ignores cancellation fails its test (instead of
hanging the event loop's teardown), and the watchdog ends a run whose test overstays its timeout
even when pytest-timeout cannot."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parent

# A test that hangs the way the CI run did: pytest-timeout's failure is raised while a task runs
# (and stored in that task), and the test goes on waiting for a future nobody completes.
HANGING = """
import asyncio, time
import pytest

def test_fine():
    assert True

@pytest.mark.timeout(1)
async def test_hangs():
    async def swallows():
        while True:
            try:
                time.sleep(0.3)  # busy in a task step when the alarm fires
                await asyncio.sleep(0)
            except BaseException:
                pass
    stuck = asyncio.create_task(swallows(), name="swallows-everything")
    await asyncio.get_running_loop().create_future()
"""


# A test that passes but leaves a task behind that ignores cancellation, as a client library might.
LEAVES_A_DEAF_TASK = """
import asyncio

async def test_leaves_a_deaf_task():
    async def deaf():
        while True:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                pass
    asyncio.create_task(deaf(), name="deaf-consumer-close")
    await asyncio.sleep(0)

def test_after():
    assert True
"""


def run_pytest(tmp_path, test_source: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from support.tasks import no_task_ignores_cancellation  # noqa: F401
        from support.watchdog import pytest_configure, pytest_runtest_logreport, pytest_runtest_protocol  # noqa: F401
    """))
    (tmp_path / "test_it.py").write_text(test_source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
                                         "timeout = 60\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_a_task_that_ignores_cancellation_fails_its_test_by_name_and_the_run_goes_on(tmp_path):
    proc = run_pytest(tmp_path, LEAVES_A_DEAF_TASK, IM_TEST_TASK_CANCEL_S="0.5")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 task(s) ignored cancellation" in out and "deaf-consumer-close" in out
    assert "2 passed, 1 error" in out.splitlines()[-1], out  # the error: that test's teardown


def test_a_hung_test_ends_the_run_with_its_tasks_and_a_summary_line(tmp_path):
    proc = run_pytest(tmp_path, HANGING, IM_TEST_WATCHDOG_MARGIN_S="2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "test_it.py::test_hangs still running after 3 s" in out
    assert "swallows-everything" in out  # the pending task, named, with its stack
    assert out.rstrip().splitlines()[-1] == "1 passed, 1 failed"
