"""Presence test kit: a gateway double publishing real contract events and readers of the output topics."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from im_contracts.codec import event_headers
from im_contracts.events import (
    AgentPresence,
    ConnectionActive,
    ConnectionClosed,
    ConnectionIdle,
    ConnectionOpened,
    Event,
    GatewayHeartbeat,
)
from im_contracts.topics import CONNECTIONS, GATEWAYS, agent_key
from im_presence.app import PresenceProcess
from im_presence.settings import PresenceSettings
from support.topics import TopicTail
from support.wait import eventually

# Short enough for a fast suite, long enough that a reload (close + reopen) fits well inside.
GRACE_S = 1.0
GATEWAY_TIMEOUT_S = 2.0
SWEEP_INTERVAL_S = 0.1
HEARTBEAT_S = 0.3


def short_timings() -> dict[str, str]:
    return {
        "IM_PRESENCE_OFFLINE_GRACE_S": str(GRACE_S),
        "IM_PRESENCE_GATEWAY_TIMEOUT_S": str(GATEWAY_TIMEOUT_S),
        "IM_PRESENCE_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
        "IM_RETRY_INITIAL_S": "0.05",
        "IM_RETRY_MAX_S": "0.5",
        "IM_PRESENCE_SHUTDOWN_TIMEOUT_S": "5",
    }


class PresenceReader(TopicTail):
    """Every AgentPresence published, per agent, in order."""

    def history(self, tenant_id: str, agent_id: str) -> list[AgentPresence]:
        return [
            e for e in self.events
            if isinstance(e, AgentPresence) and e.tenant_id == tenant_id and e.agent_id == agent_id
        ]

    def statuses(self, tenant_id: str, agent_id: str) -> list[str]:
        return [e.status for e in self.history(tenant_id, agent_id)]

    def latest(self, tenant_id: str, agent_id: str) -> str | None:
        statuses = self.statuses(tenant_id, agent_id)
        return statuses[-1] if statuses else None

    async def wait_for(self, tenant_id: str, agent_id: str, status: str, timeout: float = 15.0) -> AgentPresence:
        await eventually(
            lambda: self.latest(tenant_id, agent_id) == status,
            timeout=timeout,
            message=lambda: f"{tenant_id}:{agent_id} never {status}: {self.statuses(tenant_id, agent_id)}",
        )
        return self.history(tenant_id, agent_id)[-1]


@dataclass
class GatewayDouble:
    """Publishes exactly what a delivery gateway publishes: connection events and heartbeats."""

    producer: AIOKafkaProducer
    prefix: str
    gateway_id: str
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)
    connection_ids: set[str] = field(default_factory=set)
    _beating: asyncio.Task | None = None

    async def send(self, event: Event, key: bytes | None = None) -> Event:
        await self.producer.send_and_wait(
            CONNECTIONS.name(self.prefix),
            event.to_bytes(),
            key=key or agent_key(event.tenant_id, event.agent_id),  # type: ignore[attr-defined]
            headers=event_headers(event),
        )
        return event

    def _fields(self, tenant_id: str, agent_id: str, connection_id: str) -> dict:
        return dict(tenant_id=tenant_id, agent_id=agent_id, connection_id=connection_id,
                    device_id=f"device-{connection_id}", gateway_id=self.gateway_id, gateway_epoch=self.epoch)

    async def open(self, tenant_id: str, agent_id: str, connection_id: str) -> Event:
        self.connection_ids.add(connection_id)
        return await self.send(ConnectionOpened(**self._fields(tenant_id, agent_id, connection_id)))

    async def close(self, tenant_id: str, agent_id: str, connection_id: str) -> Event:
        self.connection_ids.discard(connection_id)
        return await self.send(ConnectionClosed(**self._fields(tenant_id, agent_id, connection_id)))

    async def idle(self, tenant_id: str, agent_id: str, connection_id: str) -> Event:
        return await self.send(ConnectionIdle(**self._fields(tenant_id, agent_id, connection_id)))

    async def active(self, tenant_id: str, agent_id: str, connection_id: str) -> Event:
        return await self.send(ConnectionActive(**self._fields(tenant_id, agent_id, connection_id)))

    async def beat(self) -> None:
        heartbeat = GatewayHeartbeat(gateway_id=self.gateway_id, epoch=self.epoch,
                                     connection_count=len(self.connection_ids),
                                     connection_ids=sorted(self.connection_ids))
        await self.producer.send_and_wait(
            GATEWAYS.name(self.prefix), heartbeat.to_bytes(), key=self.gateway_id.encode(),
            headers=event_headers(heartbeat),
        )

    def start_beating(self) -> None:
        async def beat_forever() -> None:
            while True:
                await self.beat()
                await asyncio.sleep(HEARTBEAT_S)  # the gateway's own beat interval, not a test wait

        self._beating = asyncio.create_task(beat_forever())

    async def stop_beating(self) -> None:
        """The gateway dies: no close events, no more beats."""
        if self._beating:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
            self._beating = None

    async def reboot(self) -> None:
        """Back with a new boot epoch: its old connections are gone without close events."""
        await self.stop_beating()
        self.epoch = uuid.uuid4().hex
        self.connection_ids.clear()
        self.start_beating()


async def start_in_process(settings: PresenceSettings) -> PresenceProcess:
    process = PresenceProcess(settings)
    await process.start()
    await eventually(lambda: process.ownership.owned() == {0, 1, 2}, timeout=30,
                     message="the presence consumer never got the partitions")
    return process


def agent_ids(n: int) -> list[str]:
    return [f"agent-{uuid.uuid4().hex[:8]}" for _ in range(n)]


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def grace_has_passed(gw: GatewayDouble, out: PresenceReader) -> None:
    """A witness agent leaves now and is seen offline: every grace period started before has ended."""
    t, (w,) = tenant(), agent_ids(1)
    await gw.open(t, w, f"witness-{w}")
    await out.wait_for(t, w, "online")
    await gw.close(t, w, f"witness-{w}")
    await out.wait_for(t, w, "offline")


async def presence_docs(mongo, db_name: str) -> dict[str, dict]:
    """Stored presence documents by "tenant:agent" (read from their fields, not the _id encoding)."""
    return {f'{d["tenant_id"]}:{d["agent_id"]}': d async for d in mongo[db_name]["presence_agents"].find({})}
