"""docker-compose.yml cannot run where there is no container engine, so it is checked here as
data: every service, image, port, healthcheck and the env the services need — it cannot rot."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {
    # compose service -> (console script, port env, container port)
    "im-api": ("im-api", "IM_API_PORT", 8000),
    "delivery-gateway": ("im-delivery-gateway", "IM_STREAM_PORT", 8001),
    "delivery-worker": ("im-delivery-worker", "IM_DELIVERY_WORKER_PORT", 8002),
    "presence": ("im-presence", "IM_PRESENCE_PORT", 8003),
}
NEEDED_ENV = ("IM_KAFKA_BOOTSTRAP", "IM_MONGO_URI", "IM_MONGO_DB")
VERIFIERS = {"im-api", "delivery-gateway"}  # the only services that verify tokens
BIND = "${IM_BIND_ADDRESS:-127.0.0.1}"


def console_scripts() -> set[str]:
    scripts = set()
    for pyproject in [*ROOT.glob("services/*/pyproject.toml"), ROOT / "deploy/imctl/pyproject.toml"]:
        scripts |= set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    return scripts


def test_kafka_runs_the_official_image_in_kraft_mode_with_a_healthcheck():
    kafka = SERVICES["kafka"]
    assert kafka["image"].endswith("apache/kafka:4.1.1}") or kafka["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:9093"
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "kafka-broker-api-versions" in " ".join(kafka["healthcheck"]["test"])
    assert kafka["restart"] == "unless-stopped"


def test_kafka_requires_scram_on_every_listener_a_client_can_reach_and_knows_each_principal():
    from imctl.acls import PRINCIPALS, principal_name

    kafka = SERVICES["kafka"]
    env = kafka["environment"]
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    for name, address in listeners.items():
        if name == "CONTROLLER":  # the broker's own controller, over the container's loopback only
            assert protocols[name] == "PLAINTEXT" and address.startswith("127.0.0.1:")
        else:
            assert protocols[name] == "SASL_PLAINTEXT", name
    assert kafka["entrypoint"] == ["/bin/sh", "/opt/helpdesk-im/kafka-entrypoint.sh"]
    assert "./deploy/kafka/entrypoint.sh:/opt/helpdesk-im/kafka-entrypoint.sh:ro" in kafka["volumes"]
    assert "--command-config /tmp/client.properties" in " ".join(kafka["healthcheck"]["test"])
    assert env["IM_KAFKA_ADMIN_USER"] == "helpdesk-im-admin"
    assert re.fullmatch(r"\$\{IM_KAFKA_ADMIN_PASSWORD:\?.+\}", env["IM_KAFKA_ADMIN_PASSWORD"]), "no default"
    users = dict(re.findall(r"(\S+)=(\$\{[^}]*\})", env["IM_KAFKA_SCRAM_USERS"]))
    assert set(users) == {principal_name(p) for p in PRINCIPALS}
    for principal in PRINCIPALS:
        variable = "IM_KAFKA_PASSWORD_" + principal.upper().replace("-", "_")
        assert re.fullmatch(rf"\$\{{{variable}:\?.+\}}", users[principal_name(principal)]), principal


def test_mongo_runs_as_a_one_node_replica_set_so_transactions_work():
    mongo = SERVICES["mongo"]
    assert "mongo:7" in mongo["image"]
    assert mongo["command"][:3] == ["mongod", "--replSet", "rs0"]
    check = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate" in check and "mongo:27017" in check


def test_mongo_requires_authentication_and_the_services_user_is_not_root():
    mongo = SERVICES["mongo"]
    command = mongo["command"]
    assert command[command.index("--keyFile") + 1] == "/data/db/helpdesk-im.keyfile"  # auth on a replica set
    env = mongo["environment"]
    assert env["MONGO_INITDB_ROOT_USERNAME"] == "root"
    assert re.fullmatch(r"\$\{IM_MONGO_ROOT_PASSWORD:\?.+\}", env["MONGO_INITDB_ROOT_PASSWORD"])
    assert env["IM_MONGO_USER"] == "helpdesk-im" and env["IM_MONGO_DB"] == "helpdesk_im"
    assert "./deploy/mongo/create-app-user.js:/docker-entrypoint-initdb.d/10-helpdesk-im-user.js:ro" in mongo["volumes"]
    assert "-u root" in " ".join(mongo["healthcheck"]["test"])
    script = (ROOT / "deploy/mongo/create-app-user.js").read_text()
    assert 'roles: [{role: "readWrite", db: database}]' in script
    for name, svc in SERVICES.items():
        if name not in ("kafka", "mongo"):
            assert "IM_MONGO_ROOT_PASSWORD" not in str(svc), f"{name} must not hold MongoDB's root password"


def test_topics_are_created_at_start_before_the_services():
    topics = SERVICES["topics"]
    assert topics["command"][:3] == ["imctl", "topics", "create"]
    for name in APP_SERVICES:
        assert SERVICES[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_each_service_is_built_from_the_one_dockerfile_with_health_restart_and_env(name):
    script, port_env, port = APP_SERVICES[name]
    svc = SERVICES[name]
    assert svc["build"]["dockerfile"] == "Dockerfile" and svc["build"]["context"] == "."
    assert svc["command"] == [script] and script in console_scripts()
    assert svc["restart"] == "unless-stopped"
    env = svc["environment"]
    for var in NEEDED_ENV:
        assert var in env, (name, var)
    assert env["IM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["IM_MONGO_URI"] == ("mongodb://helpdesk-im:${IM_MONGO_PASSWORD:?set IM_MONGO_PASSWORD}@mongo:27017/"
                                   "?replicaSet=rs0&authSource=admin")
    # Its own Kafka principal, and only its own password.
    assert env["IM_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["IM_KAFKA_USERNAME"] == f"helpdesk-im-{name}"
    variable = "IM_KAFKA_PASSWORD_" + name.upper().replace("-", "_")
    assert env["IM_KAFKA_PASSWORD"] == f"${{{variable}:?set {variable}}}"
    if name in VERIFIERS:
        assert re.fullmatch(r"\$\{IM_JWT_SECRET:\?.+\}", env["IM_JWT_SECRET"]), "no default secret"
    else:
        assert not any("SECRET" in var or "KEY" in var for var in env), "no secret where no token is verified"
    assert env[port_env] == str(port)
    assert f"127.0.0.1:{port}/readyz" in " ".join(svc["healthcheck"]["test"])
    for dep in ("kafka", "mongo"):
        assert svc["depends_on"][dep]["condition"] == "service_healthy"


def test_published_ports_are_the_documented_ones_on_loopback_unless_the_operator_opens_them():
    assert SERVICES["im-api"]["ports"] == [f"{BIND}:${{IM_API_PORT:-8000}}:8000"]
    assert SERVICES["delivery-gateway"]["ports"] == [f"{BIND}:${{IM_STREAM_PORT:-8001}}:8001"]
    test_only = yaml.safe_load((ROOT / "tests/compose/docker-compose.test.yml").read_text())["services"]
    for name, svc in [*SERVICES.items(), *test_only.items()]:
        for port in svc.get("ports", []):
            assert port.startswith(f"{BIND}:"), f"{name} publishes {port} on every interface"


def test_the_topics_job_and_the_services_that_verify_no_token_get_no_secret():
    assert not any("SECRET" in var for var in SERVICES["topics"]["environment"])


def test_the_topics_step_grants_the_acls_as_the_kafka_admin():
    topics = SERVICES["topics"]
    assert "--acls" in topics["command"]
    assert topics["environment"]["IM_KAFKA_USERNAME"] == "helpdesk-im-admin"
    assert topics["environment"]["IM_KAFKA_PASSWORD"] == "${IM_KAFKA_ADMIN_PASSWORD:?set IM_KAFKA_ADMIN_PASSWORD}"


def test_the_dockerfile_is_multi_stage_non_root_with_a_base_image_argument():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ${BASE_IMAGE}") == 2
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert re.search(r"^USER im$", text, re.M)
    for pkg in ("contracts", "services/runtime", "services/im-api", "services/delivery", "services/presence"):
        assert pkg in text


class _ComposeLoader(yaml.SafeLoader):
    """Understands compose's merge tags (!override, !reset) used by the offline override."""


_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node)
                               if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node))


def test_the_offline_override_only_swaps_images_for_ones_built_here():
    override = yaml.load((ROOT / "deploy/offline/docker-compose.offline.yml").read_text(), Loader=_ComposeLoader)
    services = override["services"]
    assert set(services) <= set(SERVICES), "the override adds no service"
    assert services["kafka"] == {"image": "helpdesk-im-test/kafka:4.1.1"}
    assert services["mongo"]["image"].startswith("helpdesk-im-test/secantusdb")
    for name in APP_SERVICES:
        svc = services[name]
        assert svc["image"].endswith("helpdesk-im-test/app:latest}")
        assert svc["build"]["args"]["BASE_IMAGE"] == "helpdesk-im-test/python-base:bookworm"
        assert set(svc["environment"]) == {"IM_MONGO_URI"}, "only what SecantusDB needs differs"
    for image in ("python-base", "kafka", "secantusdb"):
        assert (ROOT / f"deploy/offline/{image}.Dockerfile").exists()
