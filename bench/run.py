"""`make bench` / `python -m bench.run [--quick] [--out FILE]`: start Kafka + SecantusDB (ours, on
free loopback ports, unless --kafka/--mongo name servers) and the services, run every
scenario, print a table against the same-run baselines and targets, and write the JSON.

Scenarios: baselines, idle (the stack with nothing connected, against Kafka and MongoDB alone),
lone (sequential sends, one every 50 ms), throughput (closed loop, many tenants, several load
processes), catch_up (an offline agent's queue on connect, replayed three times), console,
tenant_fairness, latency (200 msg/s open loop), latency_search (highest rate with p99 < 250 ms),
scale_out (two processes of each service), fan_in (idle heartbeating sockets on one gateway
process, then a probe). The charts are drawn beside the JSON (bench/charts.py)."""

from __future__ import annotations

import argparse
import dataclasses
import asyncio
import json
import os
import platform
import signal
import threading
import sys
import tempfile
import time
import traceback

import httpx
from datetime import UTC, datetime
from pathlib import Path

from . import baselines
from .report import table, targets
from .scenarios import FULL, QUICK, Bench, cpu_seconds
from .stack import BenchStack, given_endpoints, start_endpoints

# The open-loop latency scenarios run last: a step past capacity leaves im-api a backlog of
# requests (their clients gave up) that would otherwise slow every scenario after it.
# The latency scenarios before fan-in: 10,000 sockets leave the directory and presence 10,000 agents
# bigger (and `quiet` waits out their disconnects before anything else is measured).
SCENARIOS = ("baselines", "idle", "lone", "throughput", "catch_up", "console", "tenant_fairness", "latency", "latency_search",
             "scale_out", "fan_in")
# Our own processes (the rest of the system under test is Kafka and MongoDB).
SERVICES = ("im-api", "delivery-worker", "delivery-gateway", "presence", "notifier")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# A scenario starts once the stack is back within this many cores of its own idle level.
SETTLE_MARGIN_CORES = 0.25


def machine() -> dict:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average": os.getloadavg()}


class CpuMeter:
    """CPU seconds each process of the system under test spent during one scenario."""

    def __init__(self, stack: BenchStack, endpoints) -> None:
        self.pids = {name: proc.pid for name, proc, _ in stack.services}
        self.pids.update({server.name: server.pid for server in endpoints.owned})
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def since(self) -> dict[str, float]:
        return {name: round(cpu_seconds(pid) - self.start[name], 2) for name, pid in self.pids.items()
                if cpu_seconds(pid) >= 0}


# Set on SIGTERM. asyncio turns the signal into a cancellation of the run, but Python 3.11's
# asyncio.wait_for (inside PyMongo, used by the scenarios) can drop a cancellation that lands as a
# call completes: the run then went on to the end and exited 0 (seen in CI). Checked between
# scenarios, so the run stops either way.
INTERRUPTED = threading.Event()


def stop_if_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


async def busy_cores(stack: BenchStack, endpoints, seconds: float = 2.0) -> float:
    """Cores the system under test (services, Kafka, MongoDB) used over `seconds`."""
    return sum((await cores_by_process(stack, endpoints, seconds)).values())


async def cores_by_process(stack: BenchStack | None, endpoints, seconds: float) -> dict[str, float]:
    """Cores each process of the system under test used over `seconds` (without a stack: the
    servers we started, on their own)."""
    pids = {server.name: server.pid for server in endpoints.owned}
    if stack is not None:
        pids.update({name: proc.pid for name, proc, _ in stack.services})
    start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    await asyncio.sleep(seconds)  # the measuring window itself
    elapsed = time.monotonic() - t0
    return {name: (cpu_seconds(pid) - start[name]) / elapsed for name, pid in pids.items() if cpu_seconds(pid) >= 0}


async def idle_floor(stack: BenchStack, endpoints, say, samples: int = 3) -> float:
    """What the freshly started, idle stack uses on its own (the lowest of a few 2 s windows): the
    level `quiet` waits for is relative to it, since an idle stack is not at zero (issue 15 saw
    0.27 cores) and a fixed threshold below that made every scenario wait out its whole bound."""
    floor = min([await busy_cores(stack, endpoints) for _ in range(samples)])
    say(f"[bench] the idle stack uses {floor:.2f} cores")
    return floor


