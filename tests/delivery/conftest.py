"""Delivery test kit: worker/gateway processes, an event producer acting as im-api's outbox,
tokens and tickets, and a WebSocket client that records every frame it receives."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from aiokafka import AIOKafkaProducer
from im_contracts import topics
from im_contracts.codec import event_headers
from im_contracts.events import (
    AgentChanged,
    ConversationStarted,
    Event,
    MessagePosted,
    ParticipantsChanged,
)
from im_contracts.frames import SERVER_FRAMES
from im_contracts.models import ConversationSnapshot, Message, Participant
from im_runtime.auth import Principal, TokenVerifier
from im_runtime.settings import CommonSettings
from imctl.servers import free_port
from imctl.tokens import mint
from pydantic import ValidationError
from support.wait import eventually

TENANT = "acme"

# Every interval shortened so the folder runs in minutes (production defaults: see settings.py).
FAST = {
    "IM_DELIVERY_SAFETY_POLL_S": "1.0",
    "IM_DELIVERY_ACK_WRITE_S": "0.2",
    "IM_DELIVERY_HEARTBEAT_S": "1.0",
    "IM_DELIVERY_HOLD_BACK_S": "2.0",
    "IM_DELIVERY_PRUNE_INTERVAL_S": "0.5",
    "IM_DELIVERY_GATEWAY_EXPIRY_S": "3.0",
    "IM_DELIVERY_SEND_TIMEOUT_S": "1.0",
    "IM_DELIVERY_CLOSE_TIMEOUT_S": "1.0",
    "IM_RETRY_INITIAL_S": "0.05",
    "IM_RETRY_MAX_S": "0.5",
    "IM_LOG_LEVEL": "WARNING",
}


@dataclass
class Gateway:
    gateway_id: str
    port: int
    proc: Any

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"


@dataclass
class DeliveryStack:
    """Starts `im-delivery-worker` / `im-delivery-gateway` processes the way `make run` does."""

    services: Any
    env: dict[str, str]
    directory: Any = None  # async callable: announce the test agents (AgentChanged) and wait for it
    worker: Any = None
    gateways: list[Gateway] = field(default_factory=list)

    async def start_worker(self, **extra: str) -> Any:
        port = free_port()
        # Consumer groups of this test's own (stable across a worker restart): on one broker,
        # tests never share a group and so never wait on each other's rebalances.
        prefix = self.env["IM_TOPIC_PREFIX"]
        groups = {"IM_DELIVERY_FANOUT_GROUP": f"{prefix}fanout", "IM_DELIVERY_QUEUE_GROUP": f"{prefix}queue",
                  "IM_DELIVERY_GATEWAYS_GROUP": f"{prefix}gateways"}
        env = {**self.env, **FAST, **groups, "IM_DELIVERY_WORKER_PORT": str(port), **extra}
        self.worker = self.services.start("delivery-worker", ["-m", "im_delivery.worker"], env,
                                          f"http://127.0.0.1:{port}/readyz")
        await self.worker.wait_ready()
        if self.directory is not None:
            await self.directory()
        return self.worker

    async def start_gateway(self, gateway_id: str | None = None, **extra: str) -> Gateway:
        port = free_port()
        gateway_id = gateway_id or f"gw-{uuid.uuid4().hex[:6]}"
        env = {**self.env, **FAST, "IM_STREAM_PORT": str(port), "IM_DELIVERY_GATEWAY_ID": gateway_id, **extra}
        proc = self.services.start(f"gateway-{gateway_id}", ["-m", "im_delivery.gateway"], env,
                                   f"http://127.0.0.1:{port}/readyz")
        await proc.wait_ready()
        gw = Gateway(gateway_id, port, proc)
        self.gateways.append(gw)
        return gw


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


KNOWN_AGENTS = ("ana", "ben", "cy", "dee")


@pytest.fixture
async def stack(request, mongo, services, service_env, kafka_topics, outbox) -> AsyncIterator[DeliveryStack]:
    # `mongo` (set up first, torn down last) drops this test's database after the services stop.
    agents = mongo[service_env["IM_MONGO_DB"]]["delivery_agents"]

    async def directory() -> None:
        """im-api's directory announces the test agents; gateways refuse agents they never heard of."""
        for agent in KNOWN_AGENTS:
            await outbox.agent_changed(agent, active=True)
        async def projected() -> bool:
            found = {"tenant_id": TENANT, "agent_id": {"$in": list(KNOWN_AGENTS)}}
            return await agents.count_documents(found) == len(KNOWN_AGENTS)

        await eventually(projected, timeout=30, message="the directory projection never caught up")

    stack = DeliveryStack(services, service_env, directory=directory)
    yield stack
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:  # the services' last log lines explain a failure
        for proc in services.started:
            print(f"--- {proc.name} (last lines)\n{proc.tail(40)}")


