"""Crashes and slow clients: a gateway or the worker SIGKILLed, a client that stops reading."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import pytest
import websockets
from pymongo import AsyncMongoClient
from im_contracts import topics

from conftest import TENANT, StreamClient, assert_exactly_once_in_order
from support.wait import eventually

pytestmark = pytest.mark.e2e

AGENTS = ["ana", "ben", "cy"]


async def test_a_gateway_killed_mid_stream_loses_nothing_when_clients_resume_on_the_other(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker()
    gw1, gw2 = await asyncio.gather(stack.start_gateway(), stack.start_gateway())
    threads = {await outbox.start_conversation(list(p)): list(p) for p in itertools.combinations(AGENTS, 2)}
    clients = {a: [await StreamClient.connect(gw1.url, tokens.ticket(a, "desk"), name=f"{a}@gw1")]
               for a in ("ana", "ben")}
    clients["cy"] = [await StreamClient.connect(gw2.url, tokens.ticket("cy", "desk"), name="cy@gw2")]
    per_thread = 100

    async def sender() -> None:
        for _ in range(per_thread):
            for cid, members in threads.items():
                await outbox.post(cid, members[0])

    sending = asyncio.create_task(sender())
    await eventually(lambda: len(clients["ana"][0].messages()) >= 20, timeout=20)
    await asyncio.to_thread(gw1.proc.kill)  # SIGKILL mid-stream
    for agent in ("ana", "ben"):
        old = clients[agent][0]
        await old.closed_with()
        # Reconnect elsewhere with the last cursor it processed.
        clients[agent].append(await StreamClient.connect(gw2.url, tokens.ticket(agent, "desk"), cursor=old.cursor,
                                                         name=f"{agent}@gw2"))
    await sending
    for agent, conns in clients.items():
        expected = {c: per_thread for c, m in threads.items() if agent in m}
        await eventually(lambda cs=conns, n=sum(expected.values()): sum(len(c.messages()) for c in cs) >= n,
                         timeout=30)
        merged = StreamClient.__new__(StreamClient)
        merged.name, merged.queued = agent, [f for c in conns for f in c.queued]
        merged.off_contract = [e for c in conns for e in c.off_contract]
        assert_exactly_once_in_order(merged, expected)
    # The dead gateway stops heartbeating: its registrations expire, signals stop going to it.
    registry = mongo[mongo_db_name]["delivery_connections"]
    await eventually(lambda: _none_left(registry, gw1.gateway_id), timeout=15)
    assert await registry.count_documents({"gateway_id": gw2.gateway_id}) == 3
    for conns in clients.values():
        await conns[-1].close()


async def _none_left(registry, gateway_id: str) -> bool:
    return await registry.count_documents({"gateway_id": gateway_id}) == 0


async def test_the_worker_killed_mid_batch_and_restarted_neither_loses_nor_duplicates_an_entry(
    stack, outbox, tokens, mongo, mongo_db_name
):
    await stack.start_worker()
    gw = await stack.start_gateway()
    ana = await StreamClient.connect(gw.url, tokens.ticket("ana", "desk"), name="ana")
    threads = {await outbox.start_conversation(list(p)): list(p) for p in itertools.combinations(AGENTS, 2)}
    per_thread = 300
    for _ in range(per_thread):
        for cid, members in threads.items():
            event = outbox.message(cid, members[0])
            await outbox.producer.send(topics.MESSAGES.name(outbox.prefix), event.to_bytes(),
                                       key=topics.conversation_key(cid))
    await outbox.producer.flush()
    queue = mongo[mongo_db_name]["delivery_queue"]
    await eventually(lambda: _count_at_least(queue, 50), timeout=30)
    await asyncio.to_thread(stack.worker.kill)  # SIGKILL while it works through the backlog
    killed_at = await queue.count_documents({})
    await stack.start_worker()

    for agent in AGENTS:
        expected = {c: per_thread for c, m in threads.items() if agent in m}
        keys = {f"msg:{c}:{s}{suffix}" for c in expected for s in range(1, per_thread + 1)
                for suffix in ("", ":conversation")}
        await eventually(lambda a=agent, n=len(keys) + 2: _count_at_least(queue, n, a), timeout=60)
        entries = [d async for d in queue.find({"tenant_id": TENANT, "agent_id": agent}).sort("cursor", 1)]
        msg_keys = [d["dedupe_key"] for d in entries if d["dedupe_key"].startswith("msg:")]
        assert len(msg_keys) == len(keys) and set(msg_keys) == keys, f"{agent}: entries lost or duplicated"
        for cid in expected:  # per thread, queue order is seq order
            seqs = [d["frame"]["message"]["seq"] for d in entries
                    if d["frame"]["type"] == "message.created" and d["frame"]["message"]["conversation_id"] == cid]
            assert seqs == list(range(1, per_thread + 1))
    await eventually(lambda: len(ana.messages()) >= 2 * per_thread, timeout=30)
    assert_exactly_once_in_order(ana, {c: per_thread for c, m in threads.items() if "ana" in m})
    print(f"worker killed after {killed_at} entries")
    await ana.close()


async def _count_at_least(queue, n: int, agent: str | None = None) -> bool:
    query = {"tenant_id": TENANT, **({"agent_id": agent} if agent else {})}
    return await queue.count_documents(query) >= n


async def stalled_connect(url: str) -> websockets.ClientConnection:
    """A client that stops reading: a tiny receive buffer and a one-message client queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return await websockets.connect(url, sock=sock, max_queue=1, open_timeout=10)


