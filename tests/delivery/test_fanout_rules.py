"""Pure rules of the fan-out and the heartbeats' sweeps, without a server: entry keys, what one
reader's `conversation.updated` says, which events stay in order together, when a sweep is due."""

from __future__ import annotations

import pytest
from im_contracts.events import AgentChanged, ReadMarkerMoved, Typing
from im_delivery.worker.fanout import conversation_frame, dedupe_key, for_reader, scope_of
from im_delivery.worker.gateways import EpochSweeps
from im_runtime.mongo import field_name

pytestmark = pytest.mark.unit


def message(seq: int) -> dict:
    return {"id": f"m{seq}", "conversation_id": "c1", "seq": seq, "sender_id": "ana", "body": "hi",
            "created_at": "2026-01-01T00:00:09.000Z"}


def test_entry_keys_of_ids_that_hold_colons_or_percents_never_meet():
    assert dedupe_key("msg", "c1", 7) == "msg:c1:7"
    assert dedupe_key("read", "a:b", "c") != dedupe_key("read", "a", "b:c")
    assert dedupe_key("read", "50%", "x") == "read:50%25:x"


def test_each_reader_gets_its_own_read_state_and_never_more_read_than_posted():
    conv = {"conversation_id": "c1", "related": None, "created_by": "ana",
            "created_at": "2026-01-01T00:00:00.000Z", "last_seq": 9, "last_message": message(9),
            "last_message_at": "2026-01-01T00:00:09.000Z"}
    frame = conversation_frame(conv)
    markers = {field_name("ana.b"): 9, field_name("ben"): 4, field_name("cy"): 12}
    ana = for_reader(frame, markers, "ana.b").conversation
    ben = for_reader(frame, markers, "ben").conversation
    cy = for_reader(frame, markers, "cy").conversation
    dee = for_reader(frame, markers, "dee").conversation
    assert (ana.last_read_seq, ana.unread_count) == (9, 0)
    assert (ben.last_read_seq, ben.unread_count) == (4, 5)
    assert (cy.last_read_seq, cy.unread_count) == (9, 0), "a marker past last_seq reads as last_seq"
    assert (dee.last_read_seq, dee.unread_count) == (0, 9), "no marker: nothing read"
    assert frame.conversation.participants is None, "a message's update leaves participants unchanged"
    assert (frame.conversation.last_read_seq, frame.conversation.unread_count) == (0, 0), \
        "the shared frame is not changed per reader"


def test_a_threads_events_stay_in_order_together_and_an_agents_apart_from_threads():
    typing = Typing(tenant_id="acme", conversation_id="c1", agent_id="ana")
    read = ReadMarkerMoved(tenant_id="acme", conversation_id="c1", agent_id="ben", seq=3, recipients=["ben"])
    changed = AgentChanged(tenant_id="acme", agent_id="ana", display_name="Ana", active=True)
    assert scope_of(typing) == scope_of(read) == ("conversation", "acme", "c1")
    assert scope_of(changed) == ("agent", "acme", "ana")
    other_tenant = Typing(tenant_id="globex", conversation_id="c1", agent_id="ana")
    assert scope_of(other_tenant) != scope_of(typing), "tenants never share a scope"


def test_a_heartbeat_sweeps_at_each_new_epoch_and_again_only_after_the_resweep_period():
    sweeps = EpochSweeps(resweep_s=60.0)
    assert sweeps.due("gw-1", "boot-1", now=0.0)
    sweeps.done("gw-1", "boot-1", now=0.0)
    assert not sweeps.due("gw-1", "boot-1", now=59.0)
    assert sweeps.due("gw-1", "boot-1", now=60.0), "a late straggler of the old boot is swept too"
    assert sweeps.due("gw-1", "boot-2", now=1.0), "a restarted gateway is swept at once"
    assert sweeps.due("gw-2", "boot-1", now=1.0), "each gateway has its own"
