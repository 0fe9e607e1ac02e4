"""`imctl up` / `make run`: the whole stack on this machine as child processes, in the foreground.

Kafka: Apache Kafka from its Maven Central jars whenever Java is present, Tansu only where there
is none (memory-only, no idempotent producer — said loudly). MongoDB: SecantusDB. Then the
services (im-api, delivery gateway + worker, presence, notifier). Data lives under `.run/` and survives a
restart. Ctrl-C (or SIGTERM) stops everything we started, by pid, services first.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


from . import servers
from .ready import NotReady, wait_ready_blocking
from .topics import create_topics

DEV_SECRET_FILE = "dev-jwt-secret"
CONSOLE_DIST = servers.REPO_ROOT / "clients" / "console" / "dist"  # `make console` builds it


@dataclass
class LaunchConfig:
    kafka: str = "auto"  # apache | tansu | auto
    run_dir: Path = servers.REPO_ROOT / ".run"
    api_port: int = 8000
    stream_port: int = 8001
    worker_port: int = 8002
    presence_port: int = 8003
    notifier_port: int = 8004
    # The notifier's email goes to an SMTP server here: a mail catcher in development (README).
    smtp_port: int = 1025
    kafka_port: int = 9092
    mongo_port: int = 27017
    host: str = "127.0.0.1"
    ready_timeout_s: float = 120.0

    @classmethod
    def from_env(cls, kafka: str | None = None) -> LaunchConfig:
        env = os.environ
        return cls(
            kafka=kafka or env.get("IM_DEV_KAFKA", "auto"),
            run_dir=Path(env.get("IM_RUN_DIR", servers.REPO_ROOT / ".run")),
            api_port=int(env.get("IM_API_PORT", 8000)),
            stream_port=int(env.get("IM_STREAM_PORT", 8001)),
            worker_port=int(env.get("IM_DELIVERY_WORKER_PORT", 8002)),
            presence_port=int(env.get("IM_PRESENCE_PORT", 8003)),
            notifier_port=int(env.get("IM_NOTIFIER_PORT", 8004)),
            smtp_port=int(env.get("IM_NOTIFIER_SMTP_PORT", 1025)),
            kafka_port=int(env.get("KAFKA_PORT", 9092)),
            mongo_port=int(env.get("MONGO_PORT", 27017)),
        )


def dev_secret(run_dir: Path, say) -> str:
    """IM_JWT_SECRET if given; else a dev secret made once and kept under .run/ (dev only)."""
    given = os.environ.get("IM_JWT_SECRET")
    if given:
        return given
    path = run_dir / DEV_SECRET_FILE
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    say(f"!! DEV ONLY: using the generated JWT secret in {path} (set IM_JWT_SECRET to choose one)")
    return path.read_text().strip()


class Stack:
    """Everything `up` started, stopped in reverse order by pid."""

    def __init__(self, config: LaunchConfig, say=print) -> None:
        self.config = config
        self.say = say
        self.kafka: servers.ChildServer | None = None
        self.mongo: servers.SecantusMongo | None = None
        self.services: list[tuple[str, servers.ChildServer, str]] = []
        self.env: dict[str, str] = {}

    # --- brokers ----------------------------------------------------------------------------

    def start_brokers(self) -> None:
        c = self.config
        for port, what in ((c.kafka_port, "KAFKA_PORT"), (c.mongo_port, "MONGO_PORT")):
            if not servers.port_is_free(port):
                raise servers.ServerError(f"port {port} ({what}) is in use: set {what} to another port")
        kind = c.kafka
        if kind == "auto":
            kind = "apache" if servers.have_java() else "tansu"
        if kind == "tansu":
            self.say("!! Kafka: Tansu (no Java here): memory-only — topics and messages vanish on "
                     "restart — and no idempotent producer. Install Java 17 + Maven for Apache Kafka.")
        else:
            self.say(f"Kafka: Apache Kafka {servers.KAFKA_VERSION} (KRaft) from its Maven Central jars")
        self.kafka = servers.start_kafka(kind, c.run_dir / "kafka", port=c.kafka_port)
        self.say(f"  kafka ready at {self.kafka.bootstrap} (pid {self.kafka.pid})")
        self.mongo = servers.SecantusMongo(
            name="secantusdb", log_path=c.run_dir / "logs" / "mongo.log", data_dir=c.run_dir / "mongo",
            port=c.mongo_port,
        ).start()
        self.say(f"  MongoDB (SecantusDB, dev/test only) ready at {self.mongo.uri} (pid {self.mongo.pid})")
        import asyncio

        created = asyncio.run(create_topics(self.kafka.bootstrap, progress=lambda m: self.say("  " + m)))
        self.say(f"  topics: {len(created)} created, the rest already there")

    # --- services ---------------------------------------------------------------------------

    def service_env(self, secret: str) -> dict[str, str]:
        c = self.config
        assert self.kafka is not None and self.mongo is not None
        return {
            "IM_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "IM_KAFKA_IDEMPOTENCE": "true" if getattr(self.kafka, "idempotence", True) else "false",
            "IM_MONGO_URI": self.mongo.uri,
            "IM_MONGO_DB": os.environ.get("IM_MONGO_DB", "helpdesk_im"),
            "IM_JWT_SECRET": secret,
            "IM_API_PORT": str(c.api_port),
            "IM_STREAM_PORT": str(c.stream_port),
            "IM_DELIVERY_WORKER_PORT": str(c.worker_port),
            "IM_PRESENCE_PORT": str(c.presence_port),
            "IM_API_STREAM_PUBLIC_URL": f"ws://{c.host}:{c.stream_port}/v1/stream",
            "IM_DELIVERY_GATEWAY_ID": "gateway-1",
            # The console, served by im-api from this origin, with the development sign-in:
            # for trying it on this machine only (compose and Kubernetes never set these).
            "IM_API_CONSOLE_DIR": str(CONSOLE_DIST),
            "IM_API_DEV_SIGNIN": "true",
            "IM_DELIVERY_ALLOWED_ORIGINS": f"http://{c.host}:{c.api_port},http://localhost:{c.api_port}",
            # The notifier: email to a mail catcher on this machine, links into this console, and
            # webhooks to a receiver on this machine allowed (development only: plain http, loopback).
            "IM_NOTIFIER_PORT": str(c.notifier_port),
            "IM_NOTIFIER_SMTP_HOST": c.host,
            "IM_NOTIFIER_SMTP_PORT": str(c.smtp_port),
            "IM_NOTIFIER_SMTP_SECURITY": "none",
            "IM_NOTIFIER_THREAD_URL_TEMPLATE": f"http://{c.host}:{c.api_port}/console/#/im/{{conversation_id}}",
            "IM_WEBHOOK_ALLOW_HTTP": "true",
            "IM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        }

    def start_services(self, secret: str) -> None:
        c = self.config
        self.env = self.service_env(secret)
        plan = [
            ("presence", ["-m", "im_presence"], c.presence_port),
            ("delivery-worker", ["-m", "im_delivery.worker"], c.worker_port),
            ("delivery-gateway", ["-m", "im_delivery.gateway"], c.stream_port),
            ("im-api", ["-m", "im_api"], c.api_port),
            ("notifier", ["-m", "im_notifier"], c.notifier_port),
        ]
        for name, argv, port in plan:
            proc = _PythonService(name=name, log_path=c.run_dir / "logs" / f"{name}.log")
            proc.launch(argv, self.env)
            self.services.append((name, proc, f"http://{c.host}:{port}/readyz"))
        for name, proc, url in self.services:
            self.wait_ready(name, proc, url)
            self.say(f"  {name} ready ({url.removesuffix('/readyz')}, pid {proc.pid})")

    def wait_ready(self, name: str, proc: servers.ChildServer, url: str) -> None:
        try:
            wait_ready_blocking(url, self.config.ready_timeout_s, alive=proc.alive, interval=0.1)
        except NotReady as exc:
            raise servers.ServerError(f"{name}: {exc}\n{proc.tail()}") from None

    def stop(self) -> None:
        for name, proc, _ in reversed(self.services):
            self.say(f"stopping {name} (pid {proc.pid})")
            proc.stop()
        self.services.clear()
        for server in (self.mongo, self.kafka):
            if server is not None:
                self.say(f"stopping {server.name} (pid {server.pid})")
                server.stop()
        self.mongo = self.kafka = None


class _PythonService(servers.ChildServer):
    def launch(self, argv: list[str], env: dict[str, str]) -> None:
        self._spawn([sys.executable, *argv], env=env)


def banner(config: LaunchConfig, secret_from_env: bool) -> str:
    c = config
    secret_hint = "$IM_JWT_SECRET" if secret_from_env else f"$(cat {c.run_dir / DEV_SECRET_FILE})"
    console = (f"http://{c.host}:{c.api_port}/console/   (development sign-in: pick a tenant and an agent)"
               if (CONSOLE_DIST / "index.html").is_file() else "not built: run `make console`, then restart")
    return f"""
