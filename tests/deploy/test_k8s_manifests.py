"""deploy/k8s: a kustomize base + an example overlay for the three services — checked as data
(no cluster here): probes, resources, HPAs, PodDisruptionBudgets, secrets from a Secret."""

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"
OVERLAY = BASE.parent / "overlays" / "example"
KUSTOMIZATION = yaml.safe_load((BASE / "kustomization.yaml").read_text())
DOCS = {name: yaml.safe_load((BASE / name).read_text()) for name in KUSTOMIZATION["resources"]}
DEPLOYMENTS = {d["metadata"]["name"]: d for d in DOCS.values() if d["kind"] == "Deployment"}
PORTS = {"im-api": 8000, "delivery-gateway": 8001, "delivery-worker": 8002, "presence": 8003}


def of_kind(kind: str) -> dict:
    return {d["metadata"]["name"]: d for d in DOCS.values() if d["kind"] == kind}


def test_the_base_lists_every_manifest_in_the_folder():
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == on_disk


@pytest.mark.parametrize("name", sorted(PORTS))
def test_each_service_has_probes_resources_and_its_secret_from_a_secret(name):
    pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"][0]["containerPort"] == PORTS[name]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    env = {e["name"]: e for e in container["env"]}
    assert "IM_JWT_SECRET" not in env, "production verifies tokens with public keys: nothing can mint one"
    if name in ("im-api", "delivery-gateway"):  # they alone pass stream tickets to each other
        assert env["IM_TICKET_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "helpdesk-im-secrets"
    else:
        assert not any("SECRET" in var for var in env), f"{name} verifies no token: it gets no secret"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 20
    template_labels = DEPLOYMENTS[name]["spec"]["template"]["metadata"]["labels"]
    assert DEPLOYMENTS[name]["spec"]["selector"]["matchLabels"].items() <= template_labels.items()


def test_im_api_and_delivery_scale_horizontally_and_every_service_has_a_disruption_budget():
    hpas = of_kind("HorizontalPodAutoscaler")
    assert {"im-api", "delivery-gateway", "delivery-worker"} <= set(hpas)
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in DEPLOYMENTS, name
        assert hpa["spec"]["minReplicas"] >= 2
    pdbs = of_kind("PodDisruptionBudget")
    assert set(pdbs) == set(DEPLOYMENTS)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"]["matchLabels"] == DEPLOYMENTS[name]["spec"]["selector"]["matchLabels"]


def test_gateways_get_a_stable_id_and_topics_and_indexes_are_created_by_jobs():
    container = DEPLOYMENTS["delivery-gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["IM_DELIVERY_GATEWAY_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    job = of_kind("Job")["helpdesk-im-topics"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["imctl", "topics", "create", "--acls"]
    migrate = of_kind("Job")["helpdesk-im-migrate"]
    assert migrate["spec"]["template"]["spec"]["containers"][0]["command"] == ["imctl", "migrate"]


def test_the_example_overlay_builds_on_the_base_and_keeps_the_secret_out_of_git():
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    assert overlay["secretGenerator"][0]["name"] == "helpdesk-im-secrets"
    assert "ticket-secret.txt" in (OVERLAY / ".gitignore").read_text()
    assert not (OVERLAY / "ticket-secret.txt").exists()
    assert of_kind("ConfigMap")["helpdesk-im-config"]["data"]["IM_JWKS_URL"].startswith("https://")


def test_network_policies_let_only_helpdesk_im_pods_reach_kafka_and_mongodb():
    policies = of_kind("NetworkPolicy")
    ours = {"app.kubernetes.io/part-of": "helpdesk-im"}
    for store, port in (("kafka", 9092), ("mongodb", 27017)):
        (policy,) = [p for p in policies.values()
                     if p["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": store}]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        sources = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
        assert ours in sources and all(s in (ours, {"app.kubernetes.io/name": store}) for s in sources)
        assert port in [p["port"] for p in rule["ports"]]
    # Every pod that talks to them carries the label the policies allow.
    for doc in [*DEPLOYMENTS.values(), *of_kind("Job").values()]:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert labels.items() >= ours.items(), doc["metadata"]["name"]


def test_credentials_come_from_the_secret_and_each_service_is_the_kafka_principal_its_acls_name():
    from imctl.acls import SERVICES, principal_name

    config = of_kind("ConfigMap")["helpdesk-im-config"]["data"]
    assert "IM_MONGO_URI" not in config, "the URI carries credentials: it lives in the Secret"
    assert config["IM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    workloads = {**{n: d for n, d in DEPLOYMENTS.items()}, **of_kind("Job")}
    for name, doc in workloads.items():
        env = {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["IM_MONGO_URI"]["valueFrom"]["secretKeyRef"]["name"] == "helpdesk-im-secrets", name
    for service in SERVICES:
        env = {e["name"]: e for e in DEPLOYMENTS[service]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["IM_KAFKA_USERNAME"]["value"] == principal_name(service)
        assert env["IM_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"kafka-password-{service}"
    topics_job = of_kind("Job")["helpdesk-im-topics"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e for e in topics_job["env"]}["IM_KAFKA_USERNAME"]["value"] == "helpdesk-im-admin"
