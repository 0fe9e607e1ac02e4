"""The benchmark scenarios: each sets up its own tenants through the public API, runs its load in
separate processes (`bench.load`) and returns its figures as a dict."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from .stack import BenchStack
from .stats import percentile, summary_ms

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Scale:
    """How big each scenario runs: `full` for RESULTS.md, `quick` for the smoke test (< 2 min)."""

    baseline_n: int
    latency_pairs: int  # conversations (sender -> recipient) the latency scenarios spread over
    latency_rate: float  # offered msg/s of the fixed-load latency scenario
    latency_s: float
    warmup_s: float
    search_rates: tuple[float, ...]
    search_s: float
    throughput_procs: int
    throughput_tenants: int  # per process
    throughput_pairs: int  # conversations per tenant
    throughput_concurrency: int  # requests in flight per process
    throughput_s: float
    fanin_sockets: int
    probe_s: float
    catchup_messages: int
    console_threads: int  # the console scenario: threads in the viewer's list
    console_messages: int  # ... and messages in the longest one
    console_scroll_s: float  # bound of each scroll measurement
    console_idle_s: float
    console_settle_s: float  # a freshly loaded console is left this long before its idle CPU is measured
    console_loads: int  # page loads timed for the paint
    fair_s: float = 20  # each measurement of the fairness scenario
    fair_tenant_rate: int = 15  # the flooding tenant's send limit (msg/s): well below capacity here
    fair_flood_concurrency: int = 64  # the flood's requests in flight (the measurement)
    lone_messages: int = 200  # the lone-message scenario: sequential sends ...
    lone_interval_s: float = 0.05  # ... one every this long
    idle_s: float = 20  # the idle scenario's measuring window
    catchup_replays: int = 3  # the catch-up replayed this often (its spread across replays)


FULL = Scale(baseline_n=500, latency_pairs=20, latency_rate=200, latency_s=20, warmup_s=2, search_rates=(25, 35, 50, 70, 100, 140, 200, 280, 400),
             search_s=8, throughput_procs=2, throughput_tenants=4, throughput_pairs=4, throughput_concurrency=48,
             throughput_s=20, fanin_sockets=10_000, probe_s=10, catchup_messages=10_000,
             console_threads=1_000, console_messages=10_000, console_scroll_s=12, console_idle_s=10, console_settle_s=5,
             console_loads=5)
# Quick: every code path at a load a busy shared dev machine still carries (its figures are not
# comparable with the targets, which only a full run evaluates).
QUICK = Scale(baseline_n=100, latency_pairs=3, latency_rate=50, latency_s=2, warmup_s=0.5, search_rates=(25, 50),
              search_s=1.5, throughput_procs=2, throughput_tenants=1, throughput_pairs=2, throughput_concurrency=4,
              throughput_s=2, fanin_sockets=100, probe_s=1.5, catchup_messages=200,
              console_threads=60, console_messages=150, console_scroll_s=1.5, console_idle_s=1, console_settle_s=1,
              console_loads=2, fair_s=2, fair_flood_concurrency=8, lone_messages=20, idle_s=2, catchup_replays=2)


class Bench:
    def __init__(self, stack: BenchStack, workdir: Path, scale: Scale, say=print, rate: float | None = None) -> None:
        self.stack, self.workdir, self.scale, self.say = stack, workdir, scale, say
        self.rate = rate or scale.latency_rate
        self.mongo: AsyncMongoClient = AsyncMongoClient(stack.endpoints.mongo_uri, tz_aware=True)
        self.db = self.mongo[stack.db_name]
        self.jobs = 0
        self.settle = None  # async callable: wait until the stack is idle (set by run.py)
        # async callable(seconds) -> {process: cores} of the system under test (set by run.py)
        self.cores = None
        self.servers_idle_cores = None  # Kafka + MongoDB idle on their own, before the services ran

    async def close(self) -> None:
        await self.mongo.close()

    # --- helpers ---------------------------------------------------------------------------------

    async def load(self, job: dict[str, Any], stdin_hold: bool = False) -> dict[str, Any]:
        """Runs one load process to completion; its result."""
        proc, log = await self.spawn(job)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), float(job.get("bound_s", 900)) + 60)
        finally:
            if proc.returncode is None:  # interrupted or timed out: the load stops with us
                proc.kill()
                await proc.wait()
        if proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"load process {job['kind']} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
        return json.loads(out.decode().strip().splitlines()[-1])

    async def spawn(self, job: dict[str, Any]) -> tuple[asyncio.subprocess.Process, Path]:
        self.jobs += 1
        path = self.workdir / f"job{self.jobs}-{job['kind']}.json"
        path.write_text(json.dumps(job))
        log = self.workdir / f"job{self.jobs}-{job['kind']}.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", str(path), cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=open(log, "wb"),
            env={**os.environ, "BENCH_JWT_SECRET": self.stack.secret})
        return proc, log

    async def agents(self, tenant: str, agent_ids: list[str]) -> None:
        """PUT /v1/agents/{id} as the tenant's admin, 16 at a time."""
        gate = asyncio.Semaphore(16)
        async with self.stack.http(self.stack.token(tenant, "root", "admin")) as http:

            async def put(agent: str) -> None:
                async with gate:
                    r = await http.put(f"/v1/agents/{agent}", json={"display_name": agent.upper()})
                    r.raise_for_status()

            await asyncio.gather(*(put(a) for a in agent_ids))

    async def pairs(self, tenant: str, n: int) -> list[dict[str, Any]]:
        """n conversations sender s<i> -> recipient r<i> in a new tenant, set up over HTTP."""
        st = self.stack
        async with st.http(st.token(tenant, "root", "admin")) as http:
            gate = asyncio.Semaphore(16)

            async def put(agent: str) -> None:
                async with gate:
                    r = await http.put(f"/v1/agents/{agent}", json={"display_name": agent.upper()})
                    r.raise_for_status()

            await asyncio.gather(*(put(f"{k}{i}") for i in range(n) for k in "sr"))
            convs = []
            for i in range(n):
                token = st.token(tenant, f"s{i}")
                r = await http.post("/v1/conversations", json={"participant_ids": [f"r{i}"]},
                                    headers={"Authorization": f"Bearer {token}"})
                r.raise_for_status()
                convs.append({"id": r.json()["id"], "sender": f"s{i}", "sender_token": token,
                              "recipient": f"r{i}", "recipient_token": st.token(tenant, f"r{i}")})
        # Gateways refuse agents their directory projection has not seen yet (AgentChanged via Kafka).
        await self.until(lambda: self.db.delivery_agents.count_documents({"tenant_id": tenant}), 2 * n, 60)
        return convs

    async def until(self, read, at_least: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            value = await read()
            if value >= at_least or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.1)

    async def drained(self, timeout: float = 300) -> float:
        """Waits until the previous step's backlog is worked off, so one overloaded step does not
        pollute the next: a send is answered within a second again AND it reached its recipient's
        queue within a second (the delivery side caught up too, not only im-api); seconds waited."""
        t0 = time.monotonic()
        st = self.stack
        tenant = "drain"
        if not getattr(self, "_drain_conv", None):
            self._drain_conv = (await self.pairs(tenant, 1))[0]
        conv = self._drain_conv
        queued = {"tenant_id": tenant, "agent_id": conv["recipient"], "frame.type": "message.created"}
        async with st.http(conv["sender_token"]) as http:
            while time.monotonic() - t0 < timeout:
                sent = time.monotonic()
                r = await http.post(f"/v1/conversations/{conv['id']}/messages",
                                    json={"body": "drain", "client_msg_id": f"drain-{sent}"}, timeout=timeout)
                if r.status_code != 201 or time.monotonic() - sent >= 1.0:
                    continue
                seq = r.json()["seq"]
                reached = await self.until(lambda: self.db.delivery_queue.count_documents(queued), seq,
                                           max(0.0, timeout - (time.monotonic() - t0)))
                if reached >= seq and time.monotonic() - sent < 1.0:
                    break
        return round(time.monotonic() - t0, 1)

    def traffic(self, convs, tag: str, **kw) -> dict[str, Any]:
        return {"kind": "traffic", "api": self.stack.api_url, "stream_url": self.stack.stream_url,
                "conversations": convs, "tag": tag, "settle_s": 30, **kw}

    # --- 1. end-to-end latency ---------------------------------------------------------------------

    async def latency(self, rate: float | None = None, duration: float | None = None, tag: str = "lat") -> dict[str, Any]:
        """POST -> recipient's frame at a fixed offered rate (open loop), over several conversations."""
        rate = rate or self.rate
        if tag == "lat":
            await self.drained()
        convs = await self.pairs(f"{tag}-{int(rate)}-{self.jobs}", self.scale.latency_pairs)
        result = await self.load(self.traffic(convs, f"{tag}{int(rate)}", mode="open", rate=rate,
                                              duration_s=duration or self.scale.latency_s,
                                              warmup_s=self.scale.warmup_s))
        self.say(f"  {rate:.0f} msg/s offered: e2e p50 {result['latency']['p50_ms']} ms, "
                 f"p99 {result['latency']['p99_ms']} ms, {result['delivered']}/{result['accepted']} delivered")
        return result

    async def latency_search(self) -> dict[str, Any]:
        """The highest offered rate whose p99 stays under 250 ms with everything delivered and the
        offered rate accepted (step search upwards, then one bisection between pass and fail)."""
        steps, best, failed_at = [], None, None

        def passes(r: dict[str, Any]) -> bool:
            return (r["latency"]["p99_ms"] < 250 and r["missing"] == 0 and r["accepted"] == r["sent"]
                    and r["accepted_per_s"] >= 0.95 * r["offered_per_s"])

        async def ready() -> None:
            """The previous step's backlog worked off, and the stack idle again."""
            await self.drained()
            if self.settle is not None:
                await self.settle()

        for rate in self.scale.search_rates:
            await ready()
            r = await self.latency(rate, self.scale.search_s, tag="step")
            steps.append({"rate": rate, "pass": passes(r), **_brief(r)})
            if not passes(r):
                failed_at = rate
                break
            best = {"rate": rate, **_brief(r)}
        rate = self.scale.search_rates[0]
        while best is None and rate > 12 and self.scale is not QUICK:
            # Even the first step failed: halve downwards until a rate passes.
            failed_at, rate = rate, rate / 2
            await ready()
            r = await self.latency(rate, self.scale.search_s, tag="step")
            steps.append({"rate": rate, "pass": passes(r), **_brief(r)})
            if passes(r):
                best = {"rate": rate, **_brief(r)}
        if best and failed_at and self.scale is not QUICK:
            mid = round((best["rate"] + failed_at) / 2)
            await ready()
            r = await self.latency(mid, self.scale.search_s, tag="step")
            steps.append({"rate": mid, "pass": passes(r), **_brief(r)})
            if passes(r):
                best = {"rate": mid, **_brief(r)}
        return {"max_rate_p99_under_250ms": best["rate"] if best else 0, "at_max": best,
                "first_failing_rate": failed_at, "steps": steps}

    # --- 2. throughput ---------------------------------------------------------------------------

    async def throughput(self) -> dict[str, Any]:
        """Closed loop: N requests in flight per load process, several processes, many tenants;
        sustained = delivered / (last delivery - first send), every accepted message checked."""
        s = self.scale
        jobs = []
        for p in range(s.throughput_procs):
            convs = []
            for t in range(s.throughput_tenants):
                convs += await self.pairs(f"tp{p}-{t}", s.throughput_pairs)
            jobs.append(self.traffic(convs, f"tp{p}", mode="closed", concurrency=s.throughput_concurrency,
                                     duration_s=s.throughput_s, samples=True,
                                     settle_s=30 if s is QUICK else 120))
        results = await asyncio.gather(*(self.load(j) for j in jobs))
        first = min(r["first_send"] for r in results)
        last = max(r["last_delivery"] for r in results)
        sends_done = max(r["sends_done"] for r in results)
        accepted = sum(r["accepted"] for r in results)
        delivered = sum(r["delivered"] for r in results)
        samples = [x for r in results for x in r.pop("samples")]
        out = {
            "processes": len(results), "tenants": s.throughput_procs * s.throughput_tenants,
            "conversations": s.throughput_procs * s.throughput_tenants * s.throughput_pairs,
            "in_flight": s.throughput_procs * s.throughput_concurrency,
            "accepted": accepted, "delivered": delivered, "missing": accepted - delivered,
            "duplicates": sum(r["duplicates"] for r in results),
            "non_201": sum(v for r in results for k, v in r["statuses"].items() if k != "201"),
            "accepted_per_s": round(accepted / (sends_done - first), 1),
            "sustained_delivered_per_s": round(delivered / (last - first), 1),
            "drain_s_after_last_send": round(last - sends_done, 2),
            "latency": summary_ms(samples), "per_process": results,
        }
        self.say(f"  {out['sustained_delivered_per_s']} msg/s delivered ({delivered}/{accepted}, "
                 f"{out['in_flight']} in flight), closed-loop p99 {out['latency']['p99_ms']} ms")
        return out

    # --- 2a. scale-out -------------------------------------------------------------------------------

    async def scale_out(self) -> dict[str, Any]:
        """A second process of each service against the same Kafka and MongoDB (same topics,
        database and consumer groups), then the throughput load through both: each load process
        sends through one im-api while its recipients listen on the OTHER gateway, so every
        message crosses processes. The same checks as throughput (every accepted message on its
        recipient's socket, none twice) and how the work spread over the processes."""
        s = self.scale
        extras = {"im-api-2": ("im_api", "IM_API_PORT", {}),
                  "delivery-worker-2": ("im_delivery.worker", "IM_DELIVERY_WORKER_PORT", {}),
                  "delivery-gateway-2": ("im_delivery.gateway", "IM_STREAM_PORT",
                                         {"IM_DELIVERY_GATEWAY_ID": "bench-gw-2"}),
                  "presence-2": ("im_presence", "IM_PRESENCE_PORT", {})}
        convs = [[], []]
        for p in range(2):
            for t in range(s.throughput_tenants):
                convs[p] += await self.pairs(f"so{p}-{t}", s.throughput_pairs)
        started: list[str] = []
        try:
            ports = {}
            for name, (module, port_env, env) in extras.items():
                ports[name] = await self.stack.start_extra(name, module, port_env, env)
                started.append(name)
            api2 = f"http://127.0.0.1:{ports['im-api-2']}"
            stream2 = f"ws://127.0.0.1:{ports['delivery-gateway-2']}/v1/stream"
            # Both relays hold a share of the outbox shards (the new one claims its share at its
            # next lease round); the new worker and presence are ready, so their groups rebalanced.
            shares = await self.until_shared([self.stack.api_url, api2])
            jobs = [self.traffic(convs[0], "so0", mode="closed", concurrency=s.throughput_concurrency,
                                 duration_s=s.throughput_s, samples=True, stream_url=stream2,
                                 settle_s=30 if s is QUICK else 120),
                    self.traffic(convs[1], "so1", mode="closed", concurrency=s.throughput_concurrency,
                                 duration_s=s.throughput_s, samples=True, api=api2,
                                 settle_s=30 if s is QUICK else 120)]
            loading = asyncio.gather(*(self.load(j) for j in jobs))
            cores = await self.cores(s.throughput_s) if self.cores is not None else {}
            results = await loading
        finally:
            for name in reversed(started):
                await asyncio.to_thread(self.stack.stop_service, name)
        first = min(r["first_send"] for r in results)
        last = max(r["last_delivery"] for r in results)
        accepted = sum(r["accepted"] for r in results)
        delivered = sum(r["delivered"] for r in results)
        samples = [x for r in results for x in r.pop("samples")]
        out = {"processes_per_service": 2, "accepted": accepted, "delivered": delivered,
               "missing": accepted - delivered, "duplicates": sum(r["duplicates"] for r in results),
               "non_201": sum(v for r in results for k, v in r["statuses"].items() if k != "201"),
               "sustained_delivered_per_s": round(delivered / (last - first), 1),
               "latency": summary_ms(samples), "outbox_shards_held": shares,
               "cores_by_process_under_load": {k: round(v, 3) for k, v in cores.items()},
               "per_process": results}
        self.say(f"  two of each: {out['sustained_delivered_per_s']} msg/s delivered ({delivered}/{accepted}, "
                 f"{out['duplicates']} twice), shards {shares}, cores {out['cores_by_process_under_load']}")
        return out

    async def until_shared(self, apis: list[str], timeout: float = 120) -> list[float]:
        """Waits until every im-api holds some outbox shards; how many each holds."""
        deadline = time.monotonic() + timeout
        while True:
            held = [await metric(api, "im_api_outbox_shards_held") for api in apis]
            if all(h > 0 for h in held) or time.monotonic() > deadline:
                return held
            await asyncio.sleep(0.2)

    # --- 2b. fairness between tenants ---------------------------------------------------------------

    async def tenant_fairness(self) -> dict[str, Any]:
        """Tenant B sends 5 msg/s to an agent whose socket is open; its send -> frame latency alone,
        then while tenant A floods (16 agents, requests in flight in a closed loop) with im-api's
        per-tenant send limit well below what the stack serves, and again with no limits. Target:
        B's p99 with the limited flood within 2x its p99 alone. The flood's senders wait out a
        429's Retry-After, as the JS client does (a client that ignores it attacks the HTTP front:
        per-address limits at the load balancer), and its 429s are reported."""
        s = self.scale
        b = await self.pairs(f"fair-b-{self.jobs}", 1)
        a = await self.pairs(f"fair-a-{self.jobs}", 16)

        def b_load(tag: str) -> dict[str, Any]:
            return self.traffic(b, tag, mode="open", rate=5, duration_s=s.fair_s, warmup_s=s.warmup_s)

        def flood(tag: str) -> dict[str, Any]:
            return self.traffic(a, tag, mode="closed", concurrency=s.fair_flood_concurrency,
                                duration_s=s.fair_s + 2 * s.warmup_s + 4, settle_s=60, honor_retry_after=True)

        # A burst of one second's worth: the flood's opening burst is over before B is measured.
        limited = {"IM_API_SEND_RATE_PER_TENANT": str(s.fair_tenant_rate),
                   "IM_API_SEND_BURST_PER_TENANT": str(s.fair_tenant_rate)}
        out: dict[str, Any] = {"b_rate_per_s": 5, "a_limit_per_s": s.fair_tenant_rate}
        try:
            await self.stack.restart_api(limited)
            await self.drained()
            async with self.db_probe() as probe:
                alone = await self.load(b_load("fairalone"))
            out["alone"] = _brief(alone)
            out["alone"]["db_probe"] = summary_ms(probe)
            for name, env in (("limited", None), ("unlimited", {})):
                if env is not None:
                    await self.stack.restart_api(env)
                await self.drained()
                flooding = asyncio.ensure_future(self.load(flood(f"fair{name}a")))
                await asyncio.sleep(s.warmup_s + 2)  # the flood under way, its opening burst worked off
                async with self.db_probe() as probe:
                    with_flood = await self.load(b_load(f"fair{name}b"))
                a_result = await flooding
                ratio = with_flood["latency"]["p99_ms"] / max(alone["latency"]["p99_ms"], 1e-3)
                db = summary_ms(probe)
                db_ratio = db["p99_ms"] / max(out["alone"]["db_probe"]["p99_ms"], 1e-3)
                out[name] = {"b": _brief(with_flood), "a_accepted_per_s": a_result.get("accepted_per_s"),
                             "a_statuses": a_result.get("statuses"), "b_p99_ratio": round(ratio, 2),
                             "db_probe": db, "db_probe_p99_ratio": round(db_ratio, 2)}
                self.say(f"  B alone p99 {alone['latency']['p99_ms']} ms; with A flooding ({name}) "
                         f"p99 {with_flood['latency']['p99_ms']} ms = {out[name]['b_p99_ratio']}x; "
                         f"one MongoDB read p99 {db['p99_ms']} ms = {out[name]['db_probe_p99_ratio']}x alone")
        finally:
            await self.stack.restart_api({})  # the scenarios after this one measure without limits
        return out

    @contextlib.asynccontextmanager
    async def db_probe(self, interval_s: float = 0.05):
        """Latencies (s) of one indexed single-document read, every `interval_s` while the block
        runs: what any one command of the pipeline waits at the database under that load."""
        samples: list[float] = []
        await self.db.bench_probe.update_one({"_id": 1}, {"$set": {"v": 1}}, upsert=True)

        async def probe() -> None:
            while True:
                began = time.perf_counter()
                await self.db.bench_probe.find_one({"_id": 1})
                samples.append(time.perf_counter() - began)  # seconds, as summary_ms takes them
                await asyncio.sleep(interval_s)

        task = asyncio.create_task(probe())
        try:
            yield samples
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- 2c. a lone message on a quiet stack; the idle stack ---------------------------------------

    async def lone(self) -> dict[str, Any]:
        """Sequential sends on one conversation, one every ~50 ms, the recipient's socket open:
        what one message costs when nothing queues in front of it (HTTP answer and send -> frame)."""
        s = self.scale
        convs = await self.pairs(f"lone-{self.jobs}", 1)
        result = await self.load(self.traffic(convs, "lone", mode="paced", count=s.lone_messages,
                                              interval_s=s.lone_interval_s, warmup_s=0.2 if s is QUICK else 2.0))
        self.say(f"  lone message: POST p50 {result['http']['p50_ms']} ms, send -> frame p50 "
                 f"{result['latency']['p50_ms']} ms (p99 {result['latency']['p99_ms']} ms), "
                 f"{result['delivered']}/{result['accepted']} delivered")
        return _brief(result)

    async def idle(self) -> dict[str, Any]:
        """The stack with nothing connected and nothing sent: its cores by process over a window,
        against Kafka and MongoDB idle on their own (measured before the services started)."""
        window = self.scale.idle_s
        ops0 = await self.db.client.admin.command("serverStatus")
        by_process = await self.cores(window)
        ops1 = await self.db.client.admin.command("serverStatus")
        total = sum(by_process.values())
        servers = self.servers_idle_cores or 0.0
        db_cmds = {k: round((ops1["opcounters"][k] - ops0["opcounters"][k]) / window, 1)
                   for k in ops0.get("opcounters", {})}
        out = {"window_s": window, "cores_by_process": {k: round(v, 4) for k, v in by_process.items()},
               "stack_cores": round(total, 4), "servers_alone_cores": round(servers, 4),
               "above_servers_cores": round(total - servers, 4), "db_commands_per_s": db_cmds}
        self.say(f"  idle stack {total:.3f} cores; Kafka + MongoDB alone {servers:.3f}: "
                 f"{total - servers:.3f} above; database commands/s {db_cmds}")
        return out

    # --- 3. fan-in ---------------------------------------------------------------------------------

    async def fan_in(self) -> dict[str, Any]:
        """Idle heartbeating sockets on ONE gateway process of their own (clients in another
        process): RSS per socket, idle CPU, and delivery latency at that size."""
        n = self.scale.fanin_sockets
        tenant = "fanin"
        url, pid = await self.stack.start_gateway("bench-fanin")
        # The idle agents are made the public way (im-api PUT -> AgentChanged -> delivery's directory).
        await self.agents(tenant, [f"a{i}" for i in range(n)])
        await self.until(lambda: self.db.delivery_agents.count_documents({"tenant_id": tenant}), n,
                         60 if self.scale is QUICK else 600)
        probes = await self.pairs("fanin-probe", 4)
        # Warm the gateway's code paths first, so the baseline is not module loading.
        await self.load(self.traffic(probes, "fanwarm", mode="count", count=20, concurrency=4, stream_url=url))
        before = await settle_rss(pid)
        t_open = time.monotonic()
        proc, log = await self.spawn({"kind": "idle", "stream_url": url, "tenant": tenant,
                                      "agents": [f"a{i}" for i in range(n)], "concurrency": 50, "bound_s": 3600})
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 900)
            if not line:
                raise RuntimeError(f"idle clients failed:\n{log.read_text()[-3000:]}")
            opened = json.loads(line)
            # A socket is open for the client at accept; the gateway then authenticates, registers
            # and resumes it. Its device record is written at the end of that: wait for all of them.
            # (A socket closed 1012 during its set-up is opened again by the client.)
            set_up = await self.until(lambda: self.db.delivery_devices.count_documents({"tenant_id": tenant}),
                                      n, 60 if self.scale is QUICK else 900)
            opened["server_ready_s"] = round(time.monotonic() - t_open, 2)
            after = await settle_rss(pid, 8.0)
            cpu = await cpu_percent(pid, 6.0)
            # The gateway's own count of open sockets when RSS was read (its probes' sockets are closed).
            held = await open_on_gateway(url)
            self.say(f"  {opened['open']} idle sockets in {opened['connect_s']} s, {set_up} set up by the gateway in "
                     f"{opened['server_ready_s']} s, {held} open on it: gateway RSS {before} -> {after} "
                     f"KiB ({(after - before) / max(1, held):.1f} KiB/socket), idle CPU {cpu}%")
            # The probe measures delivery at this size, not the connects' aftermath (presence works
            # off 10,000 ConnectionOpened events for minutes): on a settled stack.
            settled_s = 0.0
            if self.settle is not None:
                t_settle = time.monotonic()
                await self.settle()
                settled_s = round(time.monotonic() - t_settle, 1)
            # What the whole stack spends holding the idle sockets, settled, above Kafka and
            # MongoDB idle on their own.
            held_cores = await self.cores(self.scale.idle_s) if self.cores is not None else {}
            probe = await self.load(self.traffic(probes, "fanprobe", mode="open", rate=20,
                                                 duration_s=self.scale.probe_s, warmup_s=0.5, stream_url=url))
            rss_end = rss_kib(pid)
        finally:
            proc.stdin.close()
            out, _ = await asyncio.wait_for(proc.communicate(), 300)
        closed = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
        self.stack.stop_service("bench-fanin")
        result = {"sockets": held, "asked": n, "connect_s": opened["connect_s"],
                  "server_ready_s": opened["server_ready_s"], "set_up": set_up,
                  "gateway_rss_before_kib": before, "gateway_rss_after_kib": after,
                  "kib_per_socket": round((after - before) / max(1, held), 1),
                  "gateway_idle_cpu_percent": cpu, "rss_after_probe_kib": rss_end,
                  "closed_by_server": closed.get("closed_by_server"), "reopened_after_1012": closed.get("reopened"),
                  "settled_before_probe_s": settled_s,
                  "idle_cores_by_process": {k: round(v, 4) for k, v in held_cores.items()},
                  "idle_stack_cores": round(sum(held_cores.values()), 4),
                  "idle_above_servers_cores": round(sum(held_cores.values()) - (self.servers_idle_cores or 0.0), 4),
                  "probe": _brief(probe)}
        self.say(f"  probe at {held} sockets: p50 {probe['latency']['p50_ms']} ms, "
                 f"p99 {probe['latency']['p99_ms']} ms, {probe['delivered']}/{probe['accepted']} delivered")
        return result

    # --- 4. offline catch-up -------------------------------------------------------------------------

    async def catch_up(self) -> dict[str, Any]:
        """An offline agent with N queued messages connects: time until it has received them all."""
        n = self.scale.catchup_messages
        convs = await self.pairs("catchup", 1)
        t0 = time.monotonic()
        fill = await self.load(self.traffic(convs, "fill", mode="count", count=n, concurrency=32,
                                            receive=False, settle_s=0))
        async def head() -> int:
            # delivery_heads is delivery's public read model (brief-interfaces #1), read by its fields.
            doc = await self.db.delivery_heads.find_one({"tenant_id": "catchup", "agent_id": "r0"})
            return int(doc["cursor"]) if doc else 0

        # message.created + conversation.updated per message, and the thread's first frame.
        queued = await self.until(head, 2 * n + 1, 60 if self.scale is QUICK else 600)
        filled_s = time.monotonic() - t0
        entries = await self.db.delivery_queue.count_documents(
            {"tenant_id": "catchup", "agent_id": "r0", "frame.type": "message.created"})
        self.say(f"  {entries} messages queued for r0 in {filled_s:.1f} s ({fill['accepted']} accepted); replaying")
        # The first replay is the agent coming back; the others read the same queue again from
        # cursor 0 (as a console does after a reset), so the figure's spread is measured too.
        replays = []
        for i in range(self.scale.catchup_replays):
            if i and self.settle is not None:
                await self.settle()
            replay = await self.load({"kind": "catchup", "stream_url": self.stack.stream_url,
                                      "token": convs[0]["recipient_token"], "expect": n, "timeout_s": 600,
                                      "cursor": 0 if i else None})
            self.say(f"  replay {i + 1}: {replay['received']} messages ({replay['frames']} frames) in "
                     f"{replay['elapsed_s']} s = {replay['msgs_per_s']} msg/s")
            replays.append(replay)
        rates = sorted(r["frames_per_s"] for r in replays)
        median = rates[len(rates) // 2]
        first = replays[0]
        return {"messages": n, "queued_messages": entries, "queue_head": queued, "fill_s": round(filled_s, 1),
                "fill_accepted_per_s": fill["accepted_per_s"], **first,
                "received": min(r["received"] for r in replays),
                "replays": replays, "frames_per_s_median": median,
                "frames_per_s_spread": round((rates[-1] - rates[0]) / median, 3) if median else None}


    # --- the agent console in a browser ------------------------------------------------------------

    async def console(self) -> dict[str, Any]:
        """The console in Chromium with 1,000 threads and a 10,000-message history (bench/console.py)."""
        from . import console

        sc = self.scale
        return await console.measure(self, sc.console_threads, sc.console_messages, sc.console_scroll_s,
                                     sc.console_idle_s, sc.console_loads, sc.console_settle_s)


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("offered_per_s", "sent", "accepted", "delivered", "missing", "duplicates",
                              "accepted_per_s", "latency", "http") if k in r}


async def metric(base_url: str, name: str, default: float | None = 0.0) -> float:
    """One unlabelled series from a service's /metrics (`default` when absent; None: absent raises)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base_url}/metrics", timeout=30)).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    if default is None:
        raise RuntimeError(f"{base_url} reports no {name}")
    return default


async def open_on_gateway(stream_url: str) -> int:
    """`im_delivery_connections_open` from the gateway's /metrics."""
    base = stream_url.replace("ws://", "http://").split("/v1/")[0]
    return int(await metric(base, "im_delivery_connections_open", default=None))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def settle_rss(pid: int, seconds: float = 4.0) -> int:
    """RSS once it stops moving (the connects' transient garbage released)."""
    last = rss_kib(pid)
    for _ in range(int(seconds / 0.5)):
        await asyncio.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children); -1 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def cpu_percent(pid: int, seconds: float) -> float:
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return round(100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0), 1)


__all__ = ["Bench", "FULL", "QUICK", "Scale", "percentile"]
