"""The pure presence rules (im_presence.domain): no servers, an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from im_contracts.events import ConnectionActive, ConnectionClosed, ConnectionIdle, ConnectionOpened
from im_presence.domain import (
    ENDED_MEMORY,
    AgentState,
    Shown,
    apply_event,
    expire_gateway,
    fire_deadline,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(kind, connection_id: str, seconds: float = 0, gateway: str = "gw-1", epoch: str = "e1"):
    return kind(tenant_id="t1", agent_id="a1", connection_id=connection_id, device_id="d1",
                gateway_id=gateway, gateway_epoch=epoch, occurred_at=at(seconds))


def apply(state: AgentState, kind, connection_id: str, seconds: float = 0, **kw) -> bool:
    e = event(kind, connection_id, seconds, **kw)
    return apply_event(state, e, now=at(seconds), grace=GRACE)


def fresh() -> AgentState:
    return AgentState("t1", "a1")


def test_an_agent_never_seen_is_offline_without_last_seen():
    assert fresh().shown() == Shown("offline", None)


def test_one_open_connection_is_online():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    assert state.shown() == Shown("online", None)


def test_closing_the_last_connection_keeps_the_agent_shown_until_the_grace_period_ends():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    apply(state, ConnectionClosed, "c1", seconds=5)
    assert state.shown() == Shown("online", None)
    assert state.grace_deadline == at(15)
    assert not fire_deadline(state, now=at(14.9))
    assert fire_deadline(state, now=at(15))
    assert state.shown() == Shown("offline", at(5))


def test_a_reload_within_grace_clears_the_deadline_and_never_goes_offline():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    apply(state, ConnectionClosed, "c1", seconds=5)
    apply(state, ConnectionOpened, "c2", seconds=6)
    assert state.grace_deadline is None
    assert not fire_deadline(state, now=at(100))
    assert state.shown() == Shown("online", None)


def test_two_tabs_one_closed_stays_online_without_a_deadline():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    apply(state, ConnectionOpened, "c2")
    apply(state, ConnectionClosed, "c1", seconds=1)
    assert state.shown().status == "online"
    assert state.grace_deadline is None
    assert set(state.connections) == {"c2"}


def test_all_connections_idle_is_away_and_one_active_again_is_online():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    apply(state, ConnectionOpened, "c2")
    apply(state, ConnectionIdle, "c1")
    assert state.status == "online"
    apply(state, ConnectionIdle, "c2")
    assert state.status == "away"
    apply(state, ConnectionActive, "c1")
    assert state.status == "online"


def test_closing_the_only_active_connection_leaves_the_idle_one_away():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    apply(state, ConnectionOpened, "c2")
    apply(state, ConnectionIdle, "c2")
    apply(state, ConnectionClosed, "c1")
    assert state.status == "away"


def test_the_same_event_twice_changes_nothing_the_second_time():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    idle = event(ConnectionIdle, "c1", 1)
    assert apply_event(state, idle, now=at(1), grace=GRACE)
    apply(state, ConnectionActive, "c1", seconds=2)
    assert not apply_event(state, idle, now=at(3), grace=GRACE)
    assert state.status == "online"


def test_a_replayed_open_cannot_revive_a_closed_connection():
    state = fresh()
    opened = event(ConnectionOpened, "c1")
    apply_event(state, opened, now=at(0), grace=GRACE)
    apply(state, ConnectionClosed, "c1", seconds=1)
    replay = opened.model_copy(update={"event_id": "another-id-same-connection"})
    apply_event(state, replay, now=at(2), grace=GRACE)
    assert state.connections == {}
    assert fire_deadline(state, now=at(11))


def test_ended_connections_are_remembered_only_up_to_a_bound():
    state = fresh()
    for i in range(ENDED_MEMORY + 10):
        apply(state, ConnectionOpened, f"c{i}")
        apply(state, ConnectionClosed, f"c{i}")
    assert len(state.ended) == ENDED_MEMORY
    assert state.ended[-1] == f"c{ENDED_MEMORY + 9}"


def test_an_open_from_a_rebooted_gateway_epoch_is_ignored():
    state = fresh()
    e = event(ConnectionOpened, "c1", epoch="old")
    apply_event(state, e, now=at(0), grace=GRACE, epoch_retired=True)
    assert state.connections == {}
    assert state.shown() == Shown("offline", None)


def test_idle_or_close_of_an_unknown_connection_changes_no_status():
    state = fresh()
    apply(state, ConnectionIdle, "ghost")
    apply(state, ConnectionClosed, "ghost")
    assert state.shown() == Shown("offline", None)
    assert state.grace_deadline is None


def test_a_silent_gateway_expires_only_its_own_connections():
    state = fresh()
    apply(state, ConnectionOpened, "c1", gateway="gw-1")
    apply(state, ConnectionOpened, "c2", gateway="gw-2")
    assert expire_gateway(state, "gw-1", None, seen_at=at(3), now=at(5), grace=GRACE)
    assert set(state.connections) == {"c2"}
    assert state.status == "online"
    assert not expire_gateway(state, "gw-1", None, seen_at=at(3), now=at(6), grace=GRACE)


def test_expiring_the_last_connection_starts_the_grace_period_with_the_last_heartbeat_as_last_seen():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    expire_gateway(state, "gw-1", None, seen_at=at(3), now=at(13), grace=GRACE)
    assert state.shown().status == "online"
    assert state.grace_deadline == at(23)
    fire_deadline(state, now=at(23))
    assert state.shown() == Shown("offline", at(3))


def test_a_new_epoch_expires_the_old_epochs_connections_and_keeps_the_new_ones():
    state = fresh()
    apply(state, ConnectionOpened, "old", epoch="e1")
    apply(state, ConnectionOpened, "new", epoch="e2")
    expire_gateway(state, "gw-1", frozenset({"e1"}), seen_at=at(1), now=at(1), grace=GRACE)
    assert set(state.connections) == {"new"}
    # A late close of the expired connection is harmless.
    apply(state, ConnectionClosed, "old", seconds=2)
    assert state.status == "online"


def test_offline_keeps_last_seen_and_coming_back_hides_it():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    apply(state, ConnectionClosed, "c1", seconds=1)
    fire_deadline(state, now=at(11))
    assert state.shown() == Shown("offline", at(1))
    apply(state, ConnectionOpened, "c2", seconds=20)
    assert state.shown() == Shown("online", None)
    assert state.last_seen_at == at(1)


def test_a_deadline_never_fires_twice():
    state = fresh()
    apply(state, ConnectionOpened, "c1")
    apply(state, ConnectionClosed, "c1", seconds=1)
    assert fire_deadline(state, now=at(11))
    assert not fire_deadline(state, now=at(12))
