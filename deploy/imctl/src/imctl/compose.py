"""`imctl compose up|down` (make compose-up / compose-down): the compose stack in containers.

`docker compose` when a Docker engine answers; otherwise podman + podman-compose with the offline
override (images built here by deploy/offline/build-images.sh, podman settings from
deploy/offline/containers.conf through CONTAINERS_CONF — never /etc).

podman 4.3 cannot wait for `service_healthy`, and starting a container whose `--requires` chain
holds an exited one-shot container (topics) fails there, so with podman the stack comes up in
the order compose describes, driven from here: brokers, wait until healthy, topics, wait until
it exited 0, then the services without `--requires`. The services also retry Kafka and MongoDB
at start-up (IM_CONNECT_TIMEOUT_S), so a broker that comes back later costs them nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


from .ready import NotReady, wait_ready_blocking
from .servers import REPO_ROOT

OFFLINE = REPO_ROOT / "deploy" / "offline"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
INFRA_SERVICES = ("kafka", "mongo")
ONE_SHOT_SERVICES = ("topics",)
APP_SERVICES = ("im-api", "delivery-gateway", "delivery-worker", "presence", "notifier")
PROJECT_LABELS = ("com.docker.compose.project", "io.podman.compose.project")
_BUILT: set[tuple[str, str]] = set()  # (engine, image) built by this process

# The stack's passwords (docker-compose.yml says who uses each): Kafka's admin and one SCRAM
# principal per service (and the help desk's producer of assistance requests), MongoDB's root and
# the services' user.
PASSWORDS = ("IM_KAFKA_ADMIN_PASSWORD", "IM_KAFKA_PASSWORD_IM_API", "IM_KAFKA_PASSWORD_DELIVERY_WORKER",
             "IM_KAFKA_PASSWORD_DELIVERY_GATEWAY", "IM_KAFKA_PASSWORD_PRESENCE", "IM_KAFKA_PASSWORD_NOTIFIER",
             "IM_KAFKA_PASSWORD_ASSISTANCE_PRODUCER", "IM_MONGO_ROOT_PASSWORD", "IM_MONGO_PASSWORD")
# They go unescaped into a MongoDB URI, a JAAS line and kafka-storage's --add-scram argument.
PASSWORD_SHAPE = re.compile(r"[A-Za-z0-9._-]{16,}")
PASSWORDS_FILE = "compose-passwords.env"


def new_passwords() -> dict[str, str]:
    return {name: secrets.token_urlsafe(24) for name in PASSWORDS}


def compose_passwords(run_dir: Path, say) -> dict[str, str]:
    """Each of PASSWORDS from the environment when set, else made once and kept (0600) in
    run_dir/compose-passwords.env: the data volumes hold the users they created on first start, so
    a later `compose up` must bring the same ones."""
    path = run_dir / PASSWORDS_FILE
    kept: dict[str, str] = {}
    if path.exists():
        kept = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    made = {name: kept.get(name) or value for name, value in new_passwords().items()}
    if made != kept:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in made.items()))
        say(f"passwords of the stack's Kafka and MongoDB users kept in {path} (set them in the environment to choose)")
    return {name: os.environ.get(name) or made[name] for name in PASSWORDS}


def password_problems(passwords: dict[str, str]) -> list[str]:
    return [f"{name}: use 16 or more letters, digits, '.', '_' or '-'"
            for name, value in passwords.items() if not PASSWORD_SHAPE.fullmatch(value)]


class ComposeError(RuntimeError):
    """The stack could not be built, started or checked; the message says why."""


def docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def podman_compose_command() -> str | None:
    beside = Path(sys.executable).parent / "podman-compose"
    return str(beside) if beside.exists() else shutil.which("podman-compose")


@dataclass
class ComposeStack:
    project: str = "helpdesk-im"
    env: dict[str, str] = field(default_factory=dict)
    # Further compose files (tests add a second gateway and shorter intervals).
    extra_files: tuple[Path, ...] = ()
    engine: str = ""  # docker | podman
    say: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.engine = self.engine or ("docker" if docker_engine_answers() else "podman")
        if self.engine == "podman":
            self._require_podman()

    def _require_podman(self) -> None:
        missing = [tool for tool in ("podman", "runc") if not shutil.which(tool)]
        if not podman_compose_command():
            missing.append("podman-compose (pip, in requirements-dev.txt)")
        if missing:
            raise ComposeError(
                "no Docker engine answers, and the podman fallback is missing: " + ", ".join(missing)
                + ". `make setup` installs them as root (deploy/local/setup-tools.sh; "
                "`apt-get install podman runc debootstrap`).")

    @property
    def tool(self) -> str:
        return "docker" if self.engine == "docker" else "podman"

    @property
    def environ(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        if self.engine == "podman":
            env.setdefault("CONTAINERS_CONF", str(OFFLINE / "containers.conf"))
        return env

    def files(self) -> list[Path]:
        base = [COMPOSE_FILE] if self.engine == "docker" else [COMPOSE_FILE, OFFLINE / "docker-compose.offline.yml"]
        return [*base, *self.extra_files]

    def base_argv(self) -> list[str]:
        head = ["docker", "compose"] if self.engine == "docker" else [podman_compose_command() or "podman-compose"]
        argv = [*head, "-p", self.project]
        for path in self.files():
            argv += ["-f", str(path)]
        return argv

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.base_argv(), *args], env=self.environ, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ComposeError(f"`compose {' '.join(args)}` failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def container_tool(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.tool, *args], capture_output=True, text=True, env=self.environ, check=check,
                              timeout=timeout)

    # --- build, up, down -----------------------------------------------------------------------

    def build(self) -> None:
        """Every image the stack runs; cached, so a second build with nothing changed takes seconds
        (and none at all a second time in one process: a test session builds once)."""
        key = (self.engine, self.environ.get("IM_IMAGE", ""))
        if key in _BUILT:
            return
        self._build()
        _BUILT.add(key)

    def _build(self) -> None:
        if self.engine == "docker":
            self.run("build")
            return
        self.say("building the images with podman (deploy/offline/build-images.sh; cached after the first run) ...")
        result = subprocess.run(["bash", str(OFFLINE / "build-images.sh")], env=self.environ,
                                capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise ComposeError(f"building the images failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")

    def service_names(self) -> list[str]:
        if self.engine == "docker":
            return self.run("config", "--services").stdout.split()
        import yaml  # podman-compose's own dependency; only needed here

        return list(yaml.safe_load(self.run("config").stdout)["services"])

    def up(self, services: tuple[str, ...] | None = None, timeout: float = 300) -> None:
        """Starts the stack (or some services) and returns once every started service is healthy."""
        wanted = list(services or self.service_names())
        self.say(f"starting {self.project} with {self.engine} compose ...")
        if self.engine == "docker":
            self.run("up", "-d", *wanted)  # docker honours depends_on conditions itself
        else:
            for stage in (INFRA_SERVICES, ONE_SHOT_SERVICES):
                if names := [s for s in wanted if s in stage]:
                    self.run("up", "-d", "--no-build", "--no-deps", *names)
                    if stage is INFRA_SERVICES:
                        self.wait_healthy(tuple(names), timeout)
            for name in (s for s in wanted if s in ONE_SHOT_SERVICES):
                self.wait_completed(name, timeout)
            if apps := [s for s in wanted if s not in (*INFRA_SERVICES, *ONE_SHOT_SERVICES)]:
                # Stateless: recreated, so a second `up` runs the image just built (podman-compose
                # would keep a running container of the previous one).
                self.run("up", "-d", "--no-build", "--no-deps", "--force-recreate", *apps)
        self.wait_healthy(tuple(s for s in wanted if s not in ONE_SHOT_SERVICES), timeout)

    def down(self) -> None:
        """Stops the stack; its data volumes stay (make compose-down)."""
        self.run("down", check=False, timeout=300)

    def save_logs(self, folder: Path) -> None:
        """Every container's output, kept after the containers are gone (to read a failure)."""
        out = self.container_tool("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                                  "--format", "{{.Names}}", check=False)
        names = [n for n in out.stdout.split() if n]
        if not names:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            logs = self.container_tool("logs", name, check=False, timeout=60)
            (folder / f"{name}.log").write_text(logs.stdout + logs.stderr)
        self.say(f"container logs kept in {folder}")

    def remove_everything(self) -> list[str]:
        """Containers, pods, networks and volumes of this project, gone; returns what had to be
        removed by label after `down -v` (nothing, normally)."""
        self.run("down", "-v", check=False, timeout=300)
        leftovers = []
        for kind, list_args, rm_args in (
            ("container", ["ps", "-a", "--format", "{{.Names}}"], ["rm", "-f", "-v"]),
            ("pod", ["pod", "ps", "--format", "{{.Name}}"], ["pod", "rm", "-f"]),
            ("network", ["network", "ls", "--format", "{{.Name}}"], ["network", "rm", "-f"]),
            ("volume", ["volume", "ls", "--format", "{{.Name}}"], ["volume", "rm", "-f"]),
        ):
            if kind == "pod" and self.engine == "docker":
                continue
            for name in self.resources(list_args):
                leftovers.append(f"{kind} {name}")
                self.container_tool(*rm_args, name, check=False)
        return leftovers

    def resources(self, list_args: list[str]) -> list[str]:
        """Names of one kind of resource carrying this project's label."""
        names: set[str] = set()
        for label in PROJECT_LABELS:
            out = self.container_tool(*list_args, "--filter", f"label={label}={self.project}", check=False)
            names |= {n for n in out.stdout.split() if n}
        return sorted(names)

    def leftovers(self) -> list[str]:
        kinds = [("container", ["ps", "-a", "--format", "{{.Names}}"]),
                 ("network", ["network", "ls", "--format", "{{.Name}}"]),
                 ("volume", ["volume", "ls", "--format", "{{.Name}}"])]
        if self.engine == "podman":
            kinds.append(("pod", ["pod", "ps", "--format", "{{.Name}}"]))
        return [f"{kind} {name}" for kind, args in kinds for name in self.resources(args)]

    @contextmanager
    def running(self, services: tuple[str, ...] | None = None) -> Iterator[ComposeStack]:
        """Built, up and healthy inside the block; everything removed after it, also on failure."""
        try:
            self.build()
            self.up(services)
            yield self
        finally:
            self.save_logs(Path(tempfile.gettempdir()) / f"{self.project}-logs")
            self.remove_everything()
        if left := self.leftovers():
            raise ComposeError(f"still there after removing project {self.project}: {left}")

    # --- containers (tests: crashes and restarts) ----------------------------------------------

    def containers(self, service: str) -> list[str]:
        out = self.container_tool(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}")
        return sorted(n for n in out.stdout.split() if n)

    def container(self, service: str) -> str:
        names = self.containers(service)
        if len(names) != 1:
            raise ComposeError(f"expected one container of {service}, found {names}")
        return names[0]

    def main_pid(self, container: str) -> int:
        """The host pid of the container's main process (0 while it is not running)."""
        return int(self.container_tool("inspect", "-f", "{{.State.Pid}}", container).stdout.strip() or 0)

    def healthy(self, container: str) -> bool:
        """Runs the container's healthcheck now (podman has no timer without systemd)."""
        if self.engine == "docker":
            out = self.container_tool("inspect", "-f", "{{.State.Health.Status}}", container, check=False)
            return out.stdout.strip() == "healthy"
        return self.container_tool("healthcheck", "run", container, check=False, timeout=60).returncode == 0

    def wait_healthy(self, services: tuple[str, ...], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        pending = {c for s in services for c in self.containers(s)}
        missing = [s for s in services if not self.containers(s)]
        if missing:
            raise ComposeError(f"no containers for {missing}")
        while pending and time.monotonic() < deadline:
            pending = {c for c in pending if not self.healthy(c)}
            if pending:
                time.sleep(0.5)  # polling a probe, not a synchronisation of our own
        if pending:
            raise ComposeError(f"not healthy within {timeout}s: {sorted(pending)}\n{self.logs(pending)}")

    def wait_completed(self, service: str, timeout: float = 300) -> None:
        """A one-shot service (topics): waits for it to exit, and it must exit 0."""
        for name in self.containers(service):
            out = self.container_tool("wait", name, timeout=timeout)
            codes = [line for line in out.stdout.split() if line.strip()]
            if codes and codes[-1] != "0":
                raise ComposeError(f"{service} exited {codes[-1]}\n{self.logs([name])}")

    def logs(self, containers, tail: int = 40) -> str:
        parts = []
        for name in sorted(containers):
            out = self.container_tool("logs", "--tail", str(tail), name, check=False)
            parts.append(f"--- {name}\n{out.stdout}{out.stderr}")
        return "\n".join(parts)


def wait_http_ready(url: str, timeout: float = 120) -> None:
    try:
        wait_ready_blocking(url, timeout, interval=0.5)
    except NotReady as exc:
        raise ComposeError(str(exc)) from None


def secret_problem(secret: str) -> str | None:
    """What every service would refuse in IM_JWT_SECRET (their own settings' rule), or None. Said
    before anything starts: otherwise the services crash-loop while compose up waits out its whole
    timeout for them to turn healthy."""
    from im_runtime.settings import CommonSettings
    from pydantic import ValidationError

    try:
        CommonSettings(jwt_secret=secret)
    except ValidationError as exc:
        found = [e["msg"] for e in exc.errors() if {"jwt_secret", "IM_JWT_SECRET"} & {str(p) for p in e["loc"]}]
        return "; ".join(found) or None
    return None


def compose_up(project: str = "helpdesk-im") -> int:
    from .launcher import DEV_SECRET_FILE, LaunchConfig, dev_secret

    config = LaunchConfig.from_env()
    secret_from_env = bool(os.environ.get("IM_JWT_SECRET"))
    secret = dev_secret(config.run_dir, print)  # IM_JWT_SECRET, else the dev one `make run` uses
    problem = secret_problem(secret)
    if problem:
        print(f"error: IM_JWT_SECRET is not usable: {problem} (use 32+ random characters)", file=sys.stderr)
        return 1
    passwords = compose_passwords(config.run_dir, print)
    for problem in password_problems(passwords):
        print(f"error: {problem}", file=sys.stderr)
    if password_problems(passwords):
        return 1
    env = {
        **passwords,
        "IM_JWT_SECRET": secret,
        "IM_API_PORT": str(config.api_port),
        "IM_STREAM_PORT": str(config.stream_port),
        "KAFKA_PORT": str(config.kafka_port),
        "MONGO_PORT": str(config.mongo_port),
        "IM_STREAM_PUBLIC_URL": os.environ.get("IM_STREAM_PUBLIC_URL",
                                               f"ws://127.0.0.1:{config.stream_port}/v1/stream"),
        # The console im-api serves, on the published port: the page the gateway lets in.
        "IM_CONSOLE_ORIGINS": os.environ.get(
            "IM_CONSOLE_ORIGINS", f"http://127.0.0.1:{config.api_port},http://localhost:{config.api_port}"),
    }
    try:
        stack = ComposeStack(project=project, env=env)
        stack.build()
        stack.up()
        wait_http_ready(f"http://127.0.0.1:{config.api_port}/readyz")
    except ComposeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    secret_hint = "$IM_JWT_SECRET" if secret_from_env else f"$(cat {config.run_dir / DEV_SECRET_FILE})"
    host = "127.0.0.1"
    print(f"""
Helpdesk IM is up in containers ({stack.engine}, compose project {project}).
  Console         http://{host}:{config.api_port}/console/   (sign in with an agent token, below)
  HTTP API        http://{host}:{config.api_port}        (docs: http://{host}:{config.api_port}/docs)
  WebSocket       ws://{host}:{config.stream_port}/v1/stream
  Kafka           {host}:{config.kafka_port}   (SASL_PLAINTEXT, SCRAM-SHA-512: user helpdesk-im-admin, password
                  IM_KAFKA_ADMIN_PASSWORD in {config.run_dir / PASSWORDS_FILE} unless set)
  MongoDB         mongodb://helpdesk-im:$IM_MONGO_PASSWORD@{host}:{config.mongo_port}/?directConnection=true&authSource=admin
  logs            {stack.tool} logs {project}{'_' if stack.engine == 'podman' else '-'}im-api{'_' if stack.engine == 'podman' else '-'}1   (and the other services)

Mint dev tokens:
  ADMIN=$(IM_JWT_SECRET={secret_hint} .venv/bin/imctl token --tenant acme --agent root --role admin)
  ALICE=$(IM_JWT_SECRET={secret_hint} .venv/bin/imctl token --tenant acme --agent alice)
In the console, paste the token (echo "$ALICE") under "With a token"; or follow README "Try it by hand".
`make compose-down` stops it (data volumes are kept).
""")
    return 0


def compose_down(project: str = "helpdesk-im", volumes: bool = False) -> int:
    # docker-compose.yml refuses to load without its secrets; stopping needs none of them.
    env = {name: os.environ.get(name, "unused-for-down-0123456789") for name in ("IM_JWT_SECRET", *PASSWORDS)}
    try:
        stack = ComposeStack(project=project, env=env)
    except ComposeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if volumes:
        stack.remove_everything()
    else:
        stack.down()
    print(f"{project} stopped" + (" and its volumes removed" if volumes else " (data volumes kept)"))
    return 0
