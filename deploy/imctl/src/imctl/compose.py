"""`imctl compose up|down` (make compose-up / compose-down): the compose stack in containers.

`docker compose` when a Docker engine answers; otherwise podman + podman-compose with the offline
override (images built here by deploy/offline/build-images.sh, podman settings from
deploy/offline/containers.conf through CONTAINERS_CONF — never /etc).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .servers import REPO_ROOT

OFFLINE = REPO_ROOT / "deploy" / "offline"
APP_SERVICES = ("im-api", "delivery-gateway", "delivery-worker", "presence")


def docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class ComposeStack:
    project: str = "helpdesk-im"
    env: dict[str, str] = field(default_factory=dict)
    engine: str = ""  # docker | podman
    say: object = print

    def __post_init__(self) -> None:
        self.engine = self.engine or ("docker" if docker_engine_answers() else "podman")

    @property
    def environ(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        if self.engine == "podman":
            env.setdefault("CONTAINERS_CONF", str(OFFLINE / "containers.conf"))
        return env

    def base_argv(self) -> list[str]:
        if self.engine == "docker":
            return ["docker", "compose", "-p", self.project, "-f", str(REPO_ROOT / "docker-compose.yml")]
        podman_compose = Path(sys.executable).parent / "podman-compose"
        return [str(podman_compose if podman_compose.exists() else "podman-compose"), "-p", self.project,
                "-f", str(REPO_ROOT / "docker-compose.yml"), "-f", str(OFFLINE / "docker-compose.offline.yml")]

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base_argv(), *args], env=self.environ, cwd=REPO_ROOT, check=check,
                              capture_output=True, text=True, timeout=timeout)

    def build(self) -> None:
        if self.engine == "docker":
            self.run("build")
            return
        self.say("building images (cached after the first run) ...")
        subprocess.run(["bash", str(OFFLINE / "build-images.sh")], env=self.environ, check=True, timeout=1800)

    def up(self, *services: str, scale: dict[str, int] | None = None) -> None:
        args = ["up", "-d", "--no-build"] if self.engine == "podman" else ["up", "-d"]
        for name, n in (scale or {}).items():
            args += ["--scale", f"{name}={n}"]
        self.say(f"starting {self.project} with {self.engine} ...")
        result = self.run(*args, *services, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"compose up failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def down(self, volumes: bool = True) -> None:
        self.run("down", *(["-v"] if volumes else []), check=False, timeout=300)

    # --- container-level operations (tests: crashes and restarts) ------------------------------

    def containers(self, service: str) -> list[str]:
        tool = "docker" if self.engine == "docker" else "podman"
        out = subprocess.run(
            [tool, "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}"],
            capture_output=True, text=True, env=self.environ, check=True)
        return sorted(n for n in out.stdout.split() if n)

    def container_tool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        tool = "docker" if self.engine == "docker" else "podman"
        return subprocess.run([tool, *args], capture_output=True, text=True, env=self.environ, check=check,
                              timeout=300)

    def healthy(self, container: str) -> bool:
        """Runs the container's healthcheck now (podman has no timer without systemd)."""
        if self.engine == "docker":
            out = self.container_tool("inspect", "-f", "{{.State.Health.Status}}", container, check=False)
            return out.stdout.strip() == "healthy"
        return self.container_tool("healthcheck", "run", container, check=False).returncode == 0

    def wait_healthy(self, services: tuple[str, ...], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        pending = {c for s in services for c in self.containers(s)}
        if not pending:
            raise RuntimeError(f"no containers for {services}")
        while pending and time.monotonic() < deadline:
            pending = {c for c in pending if not self.healthy(c)}
            if pending:
                time.sleep(1)
        if pending:
            logs = {c: self.container_tool("logs", "--tail", "30", c, check=False).stdout for c in pending}
            raise RuntimeError(f"not healthy within {timeout}s: {sorted(pending)}\n{logs}")


def wait_http_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready within {timeout}s")


def compose_up(project: str = "helpdesk-im") -> int:
    if not os.environ.get("IM_JWT_SECRET"):
        print("IM_JWT_SECRET must be set (32+ random characters); compose has no default secret",
              file=sys.stderr)
        return 2
    stack = ComposeStack(project=project)
    stack.build()
    stack.up()
    stack.wait_healthy(("kafka", "mongo", *APP_SERVICES))
    api, stream = os.environ.get("IM_API_PORT", "8000"), os.environ.get("IM_STREAM_PORT", "8001")
    print(f"""
Helpdesk IM is up in containers ({stack.engine}, project {project}).
  HTTP API   http://127.0.0.1:{api}   (docs: /docs)
  WebSocket  ws://127.0.0.1:{stream}/v1/stream
  Kafka      127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}   MongoDB  127.0.0.1:{os.environ.get('MONGO_PORT', '27017')}
Mint tokens with `.venv/bin/imctl token` and the same IM_JWT_SECRET. `make compose-down` stops it.
""")
    return 0


def compose_down(project: str = "helpdesk-im", volumes: bool = False) -> int:
    ComposeStack(project=project, env={"IM_JWT_SECRET": os.environ.get("IM_JWT_SECRET", "unused-for-down")}).down(volumes)
    print(f"{project} stopped" + (" and its volumes removed" if volumes else ""))
    return 0
