"""The benchmark's pictures, from a run's JSON: `python -m bench.charts RESULT.json [OUT_DIR]`
(`bench.run` draws them after every run, beside the JSON).

- `<stem>-latency.png`: end-to-end p50 and p99 against the offered rate (the step search's steps,
  the fixed-rate scenario and the lone message), with the 250 ms line and the same run's
  single-transaction ceiling;
- `<stem>-per-message.png`: where one delivered message's CPU goes (by process) and its database
  commands (by service, split by command and collection), in the throughput scenario.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

P99_LINE_MS = 250.0
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def latency_points(scenarios: dict[str, Any]) -> list[tuple[float, float, float, str]]:
    """(offered msg/s, p50 ms, p99 ms, which scenario) for every open-loop measurement of the run."""
    points = []
    for step in (scenarios.get("latency_search") or {}).get("steps", []):
        lat = step.get("latency") or {}
        if step.get("rate") and lat.get("n"):
            points.append((float(step["rate"]), lat["p50_ms"], lat["p99_ms"], "step search"))
    fixed = scenarios.get("latency") or {}
    if fixed.get("offered_per_s") and (fixed.get("latency") or {}).get("n"):
        points.append((float(fixed["offered_per_s"]), fixed["latency"]["p50_ms"], fixed["latency"]["p99_ms"],
                       "fixed rate"))
    lone = scenarios.get("lone") or {}
    if (lone.get("latency") or {}).get("n") and lone.get("accepted_per_s"):
        points.append((float(lone["accepted_per_s"]), lone["latency"]["p50_ms"], lone["latency"]["p99_ms"],
                       "lone message"))
    return sorted(points)


def draw_latency(scenarios: dict[str, Any], out: Path) -> Path | None:
    points = latency_points(scenarios)
    if not points:
        return None
    ceiling = ((scenarios.get("baselines") or {}).get("mongo") or {}).get("single_transaction_ceiling_per_s")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    steps = [p for p in points if p[3] == "step search"]
    if steps:
        ax.plot([p[0] for p in steps], [p[1] for p in steps], "o-", color=COLOURS[0], label="p50 (step search)")
        ax.plot([p[0] for p in steps], [p[2] for p in steps], "s-", color=COLOURS[1], label="p99 (step search)")
    for marker, kind in (("D", "fixed rate"), ("^", "lone message")):
        for rate, p50, p99, which in points:
            if which == kind:
                ax.plot([rate], [p50], marker, color=COLOURS[0], markersize=8)
                ax.plot([rate], [p99], marker, color=COLOURS[1], markersize=8)
                ax.annotate(kind, (rate, p99), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.axhline(P99_LINE_MS, color=COLOURS[3], linestyle="--", linewidth=1, label="250 ms")
    if ceiling:
        ax.axvline(float(ceiling), color=COLOURS[7], linestyle=":", linewidth=1.2,
                   label=f"single-transaction ceiling ({float(ceiling):.0f}/s)")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (messages/s)")
    ax.set_ylabel("send → recipient's frame (ms, log)")
    ax.set_title("End-to-end latency against offered rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def command_split(scenario: dict[str, Any], top: int = 6) -> dict[str, dict[str, float]]:
    """Per service: its commands per delivered message by "command collection", the `top` biggest
    kept and the rest summed as "other"."""
    delivered = scenario.get("delivered") or 0
    split: dict[str, dict[str, float]] = {}
    if not delivered:
        return split
    for service, counts in (scenario.get("db_commands_by_service") or {}).items():
        ordered = sorted(((what, n / delivered) for what, n in counts.items()), key=lambda x: -x[1])
        kept = dict(ordered[:top])
        rest = sum(n for _, n in ordered[top:])
        if rest:
            kept["other"] = rest
        split[service] = kept
    return split


def draw_per_message(scenarios: dict[str, Any], out: Path, scenario: str = "throughput") -> Path | None:
    sc = scenarios.get(scenario) or {}
    per = sc.get("per_message") or {}
    cpu = per.get("cpu_ms") or {}
    if not cpu:
        return None
    split = command_split(sc)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    names = sorted(cpu, key=lambda n: -cpu[n])
    left.barh(names, [cpu[n] for n in names], color=COLOURS[0])
    for i, n in enumerate(names):
        left.annotate(f"{cpu[n]:.2f}", (cpu[n], i), textcoords="offset points", xytext=(3, -3), fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("CPU ms per delivered message")
    left.set_title(f"CPU by process ({per.get('cpu_ms_total', sum(cpu.values())):.1f} ms in all)")
    services = sorted(split, key=lambda s: -sum(split[s].values()))
    if services:
        bottoms = [0.0] * len(services)
        for i, service in enumerate(services):
            for j, (what, n) in enumerate(split[service].items()):
                right.barh([i], [n], left=[bottoms[i]], color=COLOURS[j % len(COLOURS)], edgecolor="white",
                           linewidth=0.5)
                if n >= 0.15:  # wide enough to carry its name
                    right.text(bottoms[i] + n / 2, i, what.replace(" ", "\n", 1), ha="center", va="center",
                               fontsize=6)
                bottoms[i] += n
            right.annotate(f"{bottoms[i]:.2f}", (bottoms[i], i), textcoords="offset points", xytext=(3, -3),
                           fontsize=8)
        right.set_yticks(range(len(services)), services)
        right.invert_yaxis()
    right.set_xlabel(f"database commands per delivered message ({per.get('db_ops')} at the server)")
    right.set_title("Database commands by service (command, collection)")
    fig.suptitle(f"Where one delivered message goes ({scenario} scenario, "
                 f"{sc.get('sustained_delivered_per_s', '?')} msg/s)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def draw(result_path: Path, out_dir: Path | None = None) -> list[Path]:
    run = json.loads(result_path.read_text())
    out_dir = out_dir or result_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_path.stem
    drawn = [draw_latency(run["scenarios"], out_dir / f"{stem}-latency.png"),
             draw_per_message(run["scenarios"], out_dir / f"{stem}-per-message.png")]
    return [p for p in drawn if p is not None]


if __name__ == "__main__":
    for path in draw(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(path)
