"""The system under test: Kafka + SecantusDB (our own on free loopback ports, or given endpoints)
and the services, started by imctl's launcher code; every process is stopped by its pid."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from imctl import launcher, servers
from imctl.tokens import mint
from imctl.topics import create_topics


@dataclass
class Endpoints:
    bootstrap: str
    mongo_uri: str
    kafka_kind: str  # apache | tansu | given
    idempotence: bool = True
    owned: list = field(default_factory=list)  # servers we started (stopped at the end)

    def stop(self) -> None:
        for server in reversed(self.owned):
            server.stop()
        self.owned.clear()


def given_endpoints(bootstrap: str | None, mongo_uri: str | None) -> tuple[str | None, str | None]:
    """--kafka/--mongo, else IM_BENCH_KAFKA_BOOTSTRAP / IM_BENCH_MONGO_URI (never the shared dev
    servers by accident: IM_TEST_* is not read here, the test passes its endpoints explicitly)."""
    return (bootstrap or os.environ.get("IM_BENCH_KAFKA_BOOTSTRAP") or None,
            mongo_uri or os.environ.get("IM_BENCH_MONGO_URI") or None)


def start_endpoints(workdir: Path, bootstrap: str | None, mongo_uri: str | None, say=print,
                    mongo_options: str = "") -> Endpoints:
    """Given endpoints as they are; the missing ones started here (Apache Kafka when Java is present)."""
    ep = Endpoints(bootstrap or "", mongo_uri or "", "given",
                   idempotence=os.environ.get("IM_KAFKA_IDEMPOTENCE", "true") != "false")
    try:
        if not bootstrap:
            kafka = servers.start_kafka("auto", workdir / "kafka")
            ep.owned.append(kafka)
            ep.bootstrap, ep.kafka_kind, ep.idempotence = kafka.bootstrap, kafka.kind, kafka.idempotence
            say(f"[bench] Kafka: {kafka.kind} at {kafka.bootstrap} (pid {kafka.pid}, ours)")
        else:
            say(f"[bench] Kafka: given at {bootstrap}")
        if not mongo_uri:
            mongo = servers.SecantusMongo(name="secantusdb", log_path=workdir / "mongo.log",
                                          data_dir=workdir / "mongo", port=servers.free_port()).start()
            ep.owned.append(mongo)
            ep.mongo_uri = mongo.uri + (("&" if "?" in mongo.uri else "?") + mongo_options if mongo_options else "")
            say(f"[bench] MongoDB: SecantusDB at {ep.mongo_uri} (pid {mongo.pid}, ours)")
        else:
            say(f"[bench] MongoDB: given at {mongo_uri}")
    except BaseException:
        ep.stop()
        raise
    return ep


class BenchStack(launcher.Stack):
    """`imctl up`'s Stack on free ports, with this run's own topic prefix, database and consumer
    groups (so a shared broker's other members never stall us), and extra gateways on demand."""

    def __init__(self, workdir: Path, endpoints: Endpoints, log_level: str, say=print) -> None:
        ports = {name: servers.free_port() for name in ("api", "stream", "worker", "presence", "notifier")}
        config = launcher.LaunchConfig(run_dir=workdir, api_port=ports["api"], stream_port=ports["stream"],
                                       worker_port=ports["worker"], presence_port=ports["presence"],
                                       notifier_port=ports["notifier"])
        super().__init__(config, say)
        self.endpoints = endpoints
        self.log_level = log_level
        self.prefix = f"bench{uuid.uuid4().hex[:8]}."
        self.db_name = f"bench_{uuid.uuid4().hex[:8]}"
        self.secret = secrets.token_urlsafe(32)
        self.api_url = f"http://127.0.0.1:{config.api_port}"
        self.stream_url = f"ws://127.0.0.1:{config.stream_port}/v1/stream"

    def service_env(self, secret: str) -> dict[str, str]:
        c, p = self.config, self.prefix
        return {
            "IM_KAFKA_BOOTSTRAP": self.endpoints.bootstrap,
            "IM_KAFKA_IDEMPOTENCE": "true" if self.endpoints.idempotence else "false",
            "IM_MONGO_URI": self.endpoints.mongo_uri,
            "IM_MONGO_DB": self.db_name,
            "IM_TOPIC_PREFIX": p,
            "IM_JWT_SECRET": secret,
            "IM_LOG_LEVEL": self.log_level,
            # SecantusDB answers the driver's heartbeat late when saturated (one Python process, a
            # thread per client): past the 3 s default the driver marks it unknown and drops every
            # pooled connection mid-request. A benchmark saturates it on purpose (RESULTS.md).
            "IM_MONGO_CONNECT_TIMEOUT_S": "30",
            "IM_API_PORT": str(c.api_port),
            "IM_STREAM_PORT": str(c.stream_port),
            "IM_DELIVERY_WORKER_PORT": str(c.worker_port),
            "IM_PRESENCE_PORT": str(c.presence_port),
            "IM_NOTIFIER_PORT": str(c.notifier_port),
            "IM_API_STREAM_PUBLIC_URL": self.stream_url,
            "IM_DELIVERY_GATEWAY_ID": "bench-gw-1",
            "IM_DELIVERY_FANOUT_GROUP": f"{p}fanout", "IM_DELIVERY_QUEUE_GROUP": f"{p}queue",
            "IM_DELIVERY_GATEWAYS_GROUP": f"{p}gateways", "IM_PRESENCE_CONSUMER_GROUP": f"{p}presence",
            "IM_API_ASSISTANCE_GROUP": f"{p}assistance",
            "IM_NOTIFIER_THREADS_GROUP": f"{p}notifier-threads", "IM_NOTIFIER_AGENTS_GROUP": f"{p}notifier-agents",
            # The console scenario: im-api serves the built console, the gateway lets its page in.
            "IM_API_CONSOLE_DIR": str(launcher.CONSOLE_DIST),
            "IM_DELIVERY_ALLOWED_ORIGINS": f"http://127.0.0.1:{c.api_port}",
            # The scenarios measure what the pipeline serves, so the rate limits are off (0):
            # they would measure the limits instead. A scenario that needs them sets its own.
            **{f"IM_API_{what}_RATE_PER_{who}": "0" for what in ("SEND", "TICKET") for who in ("AGENT", "TENANT")},
            "IM_DELIVERY_CLIENT_FRAME_RATE_PER_AGENT": "0", "IM_DELIVERY_CLIENT_FRAME_RATE_PER_TENANT": "0",
        }

    async def start(self) -> None:
        await create_topics(self.endpoints.bootstrap, self.prefix)
        await asyncio.to_thread(self.start_services, self.secret)

    def pid(self, name: str) -> int:
        return next(proc.pid for n, proc, _ in self.services if n == name)

    async def start_gateway(self, name: str, env: dict[str, str] | None = None) -> tuple[str, int]:
        """Another gateway process (its own id and port): (its stream URL, its pid)."""
        port = await self.start_extra(name, "im_delivery.gateway", "IM_STREAM_PORT",
                                      {"IM_DELIVERY_GATEWAY_ID": name, **(env or {})})
        return f"ws://127.0.0.1:{port}/v1/stream", self.pid(name)

    async def start_extra(self, name: str, module: str, port_env: str, env: dict[str, str] | None = None) -> int:
        """Another process of a service (`python -m module`) on a port of its own, in the same
        topics, database and consumer groups: its port, once it is ready."""
        port = servers.free_port()
        proc = launcher._PythonService(name=name, log_path=self.config.run_dir / "logs" / f"{name}.log")  # noqa: SLF001
        proc.launch(["-m", module], {**self.env, port_env: str(port), **(env or {})})
        url = f"http://127.0.0.1:{port}/readyz"
        self.services.append((name, proc, url))
        await asyncio.to_thread(self.wait_ready, name, proc, url)
        return port

    async def restart_api(self, env: dict[str, str]) -> int:
        """im-api again on its port with `env` over the stack's (e.g. rate limits on): stopped
        gracefully first, so its outbox leases pass to the new process at once; its new pid."""
        await asyncio.to_thread(self.stop_service, "im-api")
        proc = launcher._PythonService(name="im-api", log_path=self.config.run_dir / "logs" / "im-api.log")  # noqa: SLF001
        proc.launch(["-m", "im_api"], {**self.env, **env})
        url = f"http://{self.config.host}:{self.config.api_port}/readyz"
        self.services.append(("im-api", proc, url))
        await asyncio.to_thread(self.wait_ready, "im-api", proc, url)
        return proc.pid

    def stop_service(self, name: str) -> None:
        for entry in list(self.services):
            if entry[0] == name:
                entry[1].stop()
                self.services.remove(entry)

    def token(self, tenant: str, agent: str, role: str = "agent") -> str:
        return mint(self.secret, tenant, agent, role, ttl_s=4 * 3600)

    def http(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