async def quiet(stack: BenchStack, endpoints, say, idle_cores: float, timeout_s: float) -> float:
    """Waits until the system under test uses less than `idle_cores` over 2 s, so a scenario does
    not measure the previous one's aftermath (10,000 sockets closing make presence and the worker
    busy for minutes); seconds waited (bounded: a stack that stays busier still runs the scenario,
    and the wait is recorded beside it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        busy = await busy_cores(stack, endpoints)
        if busy < idle_cores:
            break
        say(f"  waiting for the system to settle: {busy:.2f} cores busy (settled below {idle_cores:.2f})")
    return round(time.monotonic() - t0, 1)


async def service_commands(stack: BenchStack) -> dict[str, dict[str, float]]:
    """`im_mongo_commands_total` by command from each service's /metrics: who spends the commands."""
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for service, _, ready_url in stack.services:
            try:
                text = (await http.get(ready_url.replace("/readyz", "/metrics"))).text
            except httpx.HTTPError:
                continue
            counts: dict[str, float] = {}
            for line in text.splitlines():
                if line.startswith("im_mongo_commands_total{"):
                    command = line.split('command="', 1)[1].split('"', 1)[0]
                    collection = line.split('collection="', 1)[1].split('"', 1)[0]
                    what = f"{command} {collection}".strip()
                    counts[what] = counts.get(what, 0.0) + float(line.rsplit(" ", 1)[1])
            out[service] = counts
    return out


def commands_between(before: dict, after: dict) -> dict[str, dict[str, float]]:
    return {name: {c: n - before.get(name, {}).get(c, 0) for c, n in counts.items()
                   if n - before.get(name, {}).get(c, 0)}
            for name, counts in after.items()}


async def db_ops_since(bench: Bench, start: dict | None) -> dict:
    """MongoDB opcounters (serverStatus) since `start`: every client of the server, ours included."""
    try:
        now = (await bench.mongo.admin.command("serverStatus"))["opcounters"]
    except Exception:  # noqa: BLE001 - a server without opcounters: not reported
        return {}
    if start is None:
        return dict(now)
    return {k: now[k] - start.get(k, 0) for k in now}