@pytest.mark.parametrize("stall", ["window", "buffers"])
async def test_a_stalled_client_is_closed_4429_and_does_not_delay_the_others(
    stack, outbox, tokens, mongo, mongo_db_name, stall
):
    # The stalled client sits on a full window (100 unacknowledged frames) — or, with a window it
    # never fills, on full socket buffers (the transport over its high-water mark: the send itself
    # blocks) — for the send timeout, then it is closed 4429. Meanwhile every entry reaches the
    # healthy client in well under that time (signal path: milliseconds; a missed signal: the 1 s
    # safety poll). The bound is half the stall, not a speed: a healthy client held up behind the
    # stalled one would wait the whole stall, however fast the machine.
    stall_s = 8.0
    await stack.start_worker()
    # Buffers: the gateway also gives up on the close handshake after 1 s, and the stalled client
    # reads only after that — the close frame must already be queued behind the data by then.
    window, close_s = ("100", "10") if stall == "window" else ("100000", "1")
    gw = await stack.start_gateway(IM_DELIVERY_MAX_UNACKED=window, IM_DELIVERY_CLOSE_TIMEOUT_S=close_s,
                                   IM_DELIVERY_SEND_TIMEOUT_S=str(stall_s))
    cid = await outbox.start_conversation(["ana", "ben"])
    burst = 150
    if stall == "buffers":  # ~18 KiB per message (two frames): 400 of them are far past the socket buffers
        outbox.body, burst = "x" * 9000, 400
    stalled = await stalled_connect(gw.url + "?ticket=" + tokens.ticket("ana", "stuck"))
    ben = await StreamClient.connect(gw.url, tokens.ticket("ben", "desk"), name="ben", auto_ack=True)
    arrival: dict[int, float] = {}

    async def watch() -> None:
        while True:
            for frame in ben.queued:
                arrival.setdefault(frame["cursor"], time.time())
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    await outbox.post(cid, "ben", burst)  # 2 frames each: ana's window (100) fills, ben's never
    await eventually(lambda: len(ben.messages()) >= burst, timeout=30)
    await eventually(lambda: _closed_4429(gw.port), timeout=20 + stall_s)
    await outbox.post(cid, "ben", 20)  # and after the close, ben goes on as before
    await eventually(lambda: len(ben.messages()) >= burst + 20, timeout=30)
    # Every entry written before it is read: the last message's conversation.updated may land in
    # the queue (and reach ben) after its message.created — reading the queue at the moment the
    # last message arrived missed it once, and ben's arrivals then held one more cursor.
    queue = mongo[mongo_db_name]["delivery_queue"]
    ben_queue = {"tenant_id": TENANT, "agent_id": "ben"}
    await eventually(lambda: _count_is_where(queue, ben_queue, 1 + 2 * (burst + 20)), timeout=30)
    appended = {d["cursor"]: d["created_at"].timestamp() async for d in queue.find(ben_queue)}
    await eventually(lambda: set(appended) <= set(arrival), timeout=10)
    watcher.cancel()
    assert set(appended) == set(arrival)
    worst = max(arrival[c] - appended[c] for c in appended)
    assert worst < stall_s / 2, f"the healthy client waited {worst:.2f}s (the stall lasts {stall_s} s)"
    # The gateway is done with the stalled connection (closed, handler ended, unregistered) ...
    registry = mongo[mongo_db_name]["delivery_connections"]
    await eventually(lambda: _none_for(registry, "ana"), timeout=20)
    # ... and once it reads again, the stalled client finds the close code telling it to resume.
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async for _ in stalled:
            pass
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    print(f"worst latency for the healthy client: {worst:.3f}s")
    await ben.close()


