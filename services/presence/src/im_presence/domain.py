"""The presence rules of one agent: a set of live connections with idle flags → online / away / offline.

Pure: no I/O and no clock (callers pass `now`). Every function mutates the `AgentState` it is
given and says whether it changed anything; what users see is `AgentState.shown()`.

- online while at least one live connection is active; away when every connection is idle;
- offline only once the grace period has passed with no connection (a reload never flaps);
- a redelivered or duplicated event changes nothing: connections are a set keyed by id, the ids
  of ended connections are remembered (a replayed `ConnectionOpened` cannot revive one), and the
  ids of recent events are remembered (a duplicated `ConnectionIdle` cannot undo a later active).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from im_contracts.events import (
    ConnectionActive,
    ConnectionClosed,
    ConnectionIdle,
    ConnectionOpened,
)
from im_contracts.models import PresenceStatus

ConnectionEvent = ConnectionOpened | ConnectionClosed | ConnectionIdle | ConnectionActive

# Ended connection ids kept per agent: far more than an agent's tabs and devices, so a late
# or replayed `ConnectionOpened` of a closed connection is always recognised.
ENDED_MEMORY = 64
# Event ids kept per agent: covers a producer retry or a replayed batch of recent events.
EVENT_MEMORY = 32


@dataclass
class Connection:
    connection_id: str
    gateway_id: str
    epoch: str
    device_id: str
    opened_at: datetime
    idle: bool = False


@dataclass(frozen=True)
class Shown:
    """What a user can see of an agent's presence (the only thing worth publishing)."""

    status: PresenceStatus
    last_seen_at: datetime | None


@dataclass
class AgentState:
    tenant_id: str
    agent_id: str
    connections: dict[str, Connection] = field(default_factory=dict)
    status: PresenceStatus = "offline"
    # When the agent was last present; kept (and shown) while offline.
    last_seen_at: datetime | None = None
    # When the last connection ended: becomes last_seen_at if the grace period passes.
    left_at: datetime | None = None
    # Set while the agent has no connection but is still shown present.
    grace_deadline: datetime | None = None
    ended: list[str] = field(default_factory=list)
    recent_events: list[str] = field(default_factory=list)

    def shown(self) -> Shown:
        return Shown(self.status, self.last_seen_at if self.status == "offline" else None)


def apply_event(
    state: AgentState,
    event: ConnectionEvent,
    *,
    now: datetime,
    grace: timedelta,
    epoch_retired: bool = False,
) -> bool:
    """Apply one connection event; `epoch_retired`: its gateway has rebooted since (a stale event)."""
    if event.event_id in state.recent_events:
        return False
    _remember(state.recent_events, event.event_id, EVENT_MEMORY)
    cid = event.connection_id
    if isinstance(event, ConnectionOpened):
        if cid in state.connections or cid in state.ended:
            return True
        if epoch_retired:
            # The gateway that opened it has rebooted since: the connection is already gone.
            _remember(state.ended, cid, ENDED_MEMORY)
            return True
        state.connections[cid] = Connection(
            connection_id=cid,
            gateway_id=event.gateway_id,
            epoch=event.gateway_epoch,
            device_id=event.device_id,
            opened_at=event.occurred_at,
        )
    elif isinstance(event, ConnectionClosed):
        _end(state, [cid])
    else:
        connection = state.connections.get(cid)
        if connection is not None:
            connection.idle = isinstance(event, ConnectionIdle)
    _settle(state, now=now, grace=grace, left_at=event.occurred_at)
    return True


def expire_gateway(
    state: AgentState,
    gateway_id: str,
    epochs: frozenset[str] | None,
    *,
    seen_at: datetime,
    now: datetime,
    grace: timedelta,
) -> bool:
    """A gateway went silent (`epochs` None: all of its connections) or rebooted (its old epochs)."""
    gone = [
        c.connection_id
        for c in state.connections.values()
        if c.gateway_id == gateway_id and (epochs is None or c.epoch in epochs)
    ]
    if not gone:
        return False
    _end(state, gone)
    _settle(state, now=now, grace=grace, left_at=seen_at)
    return True


def fire_deadline(state: AgentState, *, now: datetime) -> bool:
    """The grace period has passed with no connection: the agent goes offline."""
    if state.connections or state.grace_deadline is None or now < state.grace_deadline:
        return False
    state.status = "offline"
    state.last_seen_at = state.left_at or state.grace_deadline
    state.grace_deadline = None
    return True


def _end(state: AgentState, connection_ids: list[str]) -> None:
    for cid in connection_ids:
        state.connections.pop(cid, None)
        _remember(state.ended, cid, ENDED_MEMORY)


def _settle(state: AgentState, *, now: datetime, grace: timedelta, left_at: datetime) -> None:
    if state.connections:
        state.grace_deadline = None
        active = any(not c.idle for c in state.connections.values())
        state.status = "online" if active else "away"
    elif state.status != "offline" and state.grace_deadline is None:
        # Still shown present: a reload reopens within the grace period and nobody sees a flap.
        state.grace_deadline = now + grace
        state.left_at = left_at


def _remember(memory: list[str], item: str, limit: int) -> None:
    if item not in memory:
        memory.append(item)
        del memory[:-limit]
