"""Pure rules of delivery: signal partitioning and the conversation frame."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from im_contracts import topics
from im_delivery.bus import signal_partition
from im_delivery.worker.fanout import conversation_frame

pytestmark = pytest.mark.unit


def message(seq: int) -> dict:
    """A message as the fan-out's projection holds it (every field, as JSON)."""
    return {"id": f"m{seq}", "conversation_id": "c1", "seq": seq, "sender_id": "ana", "body": "hi", "kind": "text",
            "client_msg_id": None, "created_at": "2026-01-02T00:00:00.000Z", "edited_at": None, "deleted_at": None,
            "redacted_at": None}


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_a_gateway_reads_the_partition_the_producer_writes_its_signals_to(partitions):
    every = list(range(partitions))
    for gateway_id in ("gw-1", "gw-2", "host-a-4242", "ünïcode-gateway"):
        chosen = DefaultPartitioner()(topics.gateway_key(gateway_id), every, every)
        assert signal_partition(gateway_id, partitions) == chosen


def test_the_conversation_frame_carries_the_newest_last_message_known():
    projection = {"conversation_id": "c1", "participants": [{"id": "ana", "display_name": "Ana"}],
                  "related": None, "created_by": "ana", "created_at": "2026-01-01T00:00:00.000Z",
                  "last_seq": 7, "last_message": message(7), "last_message_at": "2026-01-02T00:00:00.000Z"}
    older_snapshot = {**projection, "id": "c1", "last_seq": 5, "last_message": message(5)}
    frame = conversation_frame(projection, older_snapshot).model_dump(mode="json")
    assert frame["type"] == "conversation.updated"
    assert frame["conversation"]["last_seq"] == 7 and frame["conversation"]["last_message"] == message(7)
    assert conversation_frame({**projection, "last_seq": 0, "last_message": None}).conversation.last_seq == 0


def test_a_messages_update_is_the_same_size_in_a_thread_of_two_or_of_a_hundred():
    """Each recipient of a message gets a conversation.updated: listing the participants in it made
    a message cost the square of the thread's size. Now only a thread's start or a change of its
    participants lists them; a message's update says null (unchanged)."""
    import json

    from im_contracts.frames import SERVER_FRAMES

    def projection(n: int) -> dict:
        return {"conversation_id": "c1", "participants": [{"id": f"agent-{i:03d}", "display_name": f"Agent {i}"}
                                                          for i in range(n)],
                "related": None, "created_by": "agent-000", "created_at": "2026-01-01T00:00:00.000Z",
                "last_seq": 7, "last_message": None, "last_message_at": "2026-01-02T00:00:00.000Z"}

    small, big = (conversation_frame(projection(n)).model_dump_json() for n in (2, 100))
    assert len(small) == len(big)
    assert json.loads(big)["conversation"]["participants"] is None
    SERVER_FRAMES.validate_python({**json.loads(big), "cursor": 1})
    snapshot = {**projection(100), "id": "c1"}
    started = conversation_frame(projection(100), snapshot)
    assert len(started.conversation.participants) == 100, "a start (or a change) lists them"


def test_a_gateway_heartbeat_stays_small_at_any_socket_count():
    # 100,000 sockets: the beat that listed their ids was ~3.6 MB, above Kafka's 1 MiB record limit.
    from im_delivery.gateway.connection import StreamConnection
    from im_delivery.gateway.hub import Hub
    from im_delivery.settings import DeliverySettings

    hub = Hub(DeliverySettings(gateway_id="gw-1"), producer=None, store=None)
    for i in range(100_000):
        hub.add(StreamConnection(f"{i:032x}", "acme", f"agent-{i}", "laptop", websocket=None, store=None,
                                 settings=hub.settings))
    beat = hub.beat(len(hub.connections()))
    assert beat.connection_count == 100_000
    assert len(beat.to_bytes()) < 1024


def test_the_safety_poll_reads_every_agent_once_per_round_of_slices():
    from im_delivery.gateway.hub import in_slice

    agents = [("acme", f"a{i}") for i in range(3000)] + [("globex", f"a{i}") for i in range(1000)]
    parts = 15  # the default 30 s round in 2 s ticks
    slices = [[a for a in agents if in_slice(*a, part, parts)] for part in range(parts)]
    assert sorted(a for s in slices for a in s) == sorted(agents)  # each once, none left out
    assert max(len(s) for s in slices) < 2 * len(agents) / parts  # spread out, not one big read
    assert all(in_slice(t, a, 0, 1) for t, a in agents[:10])  # one slice: everyone every tick