class Outbox:
    """Produces domain events onto the real topics as im-api's outbox would (keyed, in order)."""

    def __init__(self, producer: AIOKafkaProducer, prefix: str) -> None:
        self.producer = producer
        self.prefix = prefix
        self.seqs: dict[str, int] = {}
        self.snapshots: dict[str, ConversationSnapshot] = {}
        self.body = ""  # appended to every message body (a test wanting big frames sets it)

    async def send(self, topic: topics.Topic, key: bytes, event: Event) -> None:
        await self.producer.send_and_wait(topic.name(self.prefix), event.to_bytes(), key=key,
                                          headers=event_headers(event))

    async def raw(self, topic: topics.Topic, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(topic.name(self.prefix), value, key=key)

    async def start_conversation(self, participants: list[str], conversation_id: str | None = None) -> str:
        cid = conversation_id or f"c-{uuid.uuid4().hex[:10]}"
        snap = ConversationSnapshot(
            id=cid, participants=[Participant(id=a, display_name=a.upper()) for a in participants],
            created_by=participants[0], created_at=datetime.now(UTC),
        )
        self.snapshots[cid] = snap
        self.seqs[cid] = 0
        await self.send(topics.CONVERSATIONS, topics.conversation_key(cid),
                        ConversationStarted(tenant_id=TENANT, conversation=snap, recipients=participants))
        return cid

    def message(self, cid: str, sender: str, seq: int | None = None) -> MessagePosted:
        if seq is None:
            self.seqs[cid] += 1
            seq = self.seqs[cid]
        recipients = [p.id for p in self.snapshots[cid].participants]
        msg = Message(id=f"{cid}-m{seq}", conversation_id=cid, seq=seq, sender_id=sender,
                      body=f"hello {seq}{self.body}", client_msg_id=f"k{seq}", created_at=datetime.now(UTC))
        return MessagePosted(tenant_id=TENANT, message=msg, recipients=recipients)

    async def post(self, cid: str, sender: str, count: int = 1) -> list[MessagePosted]:
        sent = []
        for _ in range(count):
            event = self.message(cid, sender)
            # send() keeps order per partition; the outbox relay publishes a thread in seq order.
            await self.producer.send(topics.MESSAGES.name(self.prefix), event.to_bytes(),
                                     key=topics.conversation_key(cid), headers=event_headers(event))
            sent.append(event)
        await self.producer.flush()
        return sent

    async def change_participants(self, cid: str, removed: list[str]) -> None:
        old = self.snapshots[cid]
        snap = old.model_copy(update={"participants": [p for p in old.participants if p.id not in removed]})
        self.snapshots[cid] = snap
        await self.send(topics.CONVERSATIONS, topics.conversation_key(cid), ParticipantsChanged(
            tenant_id=TENANT, conversation=snap, removed=removed, changed_by=removed[0],
            recipients=[p.id for p in old.participants]))

    async def agent_changed(self, agent_id: str, active: bool) -> None:
        await self.send(topics.AGENTS, topics.agent_key(TENANT, agent_id),
                        AgentChanged(tenant_id=TENANT, agent_id=agent_id, display_name=agent_id, active=active))


@pytest.fixture
async def outbox(kafka_bootstrap, kafka_topics) -> AsyncIterator[Outbox]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5,
                                enable_idempotence=True)
    await producer.start()
    try:
        yield Outbox(producer, kafka_topics)
    finally:
        await producer.stop()


