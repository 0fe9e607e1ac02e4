"""Fan-in of idle sockets: how much memory one delivery gateway spends per idle authenticated
WebSocket, and how fast one message reaches one of them at that size.

    .venv/bin/python bench/ws_idle_sockets.py [--connections 2000] [--messages 20]

Kafka and MongoDB come from IM_TEST_KAFKA_BOOTSTRAP / IM_TEST_MONGO_URI (or IM_KAFKA_BOOTSTRAP /
IM_MONGO_URI); without them a private Apache Kafka (or Tansu) and SecantusDB are started via
`imctl.servers` and stopped at the end. The gateway and the worker run as processes of their own;
the idle clients run in a SEPARATE process (`--client` mode of this script), so neither side runs
into the fd limit. Everything runs on loopback, is bounded in count and time, and only processes
this script started are stopped (by pid). RSS is read from /proc/<pid>/status (VmRSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import websockets

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-" + "x" * 32
TENANT = "bench"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def token(agent: str) -> str:
    return jwt.encode({"tid": TENANT, "sub": agent, "role": "agent", "exp": int(time.time() + 3600)},
                      SECRET, algorithm="HS256")


# --- the client process: N idle sockets ---------------------------------------------------------


async def client_main(url: str, n: int, first: int, concurrency: int) -> None:
    sockets: list = []
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            for attempt in range(5):
                try:
                    ws = await websockets.connect(
                        f"{url}?device_id=d{i}", subprotocols=["im.v1", f"bearer.{token(f'a{i}')}"],
                        open_timeout=60, ping_interval=None, max_queue=4, compression=None)
                    sockets.append(ws)
                    return
                except (OSError, websockets.WebSocketException, TimeoutError):
                    await asyncio.sleep(0.5 * (attempt + 1))
            raise RuntimeError(f"socket {i} never opened")

    await asyncio.gather(*(one(i) for i in range(first, first + n)))
    print(json.dumps({"open": len(sockets)}), flush=True)
    # Idle until told to stop (stdin closes); frames (e.g. replay) are read and dropped.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# --- the driver ----------------------------------------------------------------------------------


class Processes:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], log: Path, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, stdout=kw.pop("stdout", open(log, "wb")),
                                stderr=subprocess.STDOUT if "stdout" not in kw else open(log, "wb"), **kw)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited {proc.returncode}")
            try:
                if (await http.get(url, timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


async def settle_rss(pid: int, seconds: float = 3.0) -> int:
    """RSS once it stops moving (after the connects' transient garbage is released)."""
    last = rss_kib(pid)
    for _ in range(int(seconds / 0.5)):
        await asyncio.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


async def driver(args: argparse.Namespace) -> dict:
    from aiokafka import AIOKafkaProducer
    from im_contracts import topics
    from im_contracts.codec import event_headers
    from im_contracts.events import ConversationStarted, MessagePosted
    from im_contracts.models import ConversationSnapshot, Message, Participant
    from imctl.servers import free_port
    from imctl.topics import create_topics
    from pymongo import AsyncMongoClient

    procs = Processes()
    servers: list = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    bootstrap = os.environ.get("IM_TEST_KAFKA_BOOTSTRAP") or os.environ.get("IM_KAFKA_BOOTSTRAP")
    mongo_uri = os.environ.get("IM_TEST_MONGO_URI") or os.environ.get("IM_MONGO_URI")
    try:
        if not bootstrap or not mongo_uri:
            from imctl import servers as imservers
            if not bootstrap:
                # imctl's readiness probes run their own event loop: start servers from a thread.
                kafka = await asyncio.to_thread(imservers.start_kafka, "auto", workdir / "kafka")
                servers.append(kafka)
                bootstrap = kafka.bootstrap
            if not mongo_uri:
                mongo_srv = await asyncio.to_thread(imservers.SecantusMongo(
                    name="mongo", log_path=workdir / "mongo.log", data_dir=workdir / "mongo", port=free_port()).start)
                servers.append(mongo_srv)
                mongo_uri = mongo_srv.uri
        prefix = f"bench-{uuid.uuid4().hex[:8]}."
        db_name = f"bench_ws_{uuid.uuid4().hex[:8]}"
        await create_topics(bootstrap, prefix, partitions=3)
        env = {**os.environ, "IM_KAFKA_BOOTSTRAP": bootstrap, "IM_MONGO_URI": mongo_uri, "IM_MONGO_DB": db_name,
               "IM_TOPIC_PREFIX": prefix, "IM_JWT_SECRET": SECRET, "IM_LOG_LEVEL": "WARNING",
               "IM_KAFKA_IDEMPOTENCE": os.environ.get("IM_KAFKA_IDEMPOTENCE", "true"),
               # Consumer groups of this run's own: a shared broker's other members never stall us.
               "IM_DELIVERY_FANOUT_GROUP": f"{prefix}fanout", "IM_DELIVERY_QUEUE_GROUP": f"{prefix}queue",
               "IM_DELIVERY_GATEWAYS_GROUP": f"{prefix}gateways"}
        mongo = AsyncMongoClient(mongo_uri, tz_aware=True)
        # The directory projection knows every agent (gateways refuse unknown agents).
        agents = [f"a{i}" for i in range(args.connections)] + ["probe", "sender"]
        await mongo[db_name]["delivery_agents"].insert_many(
            [{"_id": f"{TENANT}:{a}", "tenant_id": TENANT, "agent_id": a, "display_name": a, "active": True}
             for a in agents])

        wport, gport = free_port(), free_port()
        worker = procs.start([sys.executable, "-m", "im_delivery.worker"],
                             {**env, "IM_DELIVERY_WORKER_PORT": str(wport)}, workdir / "worker.log")
        gateway = procs.start([sys.executable, "-m", "im_delivery.gateway"],
                              {**env, "IM_STREAM_PORT": str(gport), "IM_DELIVERY_GATEWAY_ID": "bench-gw"},
                              workdir / "gateway.log")
        await wait_ready(f"http://127.0.0.1:{wport}/readyz", worker)
        await wait_ready(f"http://127.0.0.1:{gport}/readyz", gateway)
        url = f"ws://127.0.0.1:{gport}/v1/stream"

        # Warm the gateway's code paths with a few sockets, so the baseline is not code loading.
        warm = [await websockets.connect(f"{url}?device_id=w{i}", subprotocols=["im.v1", f"bearer.{token('sender')}"],
                                         ping_interval=None) for i in range(20)]
        await asyncio.gather(*(w.close() for w in warm))
        before = await settle_rss(gateway.pid)
        t0 = time.monotonic()
        clients = procs.start([sys.executable, __file__, "--client", "--url", url, "--connections",
                               str(args.connections), "--concurrency", str(args.concurrency)],
                              env, workdir / "clients.log", stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        line = await asyncio.wait_for(asyncio.to_thread(clients.stdout.readline), args.timeout)
        if not line:
            raise RuntimeError(f"client process failed: {(workdir / 'clients.log').read_text()[-2000:]}")
        opened = json.loads(line)["open"]
        connect_s = time.monotonic() - t0
        after = await settle_rss(gateway.pid, 6.0)
        print(f"{opened} sockets open in {connect_s:.1f} s: gateway RSS {before} -> {after} KiB "
              f"({(after - before) / opened:.1f} KiB/socket); logs in {workdir}", file=sys.stderr, flush=True)

        # Delivery latency of one message to one socket at this size (posted as im-api's outbox).
        probe = await websockets.connect(f"{url}?device_id=p", subprotocols=["im.v1", f"bearer.{token('probe')}"],
                                         ping_interval=None)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()
        cid = f"c-{uuid.uuid4().hex[:8]}"
        snap = ConversationSnapshot(id=cid, participants=[Participant(id=a, display_name=a) for a in ("sender", "probe")],
                                    created_by="sender", created_at=datetime.now(UTC))
        started = ConversationStarted(tenant_id=TENANT, conversation=snap, recipients=["sender", "probe"])
        await producer.send_and_wait(topics.CONVERSATIONS.name(prefix), started.to_bytes(),
                                     key=topics.conversation_key(cid), headers=event_headers(started))
        latencies = []
        for seq in range(1, args.messages + 2):  # the first one warms the path up: not counted
            msg = Message(id=f"{cid}-{seq}", conversation_id=cid, seq=seq, sender_id="sender", body="ping",
                          client_msg_id=f"k{seq}", created_at=datetime.now(UTC))
            event = MessagePosted(tenant_id=TENANT, message=msg, recipients=["sender", "probe"])
            sent = time.perf_counter()
            await producer.send_and_wait(topics.MESSAGES.name(prefix), event.to_bytes(),
                                         key=topics.conversation_key(cid), headers=event_headers(event))
            while True:
                frame = json.loads(await asyncio.wait_for(probe.recv(), 60 if seq == 1 else 30))
                frames = frame["frames"] if frame["type"] == "batch" else [frame]
                if any(f["type"] == "message.created" and f["message"]["seq"] == seq for f in frames):
                    break
            if seq > 1:
                latencies.append((time.perf_counter() - sent) * 1000)
            await probe.send(json.dumps({"type": "ack", "cursor": frames[-1]["cursor"]}))
        await producer.stop()
        await probe.close()
        clients.stdin.close()
        clients.wait(timeout=60)
        await mongo.drop_database(db_name)
        await mongo.close()
        return {
            "connections": opened, "connect_s": round(connect_s, 1),
            "gateway_rss_before_kib": before, "gateway_rss_after_kib": after,
            "kib_per_socket": round((after - before) / opened, 1),
            "latency_ms_p50": round(statistics.median(latencies), 1),
            "latency_ms_max": round(max(latencies), 1), "messages": len(latencies),
        }
    finally:
        procs.stop_all()
        for srv in reversed(servers):
            srv.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20, help="latency samples at that size")
    parser.add_argument("--concurrency", type=int, default=50, help="connects in flight at once")
    parser.add_argument("--timeout", type=float, default=600, help="bound on opening the sockets")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.connections <= 15_000:
        parser.error("--connections must be 1..15000 (the hard fd limit is 20,000 per process)")
    if args.client:
        asyncio.run(client_main(args.url, args.connections, args.first, args.concurrency))
        return
    result = asyncio.run(driver(args))
    print(json.dumps(result))
    print(f"{result['connections']} idle sockets: {result['kib_per_socket']} KiB/socket "
          f"(gateway RSS {result['gateway_rss_before_kib']} -> {result['gateway_rss_after_kib']} KiB), "
          f"opened in {result['connect_s']} s; one message to one socket: p50 {result['latency_ms_p50']} ms, "
          f"max {result['latency_ms_max']} ms over {result['messages']}")


if __name__ == "__main__":
    main()