async def _count_is(collection, n: int) -> bool:
    return await collection.count_documents({}) == n


async def _count_is_where(collection, query: dict, n: int) -> bool:
    return await collection.count_documents(query) == n


async def _none_for(registry, agent: str) -> bool:
    return await registry.count_documents({"tenant_id": TENANT, "agent_id": agent}) == 0


async def _closed_4429(port: int) -> bool:
    import httpx

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return 'im_delivery_connections_closed_total{code="4429"} 1.0' in text


async def test_mongodb_down_while_a_client_connects_closes_it_1012_and_it_connects_once_mongodb_is_back(
    stack, outbox, tokens, private_mongo
):
    """A connect whose set-up cannot reach MongoDB is told to come back (1012), not dropped with an
    unhandled error (10,000 sockets connecting at once to an overloaded SecantusDB did that)."""
    env = {"IM_MONGO_URI": private_mongo.uri, "IM_MONGO_TIMEOUT_S": "1"}
    stack.directory = None  # the stack's own check reads the shared MongoDB: this one reads ours
    await stack.start_worker(**env)
    private = AsyncMongoClient(private_mongo.uri)
    try:
        for agent in ("ana", "ben"):
            await outbox.agent_changed(agent, active=True)
        agents = private[stack.env["IM_MONGO_DB"]]["delivery_agents"]
        await eventually(lambda: _count_is(agents, 2), timeout=30)
    finally:
        await private.close()
    gw = await stack.start_gateway(**env)
    await asyncio.to_thread(private_mongo.stop)
    try:
        refused = await StreamClient.connect(gw.url, tokens.ticket("ana", "desk"), name="ana-while-down")
        assert await refused.closed_with(timeout=20) == 1012
    finally:
        await asyncio.to_thread(private_mongo.start)
    cid = await outbox.start_conversation(["ana", "ben"])  # queues a conversation frame for ana

    async def attempt() -> StreamClient | None:
        """Connected = the thread's frame arrived; a 1012 (MongoDB not rediscovered yet) = retry."""
        client = await StreamClient.connect(gw.url, tokens.ticket("ana", "desk"), name="ana")
        await eventually(lambda: client.task.done() or client.queued, timeout=15)
        if client.queued:
            return client
        assert client.close_code == 1012
        return None

    ana = None
    for _ in range(10):  # the driver finds the restarted server within a heartbeat or two
        ana = await attempt()
        if ana is not None:
            break
    assert ana is not None, "never connected after MongoDB came back"
    await outbox.post(cid, "ben", 2)
    await eventually(lambda: len(ana.messages()) == 2, timeout=30)
    await ana.close()