@pytest.fixture
def tokens(jwt_secret) -> Tokens:
    return Tokens(jwt_secret)


class Tokens:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.verifier = TokenVerifier(CommonSettings(jwt_secret=secret))

    def jwt(self, agent: str, ttl_s: float = 3600, tenant: str = TENANT) -> str:
        return mint(self.secret, tenant, agent, ttl_s=ttl_s)

    def ticket(self, agent: str, device: str = "laptop", token_ttl_s: float = 3600, tenant: str = TENANT) -> str:
        principal = Principal(tenant, agent, "agent", time.time() + token_ttl_s)
        return self.verifier.mint_ticket(principal, device)[0]


class StreamClient:
    """A real WebSocket client: records every queued frame (batches flattened) and live frame."""

    def __init__(self, ws: Any, name: str, auto_ack: bool = False) -> None:
        self.ws = ws
        self.name = name
        self.auto_ack = auto_ack  # acknowledge each frame as it is processed, as a real client does
        self.queued: list[dict] = []
        self.live: list[dict] = []
        self.off_contract: list[str] = []  # frames contracts/frames.py does not describe
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, ticket: str | None = None, cursor: int | None = None,
                      name: str = "client", auto_ack: bool = False, **kwargs: Any) -> StreamClient:
        query = [f"ticket={ticket}"] if ticket else []
        if cursor is not None:
            query.append(f"cursor={cursor}")
        full = url + ("?" + "&".join(query) if query else "")
        ws = await websockets.connect(full, open_timeout=10, **kwargs)
        return cls(ws, name, auto_ack)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                try:
                    SERVER_FRAMES.validate_python(frame)
                except ValidationError as exc:
                    self.off_contract.append(f"{frame.get('type')}: {exc}")
                frames = frame["frames"] if frame["type"] == "batch" else [frame]
                for f in frames:
                    (self.queued if "cursor" in f else self.live).append(f)
                if self.auto_ack and self.queued:
                    await self.ack()
        except websockets.ConnectionClosed:
            pass

    @property
    def cursor(self) -> int:
        return self.queued[-1]["cursor"] if self.queued else 0

    def messages(self) -> list[tuple[str, int]]:
        return [(f["message"]["conversation_id"], f["message"]["seq"])
                for f in self.queued if f["type"] == "message.created"]

    async def ack(self, cursor: int | None = None) -> None:
        await self.ws.send(json.dumps({"type": "ack", "cursor": self.cursor if cursor is None else cursor}))

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.task.done() else None

    async def closed_with(self, timeout: float = 15.0) -> int | None:
        await eventually(lambda: self.task.done(), timeout, message=f"{self.name} still open")
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self.task
        assert not self.off_contract, f"{self.name} got frames outside contracts/frames.py: {self.off_contract[:3]}"


def assert_exactly_once_in_order(client: StreamClient, expected: dict[str, int]) -> None:
    """Wire cursors strictly increase; every (thread, seq) once; each thread in seq order."""
    assert not client.off_contract, f"frames outside contracts/frames.py: {client.off_contract[:3]}"
    cursors = [f["cursor"] for f in client.queued]
    assert cursors == sorted(set(cursors)), f"{client.name}: a cursor repeated or went back"
    got = client.messages()
    assert len(got) == len(set(got)), f"{client.name}: duplicate message"
    by_thread: dict[str, list[int]] = {}
    for cid, seq in got:
        by_thread.setdefault(cid, []).append(seq)
    assert {c: s for c, s in by_thread.items()} == {c: list(range(1, n + 1)) for c, n in expected.items() if n}, \
        f"{client.name}: missing or out-of-order messages"
