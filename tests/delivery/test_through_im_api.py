"""Delivery behind the real im-api, at volume: HTTP sends from many senders at once reach every
recipient's socket exactly once and in order; the request's trace id reaches the gateway's send
log; the worker's and the gateway's /metrics tell what happened."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time

import httpx
import pytest
import websockets
from im_contracts import topics

from conftest import FAST, StreamClient, assert_exactly_once_in_order
from support.topics import read_topic
from support.stack import start_stack
from support.wait import eventually

pytestmark = pytest.mark.e2e

TENANT = "acme-volume"
AGENTS = ["ana", "ben", "cy", "dee"]
MESSAGES = 300
SENDERS = 24  # im-api commits concurrent sends in one transaction: more senders, fewer commits


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition (labels: a subset to match)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if line.split("{")[0].split(" ")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_300_messages_sent_over_http_by_concurrent_senders_reach_every_recipient_once_in_order_and_show_in_metrics(
    services, service_env, kafka_topics, jwt_secret, outbox
):
    prefix = service_env["IM_TOPIC_PREFIX"]
    env = {**service_env, **FAST, "IM_LOG_LEVEL": "INFO", "IM_DELIVERY_UNKNOWN_AGENT_WAIT_S": "20",
           # Consumer groups of this test's own: on a shared broker, no rebalances with other runs.
           "IM_DELIVERY_FANOUT_GROUP": f"{prefix}fanout", "IM_DELIVERY_QUEUE_GROUP": f"{prefix}queue",
           "IM_DELIVERY_GATEWAYS_GROUP": f"{prefix}gateways"}
    stack = await start_stack(services, env, jwt_secret)
    admin = stack.token(TENANT, "root", "admin")
    async with stack.client(admin) as http:
        for agent in AGENTS:
            assert (await http.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})).status_code == 200

    clients: dict[str, StreamClient] = {}
    for agent in AGENTS:
        url = await stack.ticket_url(stack.token(TENANT, agent), f"{agent}-laptop")
        clients[agent] = StreamClient(await websockets.connect(url, open_timeout=10), agent, auto_ack=True)

    threads: dict[str, list[str]] = {}
    for members in [*itertools.combinations(AGENTS, 2), tuple(AGENTS)]:
        async with stack.client(stack.token(TENANT, members[0])) as http:
            r = await http.post("/v1/conversations", json={"participant_ids": list(members[1:])})
            assert r.status_code == 201, r.text
            threads[r.json()["id"]] = list(members)

    rng = random.Random(7)
    plan = [(cid, rng.choice(threads[cid])) for cid in rng.choices(list(threads), k=MESSAGES)]
    last_seq: dict[str, int] = {cid: 0 for cid in threads}
    request_ids: list[str] = []
    http_clients = {a: stack.client(stack.token(TENANT, a)) for a in AGENTS}

    async def sender(share: list[tuple[int, str, str]]) -> None:
        # Several senders post into the same threads at once: im-api orders them by seq.
        for n, cid, agent in share:
            r = await http_clients[agent].post(f"/v1/conversations/{cid}/messages",
                                               json={"body": f"message {n}", "client_msg_id": f"m-{n}"})
            assert r.status_code == 201, r.text
            last_seq[cid] = max(last_seq[cid], r.json()["seq"])
            request_ids.append(r.headers["x-request-id"])

    started = time.monotonic()
    try:
        numbered = [(n, cid, agent) for n, (cid, agent) in enumerate(plan)]
        await asyncio.gather(*(sender(numbered[k::SENDERS]) for k in range(SENDERS)))
    finally:
        await asyncio.gather(*(c.aclose() for c in http_clients.values()))
    sent_in = time.monotonic() - started
    assert sum(last_seq.values()) == MESSAGES

    for agent, client in clients.items():
        total = sum(n for cid, n in last_seq.items() if agent in threads[cid])
        await eventually(lambda c=client, t=total: len(c.messages()) >= t, timeout=60,
                         message=lambda c=client, t=total: f"{c.name} got {len(c.messages())}/{t}")
    delivered_in = time.monotonic() - started
    for agent, client in clients.items():
        assert_exactly_once_in_order(client, {cid: n for cid, n in last_seq.items() if agent in threads[cid]})
    print(f"{MESSAGES} messages over HTTP in {sent_in:.1f}s, all delivered after {delivered_in:.1f}s")

    # The trace id each MessagePosted record carries (im-api's X-Request-Id) reaches the gateway's
    # frame-send log line.
    reads = await read_topic(topics.MESSAGES, prefix, bootstrap=env["IM_KAFKA_BOOTSTRAP"], to_end=True)
    carried = {r.headers.get("trace-id", b"").decode() for r in reads}
    assert carried and carried <= set(request_ids) | {""}, "records carry trace ids that are no request ids"
    carried.discard("")
    gateway_log = stack.procs["gateway0"].log_path

    def traced_sends() -> set[str]:
        out: set[str] = set()
        for line in gateway_log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"frames sent"' in line:
                out.update(json.loads(line).get("trace_ids", []))
        return out

    await eventually(lambda: carried <= traced_sends(), timeout=10,
                     message=lambda: f"{len(carried - traced_sends())} trace ids never reached a send log line")
    assert "message 1" not in gateway_log.read_text(errors="replace"), "a message body was logged"

    # A malformed record, so the dead-letter counter has something to count.
    await outbox.raw(topics.MESSAGES, b"c-bad", b"{not json")
    worker_port, gateway_port = stack.env["IM_DELIVERY_WORKER_PORT"], stack.stream_url.split(":")[2].split("/")[0]
    async with httpx.AsyncClient(timeout=5) as http:
        async def scrape(port: str) -> str:
            return (await http.get(f"http://127.0.0.1:{port}/metrics")).text

        async def dead_letter_counted() -> bool:
            return (metric(await scrape(worker_port), "im_delivery_dead_letters_total",
                           topic="im.messages.v1", reason="malformed_json") or 0) >= 1

        await eventually(dead_letter_counted, timeout=20, message="the dead letter was never counted")
        worker, gateway = await scrape(worker_port), await scrape(gateway_port)

    frames = sum(len(c.queued) for c in clients.values())
    assert metric(gateway, "im_delivery_frames_sent_total", gateway="gw0") >= frames
    assert metric(gateway, "im_delivery_connections_open") == len(AGENTS)
    appended = metric(worker, "im_delivery_queue_append_seconds_count")
    assert appended and appended >= 1
    # Sensible: positive, and no entry waited longer than the whole run.
    assert 0 < metric(worker, "im_delivery_queue_append_seconds_sum") / appended < delivered_in
    fanned = metric(worker, "im_delivery_fanout_latency_seconds_count")
    assert fanned and fanned >= frames / 2  # every message.created and its conversation.updated, at least
    assert 0 < metric(worker, "im_delivery_fanout_latency_seconds_sum") / fanned < delivered_in
    for group in ("fanout", "queue"):
        lags = [float(v) for v in re.findall(
            rf'im_consumer_lag_records{{group="{prefix}{group}"[^}}]*}} (\S+)', worker)]
        assert lags and all(0 <= lag < 1_000 for lag in lags), f"{group}: {lags}"
    for client in clients.values():
        await client.close()
