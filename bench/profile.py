"""`--profile DIR`: py-spy samples the service processes while a scenario runs, writing collapsed
stacks (DIR/<service>.txt, flamegraph-ready) and a summary of where each process spends its time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


IDLE_LEAVES = ("select (selectors.py", "Condition.wait (threading.py", "_worker (thread.py", "poll (selectors.py",
               "epoll", "Event.wait (threading.py")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, out: Path, pids: dict[str, int], rate: int = 100) -> None:
        self.out, self.pids, self.rate = out, pids, rate
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install -r requirements-dev.txt)")
        self.out.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            proc = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", str(self.rate), "--nonblocking",
                 "--output", str(self.out / f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=open(self.out / f"{name}.log", "wb"))
            self.procs.append((name, proc))

    def stop(self) -> dict[str, dict]:
        """Stops the samplers (SIGINT makes py-spy write its file) and summarises each profile."""
        import signal

        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {name: summarise(self.out / f"{name}.txt") for name, _ in self.procs}


def summarise(path: Path, top: int = 15) -> dict:
    """Self time per function and inclusive time per function, as % of samples (idle excluded)."""
    if not path.exists():
        return {"error": "no profile written"}
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        total += n
        if any(mark in leaf for mark in IDLE_LEAVES):
            idle += n  # a thread waiting for work (executor, selector), not spending CPU
            continue
        own[_short(leaf)] += n
        for name in {_short(f) for f in frames}:
            inclusive[name] += n
    busy = max(1, total - idle)
    return {
        "samples": total, "busy_percent": round(100 * (total - idle) / max(1, total), 1),
        "self_top": [(name, round(100 * n / busy, 1)) for name, n in own.most_common(top)],
        "inclusive_top": [(name, round(100 * n / busy, 1)) for name, n in inclusive.most_common(top * 2)],
    }


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    module = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({module})" if module else name
