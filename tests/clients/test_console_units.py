"""The console's pure logic in Node (clients/console/test/): the windowing arithmetic of its long
lists, how a conversation.updated merges into the known thread, how team requests show in the
list (offered, taken by someone else, released), and edited or deleted messages (the current
version of a message, replacing one by seq, when Edit and Delete are offered). `make test` has installed the console's packages
(`make console`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CONSOLE = Path(__file__).resolve().parents[2] / "clients" / "console"


@pytest.mark.unit
def test_the_consoles_unit_tests_pass_in_node():
    npm = shutil.which("npm")
    assert npm, "npm is required (Node.js 20+)"
    assert (CONSOLE / "node_modules").is_dir(), "the console's packages are not installed: `make console`"
    proc = subprocess.run([npm, "test", "--silent"], cwd=CONSOLE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout and "# pass " in proc.stdout, proc.stdout[-2000:]
