"""The gateways' heartbeats (im.gateways.v1, a consumer group of its own so a busy fan-out never
makes a live gateway look silent): each records that the gateway is alive, and at a gateway's new
boot (epoch) also sweeps the registrations its earlier boot left behind."""

from __future__ import annotations

import asyncio
import time

from im_contracts.events import GatewayHeartbeat
from im_runtime.kafka import is_transient

from ..bus import Item, event_scope
from ..store import QueueStore


class EpochSweeps:
    """When a heartbeat also sweeps (pure; the clock is passed in). The sweep scans the gateway's
    registrations — 10,000 per beat at 10,000 sockets, a core's worth on SecantusDB — so it runs
    once per new epoch, and again every `resweep_s` in case a late straggler registered."""

    def __init__(self, resweep_s: float) -> None:
        self.resweep_s = resweep_s
        self._last: dict[str, tuple[str, float]] = {}  # gateway -> (epoch, when) of its last sweep

    def due(self, gateway_id: str, epoch: str, now: float) -> bool:
        last = self._last.get(gateway_id)
        return last is None or last[0] != epoch or now - last[1] >= self.resweep_s

    def done(self, gateway_id: str, epoch: str, now: float) -> None:
        self._last[gateway_id] = (epoch, now)


class GatewayHeartbeats:
    def __init__(self, queue: QueueStore, resweep_s: float) -> None:
        self.queue = queue
        self.sweeps = EpochSweeps(resweep_s)

    async def handle_batch(self, items: list[Item]) -> None:
        """Each gateway's beats in order, the gateways concurrently; a failure is raised once all
        have finished (a non-transient one first), so a retry never overlaps a straggler."""
        by_gateway: dict[str, list[Item]] = {}
        for item in items:
            if isinstance(item[0], GatewayHeartbeat):
                by_gateway.setdefault(item[0].gateway_id, []).append(item)
        outcomes = await asyncio.gather(*(self._in_order(beats) for beats in by_gateway.values()),
                                        return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise next((f for f in failures if not is_transient(f)), failures[0])

    async def _in_order(self, beats: list[Item]) -> None:
        for event, record in beats:
            with event_scope(event, record):
                await self.on_heartbeat(event)

    async def on_heartbeat(self, beat: GatewayHeartbeat) -> None:
        now = time.monotonic()
        sweep = self.sweeps.due(beat.gateway_id, beat.epoch, now)
        await self.queue.gateway_seen(beat.gateway_id, beat.epoch, beat.occurred_at, sweep=sweep)
        if sweep:
            self.sweeps.done(beat.gateway_id, beat.epoch, now)
