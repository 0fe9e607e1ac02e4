"""The Prometheus configuration, alert rules and Grafana dashboard under deploy/monitoring/ name
only series the services really export, and cover every metric the operating guide names."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

pytestmark = pytest.mark.unit
MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
SERIES = re.compile(r"\b(im_[a-z_]+)\b")


def exported_series() -> set[str]:
    """Every series name the services register (importing each module registers its metrics)."""
    for package in ("im_runtime", "im_api", "im_delivery", "im_presence", "im_notifier"):
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    return set(REGISTRY._names_to_collectors)  # includes _total/_bucket/_count/_sum forms


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((MONITORING / "helpdesk-im-alerts.yml").read_text())
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


def test_dashboard_and_alerts_name_only_series_the_services_export():
    exported = exported_series()
    used = {name for expr in [*dashboard_exprs(), *alert_exprs()] for name in SERIES.findall(expr)}
    assert used, "the dashboard queries Helpdesk IM series"
    assert used <= exported, f"unknown series: {sorted(used - exported)}"


def test_the_dashboard_covers_every_metric_operators_need():
    used = " ".join(dashboard_exprs())
    for needed in ("im_api_request_duration_seconds_bucket", "im_api_messages_accepted_total",
                   "im_api_outbox_published_total", "im_delivery_frames_sent_total", "im_api_outbox_backlog",
                   "im_api_outbox_oldest_age_seconds", "im_consumer_lag_records", "im_delivery_connections_open",
                   "im_presence_agents", "im_api_dead_letters_total", "im_delivery_dead_letters_total",
                   "im_presence_dead_letters_total", "im_notifier_dead_letters_total",
                   "im_notifier_notifications_total", "im_notifier_skipped_total",
                   "im_api_team_requests_offered_total", "im_api_team_requests_claimed_total",
                   "im_api_team_requests_escalated_total", "im_api_team_request_claim_seconds_bucket"):
        assert needed in used, needed


def test_prometheus_scrapes_annotated_pods_and_the_static_ports_and_loads_the_rules():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    pods = jobs["helpdesk-im-pods"]
    assert pods["kubernetes_sd_configs"] == [{"role": "pod"}]
    keep = [r for r in pods["relabel_configs"] if r.get("action") == "keep"]
    assert {r["source_labels"][0] for r in keep} == {"__meta_kubernetes_pod_label_app_kubernetes_io_part_of",
                                                     "__meta_kubernetes_pod_annotation_prometheus_io_scrape"}
    targets = {t for group in jobs["helpdesk-im-static"]["static_configs"] for t in group["targets"]}
    assert targets == {"127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003", "127.0.0.1:8004"}
    assert config["rule_files"] == ["helpdesk-im-alerts.yml"]
    # Every alert points at a runbook section that exists in the README.
    readme = (MONITORING.parents[1] / "README.md").read_text().lower()
    rules = yaml.safe_load((MONITORING / "helpdesk-im-alerts.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"#### {anchor.replace('-', ' ')}" in readme, anchor