async def run(args: argparse.Namespace) -> dict:
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - the table goes to stdout
    scale = QUICK if args.quick else FULL
    if args.sockets:
        scale = dataclasses.replace(scale, fanin_sockets=args.sockets)
    if args.catchup:
        scale = dataclasses.replace(scale, catchup_messages=args.catchup)
    if args.console:
        threads, messages = (int(x) for x in args.console.split(","))
        scale = dataclasses.replace(scale, console_threads=threads, console_messages=messages)
    only = [s for s in (args.only.split(",") if args.only else SCENARIOS)]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="im-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"[bench] {'quick' if args.quick else 'full'} run; logs and load jobs in {workdir}")
    started = time.monotonic()
    out: dict = {"run": {"date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                         "command": " ".join(["python -m bench.run", *sys.argv[1:]]), "machine": machine(),
                         "workdir": str(workdir)},
                 "scenarios": {}}
    bootstrap, mongo_uri = given_endpoints(args.kafka, args.mongo)
    endpoints = await asyncio.to_thread(start_endpoints, workdir, bootstrap, mongo_uri, say, args.mongo_options)
    stack = None
    try:
        out["run"]["kafka"] = endpoints.kafka_kind
        # Kafka and MongoDB idle on their own (the lowest of three windows, after their start-up):
        # what the idle scenarios subtract. Only for servers this run started.
        servers_idle = None
        if endpoints.owned:
            await quiet(None, endpoints, say, 0.05, 10 if args.quick else 60)
            servers_idle = min([sum((await cores_by_process(None, endpoints, 2.0)).values()) for _ in range(3)])
            say(f"[bench] Kafka and MongoDB idle on their own use {servers_idle:.3f} cores")
            out["run"]["servers_idle_cores"] = round(servers_idle, 4)
        stack = BenchStack(workdir, endpoints, args.log_level, say)
        say(f"[bench] starting the services (topic prefix {stack.prefix}, database {stack.db_name})")
        await stack.start()
        bench = Bench(stack, workdir, scale, say, rate=args.rate)
        bench.servers_idle_cores = servers_idle
        bench.cores = lambda seconds: cores_by_process(stack, endpoints, seconds)
        # Settled: within a quarter core of what the idle stack uses on its own.
        floor = await idle_floor(stack, endpoints, say)
        settled = floor + SETTLE_MARGIN_CORES
        out["run"]["idle_floor_cores"] = round(floor, 3)
        bench.settle = lambda: quiet(stack, endpoints, say, settled, 10 if args.quick else 300)
        try:
            for name in only:
                stop_if_interrupted()
                settle_s = 0.0
                if name != "baselines":
                    settle_s = await quiet(stack, endpoints, say, settled, 10 if args.quick else 900)
                say(f"[bench] {name} ...")
                t0 = time.monotonic()
                cpu = CpuMeter(stack, endpoints)
                ops = await db_ops_since(bench, None)
                commands = await service_commands(stack)
                profiler = None
                if args.profile and name == args.profile_scenario:
                    from .profile import Profiler

                    pids = {n: stack.pid(n) for n in SERVICES}
                    if args.profile_db:
                        # SecantusDB is a Python process too (thread per client): sampling its
                        # threads costs ~half a core, so only on request.
                        pids.update({s.name: s.pid for s in endpoints.owned if s.kind == "secantus"})
                    profiler = Profiler(Path(args.profile), pids)
                    profiler.start()
                try:
                    if name == "baselines":
                        result = await baselines.measure(endpoints.bootstrap, endpoints.mongo_uri,
                                                         endpoints.idempotence, scale.baseline_n,
                                                         reads=scale.catchup_messages)
                    else:
                        result = await getattr(bench, name)()
                except Exception as exc:  # noqa: BLE001 - one scenario's failure is reported, the rest run
                    traceback.print_exc()
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                finally:
                    if profiler is not None:
                        out["profile"] = profiler.stop()
                result["elapsed_s"] = round(time.monotonic() - t0, 1)
                result["settled_before_s"] = settle_s
                out["scenarios"][name] = result
                # Written after every scenario: an interrupted run keeps what it measured.
                args.out_path.parent.mkdir(parents=True, exist_ok=True)
                args.out_path.write_text(json.dumps(out, indent=2, default=str))
                result["cpu_s"] = cpu.since()
                result["db_ops"] = await db_ops_since(bench, ops)
                result["db_commands_by_service"] = commands_between(commands, await service_commands(stack))
                delivered = result.get("delivered")
                if name in ("throughput", "lone") and delivered:
                    # What one delivered message costs each process: what bounds the rate on 2 cores.
                    result["per_message"] = {
                        "cpu_ms": {k: round(1000 * v / delivered, 2) for k, v in result["cpu_s"].items()},
                        "cpu_ms_total": round(1000 * sum(result["cpu_s"].values()) / delivered, 2),
                        "services_cpu_ms": round(1000 * sum(v for k, v in result["cpu_s"].items()
                                                            if k in SERVICES) / delivered, 2),
                        "db_ops": round(sum(result["db_ops"].values()) / delivered, 1) if result["db_ops"] else None,
                        "db_commands_by_service": {
                            name: round(sum(counts.values()) / delivered, 2)
                            for name, counts in result["db_commands_by_service"].items()}}
                out["scenarios"][name] = result
                stop_if_interrupted()
        finally:
            await bench.close()
    finally:
        if stack is not None:
            await asyncio.to_thread(stack.stop)
        await asyncio.to_thread(endpoints.stop)
    out["run"]["elapsed_s"] = round(time.monotonic() - started, 1)
    out["run"]["load_average_end"] = os.getloadavg()
    out["targets"] = targets(out["scenarios"], args.quick)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every scenario at small scale (< 2 minutes)")
    parser.add_argument("--out", help="JSON file (default bench/results/<date>[-quick].json)")
    parser.add_argument("--kafka", help="use this Kafka bootstrap instead of starting one (IM_BENCH_KAFKA_BOOTSTRAP)")
    parser.add_argument("--mongo", help="use this MongoDB URI instead of starting SecantusDB (IM_BENCH_MONGO_URI)")
    parser.add_argument("--mongo-options", default="retryWrites=false",
                        help="URI options for our own SecantusDB, services and baselines alike (default "
                             "retryWrites=false: SecantusDB prunes its retryable-write table in Python on "
                             "every write, ~2 ms once it holds 10,000 records; see RESULTS.md). '' for none")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(SCENARIOS)}")
    parser.add_argument("--rate", type=float, help="offered msg/s of the latency scenario (200; quick 50)")
    parser.add_argument("--sockets", type=int, help="idle sockets of the fan-in scenario (1..15000)")
    parser.add_argument("--catchup", type=int, help="messages queued for the catch-up scenario (10,000)")
    parser.add_argument("--console", metavar="THREADS,MESSAGES",
                        help="the console scenario's thread count and longest history (1000,10000)")
    parser.add_argument("--log-level", default="WARNING", help="the services' IM_LOG_LEVEL (default WARNING)")
    parser.add_argument("--workdir", help="where logs and load jobs go (default a new temp dir)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the services during --profile-scenario")
    parser.add_argument("--profile-scenario", default="throughput", choices=SCENARIOS[1:])
    parser.add_argument("--profile-db", action="store_true", help="also py-spy our SecantusDB (costly)")
    args = parser.parse_args()
    # SIGTERM (timeout, kill): stop like Ctrl-C, so every process we started is stopped by its pid.
    signal.signal(signal.SIGTERM, lambda *_: (INTERRUPTED.set(), signal.raise_signal(signal.SIGINT)))
    path = Path(args.out) if args.out else RESULTS_DIR / (
        datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "") + ".json")
    args.out_path = path
    try:
        result = asyncio.run(run(args))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: run()'s finally blocks stopped every process by its pid
        print(f"\n[bench] interrupted; every process it started is stopped. Partial JSON: {path}", file=sys.stderr)
        raise SystemExit(130) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    from .charts import draw  # matplotlib: loaded only once the run is over

    pictures = draw(path)
    print(table(result["scenarios"], result["targets"]))
    for picture in pictures:
        print(f"chart: {picture}")
    print(f"\n{'quick' if args.quick else 'full'} run in {result['run']['elapsed_s']} s; JSON: {path}")


if __name__ == "__main__":
    main()
