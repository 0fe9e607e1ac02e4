"""The load process: `python -m bench.load JOB.json` runs one job and prints its result as one JSON
line on stdout. Jobs: `traffic` (senders POST messages — open loop at a fixed rate, closed loop
with N in flight, a fixed count, or paced one at a time — while the recipients' WebSockets record every arrival),
`idle` (N idle, heartbeating sockets held until stdin closes) and `catchup` (one socket that
connects and receives its whole queue). Loopback only; every job is bounded in count and time.

Latency in the open loop is measured from each message's SCHEDULED send time, so a stall of the
system under test is charged to every message it delayed (no coordinated omission)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import websockets

from .http import HttpPool
from .stats import summary_ms

ACK_EVERY_S = 0.2  # a client acks at most this often (and every ACK_EVERY frames): like a real console
ACK_EVERY = 200
REQUEST_TIMEOUT_S = 30.0


def open_socket(url: str, token: str, device_id: str, cursor: int | None = None, **kw):
    query = f"?device_id={device_id}" + (f"&cursor={cursor}" if cursor is not None else "")
    return websockets.connect(f"{url}{query}", subprotocols=["im.v1", f"bearer.{token}"],
                              compression=None, max_size=16 * 1024 * 1024, open_timeout=60, **kw)


class Receiver:
    """One recipient's socket: records the first arrival of each expected client_msg_id, acks."""

    def __init__(self, expected: set[str], arrivals: dict[str, float], duplicates: Counter) -> None:
        self.expected, self.arrivals, self.duplicates = expected, arrivals, duplicates
        self.frames = 0

    async def run(self, ws) -> None:
        cursor = acked = 0
        last_ack = time.monotonic()
        try:
            async for raw in ws:
                now = time.monotonic()
                frame = json.loads(raw)
                for f in frame["frames"] if frame.get("type") == "batch" else [frame]:
                    self.frames += 1
                    cursor = max(cursor, f.get("cursor") or 0)
                    if f.get("type") == "message.created":
                        cmid = f["message"].get("client_msg_id")
                        if cmid in self.expected:
                            if cmid in self.arrivals:
                                self.duplicates[cmid] += 1
                            else:
                                self.arrivals[cmid] = now
                if cursor > acked and (cursor - acked >= ACK_EVERY or now - last_ack >= ACK_EVERY_S):
                    await ws.send(json.dumps({"type": "ack", "cursor": cursor}))
                    acked, last_ack = cursor, now
        except websockets.ConnectionClosed:
            pass
        finally:
            if cursor > acked:
                try:
                    await ws.send(json.dumps({"type": "ack", "cursor": cursor}))
                except websockets.ConnectionClosed:
                    pass