Helpdesk IM is up.
  Agent console   {console}
  HTTP API        http://{c.host}:{c.api_port}        (docs: http://{c.host}:{c.api_port}/docs)
  WebSocket       ws://{c.host}:{c.stream_port}/v1/stream
  Kafka           {c.host}:{c.kafka_port}
  MongoDB         mongodb://{c.host}:{c.mongo_port}/?directConnection=true
  Notifier        email to SMTP {c.host}:{c.smtp_port} (a mail catcher: README "Notifications")
  logs            {c.run_dir / 'logs'}

Mint dev tokens:
  ADMIN=$(IM_JWT_SECRET={secret_hint} .venv/bin/imctl token --tenant acme --agent root --role admin)
  ALICE=$(IM_JWT_SECRET={secret_hint} .venv/bin/imctl token --tenant acme --agent alice)
Then follow README "Try it by hand". Ctrl-C stops everything.
"""


def up(config: LaunchConfig, say=print, stop_event: threading.Event | None = None) -> int:
    stack = Stack(config, say)
    stop_event = stop_event or threading.Event()

    def on_signal(signum, _frame) -> None:
        stop_event.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        secret = dev_secret(config.run_dir, say)
        stack.start_brokers()
        stack.start_services(secret)
        say(banner(config, bool(os.environ.get("IM_JWT_SECRET"))))
        while not stop_event.wait(1.0):
            for name, proc, _ in stack.services:
                if not proc.alive():
                    say(f"!! {name} exited; see {proc.log_path}")
                    stop_event.set()
        return 0
    except servers.ServerError as exc:
        say(f"error: {exc}")
        return 1
    finally:
        stack.stop()
        for s, handler in old.items():
            signal.signal(s, handler)

