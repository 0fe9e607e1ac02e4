"""Service processes for e2e tests, started as `make run` starts them, stopped by their pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from imctl.ready import NotReady, wait_ready


@dataclass
class ServiceProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str | None = None
    proc: subprocess.Popen | None = None
    _log: object | None = field(default=None, repr=False)

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Polls the service's /readyz until it answers 200 (the condition, not a sleep)."""
        assert self.ready_url, f"{self.name} has no readiness URL"
        try:
            await wait_ready(self.ready_url, timeout, alive=lambda: self.proc is not None and self.proc.poll() is None)
        except NotReady as exc:
            raise TimeoutError(f"{self.name}: {exc}\n{self.tail()}") from None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None
        return self.proc.returncode

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ServiceRunner:
    directory: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def start(self, name: str, module_or_script: list[str], env: dict[str, str],
              ready_url: str | None = None) -> ServiceProcess:
        argv = module_or_script
        if argv[0] == "-m":
            argv = [sys.executable, *argv]
        proc = ServiceProcess(name, argv, env, self.directory / f"{name}-{len(self.started)}.log", ready_url)
        self.started.append(proc.start())
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
