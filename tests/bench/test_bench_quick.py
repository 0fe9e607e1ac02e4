"""`make bench ARGS=--quick` against the session's servers: every scenario runs end to end through
the real services and reports numbers (the benchmark cannot rot between full runs).

A smoke test of the harness, not a performance assertion: it fails when the harness is broken (a
scenario errors, a figure is missing or not a number, a message is lost), never because the
machine was slow that minute. Its bounds only stop a harness that hangs."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.bench]  # the whole stack, as `make bench` starts it

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("baselines", "idle", "lone", "scale_out", "latency", "latency_search", "throughput", "catch_up", "console", "fan_in")


def number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# A cold first run on a busy 2-core machine took ~150 s; the bound is for a hang, not for speed.
HANG_BOUND_S = 900


@pytest.mark.timeout(HANG_BOUND_S + 90)
def test_quick_benchmark_reports_every_scenario_with_numeric_figures(endpoints, kafka_bootstrap, mongo_uri,
                                                                     tmp_path):
    out = tmp_path / "quick.json"
    env = {**os.environ, "IM_KAFKA_IDEMPOTENCE": "true" if endpoints.kafka_idempotence else "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--quick", "--kafka", kafka_bootstrap, "--mongo", mongo_uri,
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=HANG_BOUND_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the run stops every process it started, by pid
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"bench --quick did not finish in {HANG_BOUND_S} s (a hung harness):\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]

    result = json.loads(out.read_text())
    scenarios = result["scenarios"]
    assert set(SCENARIOS) <= set(scenarios), output[-2000:]
    for name in SCENARIOS:
        assert "error" not in scenarios[name], f"{name}: {scenarios[name].get('error')}"

    base = scenarios["baselines"]
    assert all(number(x) and x > 0 for x in (base["floor"]["p50_ms"], base["floor"]["p99_ms"],
                                             base["mongo"]["single_transaction_ceiling_per_s"],
                                             base["mongo"]["queue_read"]["docs_per_s"]))
    latency = scenarios["latency"]
    assert latency["accepted"] == latency["sent"] > 0 and latency["missing"] == 0
    assert number(latency["latency"]["p50_ms"]) and latency["latency"]["p99_ms"] >= latency["latency"]["p50_ms"] > 0
    assert scenarios["latency_search"]["steps"] and number(scenarios["latency_search"]["max_rate_p99_under_250ms"])
    throughput = scenarios["throughput"]
    assert throughput["delivered"] == throughput["accepted"] > 0 and throughput["sustained_delivered_per_s"] > 0
    catch_up = scenarios["catch_up"]
    assert catch_up["received"] == catch_up["expected"] > 0 and catch_up["msgs_per_s"] > 0
    scale_out = scenarios["scale_out"]
    assert scale_out["delivered"] == scale_out["accepted"] > 0 and scale_out["duplicates"] == 0
    assert all(held > 0 for held in scale_out["outbox_shards_held"]), scale_out["outbox_shards_held"]
    assert {"im-api-2", "delivery-worker-2", "delivery-gateway-2", "presence-2"} <= set(scale_out["cores_by_process_under_load"])
    lone = scenarios["lone"]
    assert lone["accepted"] == lone["sent"] == lone["delivered"] > 0 and lone["duplicates"] == 0
    assert lone["latency"]["p50_ms"] >= lone["http"]["p50_ms"] > 0
    idle = scenarios["idle"]
    assert number(idle["stack_cores"]) and idle["stack_cores"] >= 0 and idle["servers_alone_cores"] >= 0
    assert set(idle["cores_by_process"]) >= {"im-api", "delivery-worker", "delivery-gateway", "presence"}
    assert len(catch_up["replays"]) == 2 and all(r["received"] == catch_up["expected"] for r in catch_up["replays"])
    fan_in = scenarios["fan_in"]
    assert fan_in["sockets"] == fan_in["asked"] > 0 and number(fan_in["kib_per_socket"])
    assert fan_in["probe"]["delivered"] == fan_in["probe"]["accepted"] > 0
    assert number(fan_in["idle_stack_cores"]) and fan_in["idle_cores_by_process"]
    console = scenarios["console"]
    assert console["threads"] > 0 and number(console["paint_ms"]["p50"]) and console["paint_ms"]["p50"] > 0
    assert all(console[k]["frames"] > 0 for k in ("list_scroll", "history_scroll_loading", "history_fling_loaded"))
    assert number(console["idle"]["console_cores"]) and number(console["idle"]["blank_page_cores"])
    # Every target row carries the product figure as a number and a verdict or "reported".
    # The pictures RESULTS.md shows, drawn beside the JSON.
    for chart in ("latency", "per-message"):
        png = tmp_path / f"quick-{chart}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} not drawn:\n{output[-2000:]}"
    assert len(result["targets"]) >= 8
    assert all(number(row["value"]) for row in result["targets"])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.timeout(400)
def test_a_terminated_benchmark_stops_every_server_and_service_it_started(tmp_path):
    """SIGTERM (what `timeout` or a CI cancel sends) mid-run: our own Kafka, SecantusDB and the five
    service processes are stopped by their pids, and the run says so."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "bench.run", "--quick", "--only", "throughput", "--out", str(tmp_path / "q.json"),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("IM_BENCH_")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: list[int] = []
    lines: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            found = re.search(r"\bpid (\d+)", line)
            if found and ("ours" in line or "ready" in line):
                pids.append(int(found.group(1)))
            if "[bench] throughput ..." in line:
                break
        else:
            pytest.fail("the run ended before its scenario started:\n" + "".join(lines[-40:]))
        # Kafka, SecantusDB, presence, delivery-worker, delivery-gateway, im-api, notifier.
        assert len(pids) == 7 and all(alive(p) for p in pids), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed assertion above: still stop it the way under test, not SIGKILL
            proc.send_signal(signal.SIGTERM)  # (a SIGKILL would orphan its servers)
            try:
                proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 130, rest[-3000:]
    assert "interrupted; every process it started is stopped" in rest
    assert [p for p in pids if alive(p)] == [], "still running after the run ended:\n" + rest[-3000:]