async def traffic(job: dict[str, Any]) -> dict[str, Any]:
    convs = job["conversations"]
    api = urlsplit(job["api"])
    pool = HttpPool(api.hostname, api.port, job.get("pool", 256))
    tag = job["tag"]
    mode = job["mode"]
    rate = float(job.get("rate", 0))
    duration = float(job.get("duration_s", 0))
    warmup = float(job.get("warmup_s", 0))
    total = int(job.get("count") or 0) if mode in ("count", "paced") else int(round(rate * (duration + warmup))) if mode == "open" else 0

    expected: set[str] = set()
    arrivals: dict[str, float] = {}
    duplicates: Counter = Counter()
    scheduled: dict[str, float] = {}
    responded: dict[str, float] = {}
    statuses: Counter = Counter()
    measured_from = 0.0

    # Recipients connect first (one socket each), so every message has someone waiting for it.
    sockets, receivers = [], []
    # Keyed by token: agent ids repeat across tenants.
    recipients = {c["recipient_token"]: c["recipient"] for c in convs} if job.get("receive", True) else {}
    for token in recipients:
        ws = await open_socket(job["stream_url"], token, f"bench-{tag}")
        sockets.append(ws)
        receivers.append(Receiver(expected, arrivals, duplicates))
    reading = [asyncio.create_task(r.run(ws)) for r, ws in zip(receivers, sockets, strict=True)]

    async def send(i: int, at: float) -> None:
        conv = convs[i % len(convs)]
        cmid = f"{tag}-{i}"
        expected.add(cmid)
        scheduled[cmid] = at
        try:
            # Bounded: a request the system never answers is counted, it does not hang the run.
            status, _, retry_after = await asyncio.wait_for(
                pool.post_json(f"/v1/conversations/{conv['id']}/messages", conv["sender_token"],
                               {"body": f"bench message {i}", "client_msg_id": cmid}), REQUEST_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            statuses[type(exc).__name__] += 1
            return
        statuses[status] += 1
        if status == 429 and retry_after and job.get("honor_retry_after"):
            await asyncio.sleep(retry_after)  # as the JS client does (a sender that waits its turn)
        if status == 201:
            responded[cmid] = time.monotonic()

    start = time.monotonic() + 0.2
    if mode == "paced":
        # One message at a time, each sent `interval_s` after the previous one was answered (or
        # after it was due): a lone sender on a quiet stack. Latency from the actual send.
        measured_from = start + warmup
        interval = float(job["interval_s"])
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        for i in range(total):
            began = time.monotonic()
            await send(i, began)
            await asyncio.sleep(max(0.0, began + interval - time.monotonic()))
    elif mode == "open":
        measured_from = start + warmup
        tasks = set()
        for i in range(total):
            at = start + i / rate
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(i, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    else:
        measured_from = start
        deadline = start + duration if mode == "closed" else float("inf")
        counter = iter(range(total or 10**9))

        async def sender() -> None:
            while time.monotonic() < deadline:
                i = next(counter, None)
                if i is None:
                    return
                await send(i, time.monotonic())

        await asyncio.sleep(max(0.0, start - time.monotonic()))
        await asyncio.gather(*(sender() for _ in range(int(job["concurrency"]))))
    sends_done = time.monotonic()

    accepted = set(responded)
    settle_until = time.monotonic() + float(job.get("settle_s", 30))
    while time.monotonic() < settle_until and not accepted.issubset(arrivals.keys()):
        await asyncio.sleep(0.02)
    for task in reading:
        task.cancel()
    await asyncio.gather(*reading, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    pool.close()

    counted = [c for c in accepted if scheduled[c] >= measured_from]
    latencies = [arrivals[c] - scheduled[c] for c in counted if c in arrivals]
    http = [responded[c] - scheduled[c] for c in counted]
    delivered = [c for c in accepted if c in arrivals]
    first = min((scheduled[c] for c in counted), default=start)
    last_delivery = max((arrivals[c] for c in delivered), default=sends_done)
    result = {
        "mode": mode, "offered_per_s": rate or None, "sent": len(scheduled), "accepted": len(accepted),
        "measured": len(counted), "statuses": {str(k): v for k, v in statuses.items()},
        "delivered": len(delivered), "missing": len(accepted) - len(delivered),
        "duplicates": sum(duplicates.values()),
        "latency": summary_ms(latencies), "http": summary_ms(http),
        "first_send": first, "sends_done": sends_done, "last_delivery": last_delivery,
        "accepted_per_s": round(len(counted) / max(1e-9, sends_done - first), 1),
        "delivered_per_s": round(len([c for c in counted if c in arrivals]) / max(1e-9, last_delivery - first), 1),
    }
    if job.get("samples"):
        result["samples"] = [round(x, 5) for x in latencies]
    return result


async def idle(job: dict[str, Any]) -> dict[str, Any]:
    """One socket per agent, held open and heartbeating until the driver says stop (stdin closed).
    A socket the gateway closes 1012 ("try again": e.g. MongoDB overloaded while it was set up) is
    opened again, as a console does; any other close counts as closed by the server."""
    from imctl.tokens import mint

    secret = os.environ["BENCH_JWT_SECRET"]
    gate = asyncio.Semaphore(int(job.get("concurrency", 50)))
    sockets: dict[str, Any] = {}
    first_open = asyncio.Event()
    pending = len(job["agents"])
    stats = {"closed_by_server": 0, "reopened": 0}
    stopping = False
    t0 = time.monotonic()

    async def connect(agent: str):
        async with gate:
            for attempt in range(5):
                try:
                    # Heartbeating: the client pings every 20 s (as the server does), like a browser tab.
                    return await open_socket(job["stream_url"], mint(secret, job["tenant"], agent, ttl_s=4 * 3600),
                                             "idle", ping_interval=20, ping_timeout=60, max_queue=4)
                except (OSError, websockets.WebSocketException, TimeoutError):
                    await asyncio.sleep(0.5 * (attempt + 1))
        return None

    async def hold(agent: str) -> None:
        nonlocal pending
        counted = False
        for attempt in range(10):
            ws = await connect(agent)
            if ws is not None:
                sockets[agent] = ws
            if not counted:
                counted, pending = True, pending - 1
                if pending == 0:
                    first_open.set()
            if ws is None:
                return
            try:
                async for _ in ws:
                    pass
            except websockets.ConnectionClosed:
                pass
            if stopping:
                return
            sockets.pop(agent, None)
            if ws.close_code != 1012:
                stats["closed_by_server"] += 1
                return
            stats["reopened"] += 1
            await asyncio.sleep(0.2 * (attempt + 1))

    holders = [asyncio.create_task(hold(a)) for a in job["agents"]]
    await first_open.wait()
    print(json.dumps({"open": len(sockets), "connect_s": round(time.monotonic() - t0, 2)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the driver says stop
    stopping = True
    still_open = len(sockets)
    open_now = list(sockets.values())
    for i in range(0, len(open_now), 500):
        await asyncio.gather(*(ws.close() for ws in open_now[i:i + 500]), return_exceptions=True)
    for h in holders:
        h.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    return {"open": still_open, **stats}


async def catchup(job: dict[str, Any]) -> dict[str, Any]:
    """Connect and receive `expect` queued messages; acks every frame it processed, as a client does."""
    expect = int(job["expect"])
    got = frames = 0
    t0 = time.monotonic()
    first = None
    async with open_socket(job["stream_url"], job["token"], job.get("device_id", "catchup"),
                           job.get("cursor"), ping_interval=None) as ws:
        connected = time.monotonic()
        deadline = t0 + float(job.get("timeout_s", 300))
        while got < expect and time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            first = first or time.monotonic()
            frame = json.loads(raw)
            batch = frame["frames"] if frame.get("type") == "batch" else [frame]
            frames += len(batch)
            got += sum(1 for f in batch if f.get("type") == "message.created")
            cursor = max((f.get("cursor") or 0) for f in batch)
            if cursor:
                await ws.send(json.dumps({"type": "ack", "cursor": cursor}))
        done = time.monotonic()
    elapsed = done - t0
    return {"expected": expect, "received": got, "frames": frames, "connect_ms": round((connected - t0) * 1000, 1),
            "first_frame_ms": round(((first or done) - t0) * 1000, 1), "elapsed_s": round(elapsed, 3),
            "msgs_per_s": round(got / elapsed, 1), "frames_per_s": round(frames / elapsed, 1)}


JOBS = {"traffic": traffic, "idle": idle, "catchup": catchup}


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    result = asyncio.run(asyncio.wait_for(JOBS[job["kind"]](job), float(job.get("bound_s", 900))))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
