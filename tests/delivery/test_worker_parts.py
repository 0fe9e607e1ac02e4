"""Delivery's parts in one process against the real Kafka and MongoDB: per-task send confirmation,
ids that contain ':' in two tenants, the supervised signal reader."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from pymongo import AsyncMongoClient, monitoring
from aiokafka import AIOKafkaProducer
from im_contracts import topics
from im_contracts.events import AgentChanged, QueueAdvanced, QueueAppend
from im_contracts.frames import ReadUpdatedBody
from im_delivery.bus import DeliveryBus
from im_delivery.gateway.connection import StreamConnection
from im_delivery.gateway.signals import signal_reader
from im_delivery.settings import DeliverySettings
from im_delivery.store import NewEntry, QueueStore, device_doc_id
from im_delivery.worker.fanout import dedupe_key
from im_delivery.worker.projections import Projections
from im_delivery.worker.queue_writer import QueueWriter
from im_runtime.process import Process

from support.plans import stages
from support.wait import eventually

pytestmark = pytest.mark.integration


def settings_for(kafka_bootstrap: str, prefix: str, **extra) -> DeliverySettings:
    return DeliverySettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, jwt_secret="x" * 32, **extra)


async def test_each_consuming_task_waits_only_for_its_own_records_before_it_commits(kafka_bootstrap, kafka_topics):
    # The fan-out consumer, the heartbeat consumer and the pruning job share one bus. When one
    # task's flush took every pending future, another task's flush found none and returned (and its
    # consumer committed) while its own records were still in flight.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=50)
    await producer.start()
    bus = DeliveryBus(producer, settings_for(kafka_bootstrap, kafka_topics))
    produced: dict[asyncio.Task, list[asyncio.Future]] = {}
    send = producer.send

    async def recording_send(*args, **kwargs) -> asyncio.Future:
        future = await send(*args, **kwargs)
        produced.setdefault(asyncio.current_task(), []).append(future)
        return future

    producer.send = recording_send  # type: ignore[method-assign]
    fanout_sent: list[asyncio.Future] = []
    other_flushing = asyncio.Event()
    fanout_may_finish = asyncio.Event()
    try:
        async def fanout_batch() -> bool:
            async with bus.confirmed():
                for i in range(20):
                    await bus.append("acme", f"agent-{i}", f"msg:c:{i}",
                                     ReadUpdatedBody(conversation_id="c", agent_id="ana", seq=i))
                # Every record is queued, none acknowledged yet (linger 50 ms).
                fanout_sent.extend(produced[asyncio.current_task()])
                fanout_may_finish.set()
                await other_flushing.wait()  # the other task is leaving its scope (flushing) now
            return all(f.done() for f in fanout_sent)  # the moment the consumer would commit

        async def heartbeat_batch() -> None:
            await fanout_may_finish.wait()
            async with bus.confirmed():
                await bus.advanced("acme", "gw-1", "ana", 1)
                other_flushing.set()  # the other task runs once this one awaits its acknowledgements

        confirmed, _ = await asyncio.gather(fanout_batch(), heartbeat_batch())
        assert len(fanout_sent) == 20
        assert confirmed, "a consuming task left its scope before its own records were acknowledged"
        assert all(f.exception() is None for f in fanout_sent)
    finally:
        await producer.stop()


async def test_ids_with_colons_in_two_tenants_never_share_a_queue_head_device_or_directory_entry(mongo, mongo_db_name):
    db = mongo[mongo_db_name]
    store, projections = QueueStore(db), Projections(db)
    await store.ensure_indexes()
    await projections.ensure_indexes()
    # With "<tenant>:<agent>" ids, tenant "a:b" + agent "c" and tenant "a" + agent "b:c" met.
    one, two = ("a:b", "c"), ("a", "b:c")
    assert await store.append(*one, [NewEntry("k1", {"n": 1}), NewEntry("k2", {"n": 2})]) == 2
    assert await store.append(*two, [NewEntry("k1", {"n": 3})]) == 1
    assert (await store.head(*one))["cursor"] == 2 and (await store.head(*two))["cursor"] == 1
    assert [e.frame["n"] for e in await store.entries_after(*two, 0, 10)] == [3]

    await store.acknowledge("a:b", "c", "d", 2)
    await store.acknowledge("a", "b:c", "d", 1)
    await store.acknowledge("a", "b", "c:d", 0)  # device ids may hold ':' too
    for ids, cursor in ((("a:b", "c", "d"), 2), (("a", "b:c", "d"), 1), (("a", "b", "c:d"), 0)):
        assert (await db["delivery_devices"].find_one({"_id": device_doc_id(*ids), "tenant_id": ids[0]}))["cursor"] == cursor

    await projections.save_agent(AgentChanged(tenant_id="a:b", agent_id="c", display_name="C", active=False))
    await projections.save_agent(AgentChanged(tenant_id="a", agent_id="b:c", display_name="BC", active=True))
    assert await store.agent_active("a:b", "c") is False
    assert await store.agent_active("a", "b:c") is True
    assert await db["delivery_agents"].count_documents({}) == 2
    # im-api reads the public head by its fields (brief-interfaces #1).
    assert (await db["delivery_heads"].find_one({"tenant_id": "a", "agent_id": "b:c"}))["cursor"] == 1
    # Dedupe keys inside one queue: conversation "x:y" + agent "z" vs conversation "x" + agent "y:z".
    assert dedupe_key("read", "x:y", "z", 1) != dedupe_key("read", "x", "y:z", 1)
    assert dedupe_key("msg", "c-1", 7) == "msg:c-1:7"  # plain ids keep brief-interfaces #4's form


async def test_a_crashed_signal_reader_is_restarted_and_reports_not_ready_while_down(kafka_bootstrap, kafka_topics):
    # A restart waits 1 s here, so "not ready while down" can be observed.
    settings = settings_for(kafka_bootstrap, kafka_topics, gateway_id="gw-sup", retry_initial_s=1.0, retry_max_s=1.0)
    got: list[int] = []
    restarts: list[bool] = []

    def on_signal(event) -> None:
        if event.cursor == 1:
            raise RuntimeError("a bug in signal handling")  # crashes the reader once
        got.append(event.cursor)

    reader = signal_reader(settings, on_signal, on_restart=lambda: restarts.append(True))
    await reader.open()
    process = Process("gateway", settings, logging.getLogger("test.signals"), grace_s=5.0)
    task = process.supervise("signals", reader.run)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    name = topics.DELIVERY_SIGNALS.name(kafka_topics)

    async def signal(cursor: int) -> None:
        event = QueueAdvanced(tenant_id="acme", gateway_id="gw-sup", agent_id="ana", cursor=cursor)
        await producer.send_and_wait(name, event.to_bytes(), key=topics.gateway_key("gw-sup"))

    try:
        assert reader.ready
        await signal(1)
        await eventually(lambda: not reader.ready, timeout=10, message="the crash never showed in readiness")
        await eventually(lambda: reader.ready and restarts, timeout=15, message="the reader never came back")
        assert not task.done()
        await signal(2)
        await eventually(lambda: got == [2], timeout=10, message="signals after the restart never arrived")
    finally:
        await process.stop()
        await reader.close()
        await producer.stop()


class _RecordingBus:
    """Stands in for DeliveryBus's Kafka side only: records the signals the writer sends."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, str, str, int]] = []

    def confirmed(self) -> _NullAsync:
        return _NullAsync()

    async def advanced(self, tenant_id: str, gateway_id: str, agent_id: str, cursor: int) -> None:
        self.signals.append((tenant_id, gateway_id, agent_id, cursor))


class _NullAsync:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc) -> None:
        return None


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event) -> None:
        if event.command_name in ("find", "insert", "update", "findAndModify", "delete"):
            self.names.append(event.command_name)

    def succeeded(self, event) -> None:
        return None

    def failed(self, event) -> None:
        return None


async def test_the_queue_writer_appends_a_batch_in_a_few_commands_for_all_its_agents_and_a_reconsumed_one_changes_nothing(
    mongo_uri, mongo_db_name
):
    """A batch is one bulk compare-and-set of every agent's head + one insert of every entry (plus
    one head read per tenant for agents the writer has not seen yet), and the routing lookup is
    one read per tenant; the dedupe keys are read only after a collision (issue 19: it was two
    commands per agent)."""
    commands = _Commands()
    client = AsyncMongoClient(mongo_uri, event_listeners=[commands], tz_aware=True)
    try:
        store = QueueStore(client[mongo_db_name])
        await store.ensure_indexes()
        await store.register("conn-1", "acme", "ana", "laptop", "gw-1", "e1")
        await store.register("conn-2", "acme", "ben", "desk", "gw-2", "e1")
        bus = _RecordingBus()
        writer = QueueWriter(store, bus)

        def batch(agent_keys: dict[tuple[str, str], list[str]]) -> list:
            return [(QueueAppend(tenant_id=t, agent_id=a, dedupe_key=k, frame={"type": "x", "k": k}), None)
                    for (t, a), keys in agent_keys.items() for k in keys]

        commands.names.clear()
        await writer.handle_batch(batch({("acme", "ana"): ["m0"], ("acme", "ben"): ["m0"], ("globex", "ana"): ["m0"]}))
        # First sight of 3 agents: a head read per tenant, one compare-and-set of the 3 heads, one
        # insert of the 3 entries; one routing read per tenant.
        assert sorted(commands.names) == sorted(["find"] * 2 + ["update", "insert"] + ["find"] * 2), commands.names
        commands.names.clear()
        bus.signals.clear()
        await writer.handle_batch(batch({("acme", "ana"): ["m1", "m2"], ("acme", "ben"): ["m1"],
                                         ("globex", "ana"): ["m1", "m2", "m3"]}))
        # Then the same two commands for the 3 agents' 6 entries + one routing read per tenant (2 tenants).
        assert sorted(commands.names) == sorted(["update", "insert"] + ["find"] * 2), commands.names
        assert sorted(bus.signals) == [("acme", "gw-1", "ana", 3), ("acme", "gw-2", "ben", 2)]
        assert (await store.head("globex", "ana"))["cursor"] == 4
        # Another writer moved a head meanwhile (e.g. before a rebalance): read again, nothing collides.
        await client[mongo_db_name]["delivery_heads"].update_one(store.head_filter("acme", "ben"), {"$inc": {"cursor": 5}})
        await writer.handle_batch(batch({("acme", "ben"): ["m9"]}))
        assert [(e.cursor, e.frame["k"]) for e in await store.entries_after("acme", "ben", 0, 100)] == \
            [(1, "m0"), (2, "m1"), (8, "m9")]

        # The same records again (a re-consumed batch) plus one new one: nothing twice, in order.
        bus.signals.clear()
        await writer.handle_batch(batch({("acme", "ana"): ["m1", "m2", "m4"]}))
        entries = await store.entries_after("acme", "ana", 0, 100)
        assert [e.frame["k"] for e in entries] == ["m0", "m1", "m2", "m4"]
        assert [e.cursor for e in entries][:3] == [1, 2, 3] and entries[3].cursor > 3  # refused cursors: a gap
        assert bus.signals == [("acme", "gw-1", "ana", entries[3].cursor)]
        # Only duplicates: nothing appended, and they are signalled again (a crash may have come
        # between an append and its signal) — up to the highest of them, not the head: cursors
        # below the head may be another writer's append still in flight (a rebalance), and a
        # gateway reads a signalled range as complete.
        bus.signals.clear()
        await writer.handle_batch(batch({("acme", "ana"): ["m1", "m4"]}))
        assert [e.frame["k"] for e in await store.entries_after("acme", "ana", 0, 100)] == ["m0", "m1", "m2", "m4"]
        assert bus.signals == [("acme", "gw-1", "ana", entries[3].cursor)]
        assert entries[3].cursor < (await store.head("acme", "ana"))["cursor"]  # the refused attempt's cursors
        # One agent's re-consumed entry in a batch with others' new ones: the insert stops at it;
        # the others' entries go in at their cursors all the same, and it alone is repaired.
        ben_head = (await store.head("acme", "ben"))["cursor"]
        bus.signals.clear()
        await writer.handle_batch(batch({("acme", "ana"): ["m2", "m5"], ("acme", "ben"): ["m10", "m11"],
                                         ("globex", "ana"): ["m4"]}))
        assert [e.frame["k"] for e in await store.entries_after("acme", "ana", 0, 100)] == ["m0", "m1", "m2", "m4", "m5"]
        assert [(e.cursor, e.frame["k"]) for e in await store.entries_after("acme", "ben", ben_head, 100)] == \
            [(ben_head + 1, "m10"), (ben_head + 2, "m11")]
        assert [e.frame["k"] for e in await store.entries_after("globex", "ana", 0, 100)] == ["m0", "m1", "m2", "m3", "m4"]
        ana_last = (await store.entries_after("acme", "ana", 0, 100))[-1].cursor
        assert sorted(bus.signals) == [("acme", "gw-1", "ana", ana_last), ("acme", "gw-2", "ben", ben_head + 2)]
    finally:
        await client.drop_database(mongo_db_name)
        await client.close()


class _RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.closed: int | None = None

    async def send_text(self, text: str) -> None:
        frame = json.loads(text)
        self.sent.extend(frame["frames"] if frame["type"] == "batch" else [frame])

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = code


async def test_a_signal_during_connection_setup_starts_no_pump_before_the_resume_cursor_is_known(
    mongo, mongo_db_name, kafka_bootstrap
):
    """The connection is routed before its resume cursor is read: a signal in between used to start
    a pump from cursor 0, whose sends the resume cursor then overwrote — and they went out twice."""
    store = QueueStore(mongo[mongo_db_name])
    await store.ensure_indexes()
    await store.append("acme", "ana", [NewEntry(f"k{i}", {"type": "x", "n": i}) for i in (1, 2, 3)])
    socket = _RecordingSocket()
    conn = StreamConnection("conn-1", "acme", "ana", "laptop", socket, store,  # type: ignore[arg-type]
                            settings_for(kafka_bootstrap, "unused"))
    conn.signal(3)  # routed, not started: nothing may be read yet
    assert not conn.pumping and socket.sent == []
    conn.last_sent = 2  # the resume cursor (the device acknowledged 2)
    conn.start()
    await eventually(lambda: not conn.pumping and socket.sent, timeout=10)
    assert [f["cursor"] for f in socket.sent] == [3]


async def test_a_signalled_range_that_was_pruned_meanwhile_closes_4409_instead_of_being_skipped(
    mongo, mongo_db_name, kafka_bootstrap
):
    """Bounded reads up to a signalled cursor: a range that comes back empty because pruning removed
    it (not because of a gap) must end in 4409, as an open read noticing the jump did."""
    store = QueueStore(mongo[mongo_db_name])
    await store.ensure_indexes()
    await store.append("acme", "ana", [NewEntry(f"k{i}", {"type": "x", "n": i}) for i in range(1, 11)])
    # The pruning job marks the head first, then deletes (worker/maintenance.py).
    await store.prune_through("acme", "ana", 6)
    socket = _RecordingSocket()
    conn = StreamConnection("conn-1", "acme", "ana", "laptop", socket, store,  # type: ignore[arg-type]
                            settings_for(kafka_bootstrap, "unused", replay_batch=4))
    # Resumed at 2 before the prune; no safety poll pending. Batches of 4: (2, 6] is all pruned, and
    # the next range starts right after it, so nothing else would notice the jump.
    conn.last_sent, conn.poll_due = 2, False
    conn.start()
    conn.signal(10)
    await eventually(lambda: not conn.pumping and conn.closing is not None, timeout=10)
    assert socket.closed == 4409 and socket.sent == []


async def test_a_presence_change_reads_a_bounded_number_of_threads_of_an_agent_in_twenty_thousand(
    mongo_uri, mongo_db_name
):
    """co_participants (who gets an agent's presence change) over an agent in 20,000 threads, each
    with a partner of its own: it reads the most recently active threads only, and its answer is
    capped, so one presence change costs the same whatever the agent's history."""
    from datetime import UTC, datetime, timedelta

    from support.reads import Reads

    reads = Reads()
    client = AsyncMongoClient(mongo_uri, event_listeners=[reads], tz_aware=True,
                              socketTimeoutMS=120_000)  # a wedged server fails the test
    try:
        projections = Projections(client[mongo_db_name])
        await projections.ensure_indexes()
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for first in range(0, 20_000, 2_000):  # in parts: one write of 20,000 rows strains the server's cache
            await client[mongo_db_name]["delivery_conversations"].insert_many([
                {"_id": f"c{i}", "tenant_id": "acme", "conversation_id": f"c{i}",
                 "participant_ids": ["ana", f"p{i:05d}"], "last_message_at": (start + timedelta(seconds=i)).isoformat()}
                for i in range(first, first + 2_000)])
        with reads.counting():
            partners = await projections.co_participants("acme", "ana", threads=500, partners=300)
        assert partners == {f"p{i:05d}" for i in range(19_700, 20_000)}, "the partners of the newest threads"
        assert reads.docs["delivery_conversations"] <= 500, reads.docs
        # On its index, without a hint (SecantusDB decodes the whole collection for a hinted find).
        found = stages(await projections.recent_threads("acme", "ana", 500).explain())
        assert "IXSCAN" in found and "COLLSCAN" not in found, found
    finally:
        # Not dropped: SecantusDB deletes a database's rows under its global storage lock in one
        # go, and 20,000 rows (with their index entries) stalled it there — every client of the
        # test server hung for minutes (CI). The server is the session's and is discarded with it.
        await client.close()


async def test_the_pruning_sweep_reads_all_queues_in_a_few_commands_and_only_works_where_it_may_prune(
    mongo_uri, mongo_db_name
):
    """Issue 19: the sweep read three things per queue every minute (a count of every queue among
    them). Now the heads and the devices are one read each; an agent is looked at only when one of
    its devices acknowledged past what is pruned (and not again until its oldest entry can have
    aged past retention), and a queue is counted only when its head says it may be over the cap."""
    from im_delivery.worker.maintenance import Maintenance

    commands = _Commands()
    client = AsyncMongoClient(mongo_uri, event_listeners=[commands], tz_aware=True)
    try:
        store = QueueStore(client[mongo_db_name])
        await store.ensure_indexes()
        settings = DeliverySettings(retention_s=3600.0, queue_cap=5)
        for i in range(30):  # idle agents: a few entries each, their device acknowledged nothing
            await store.append("acme", f"a{i}", [NewEntry(f"k{n}", {"type": "x"}) for n in range(2)])
            await store.acknowledge("acme", f"a{i}", "laptop", 0)
        await store.append("acme", "busy", [NewEntry(f"k{n}", {"type": "x"}) for n in range(8)])  # over the cap
        await store.append("acme", "reader", [NewEntry(f"k{n}", {"type": "x"}) for n in range(3)])
        await store.acknowledge("acme", "reader", "laptop", 3)  # read everything, all of it young
        maintenance = Maintenance(store, fanout=None, settings=settings)
        commands.names.clear()
        await maintenance.sweep()
        # delete (expired devices) + find devices + find heads; then the reader's two reads (nothing
        # old enough; its oldest entry's age) and the busy queue's count (an aggregate, not listed
        # here), its 3rd entry and its prune (head marked, entries deleted).
        assert sorted(commands.names) == sorted(["delete", "find", "find", "find", "find", "find",
                                                 "update", "delete"]), commands.names
        assert [e.cursor for e in await store.entries_after("acme", "busy", 0, 100)] == [4, 5, 6, 7, 8]
        commands.names.clear()
        await maintenance.sweep()  # nothing may have changed: three commands for all 32 queues
        assert sorted(commands.names) == ["delete", "find", "find"], commands.names
    finally:
        await client.drop_database(mongo_db_name)
        await client.close()


async def test_acks_of_many_sockets_are_written_in_one_command_and_a_closing_sockets_at_once(
    mongo_uri, mongo_db_name, kafka_bootstrap
):
    """Issue 19: every ack that moved a device's cursor was a write of its own (a database command
    per message at the rate clients ack). The hub writes the pending ones together every
    `ack_write_s`, and a closing socket's at once."""
    from im_delivery.gateway.hub import Hub

    commands = _Commands()
    client = AsyncMongoClient(mongo_uri, event_listeners=[commands], tz_aware=True)
    try:
        store = QueueStore(client[mongo_db_name])
        await store.ensure_indexes()
        settings = settings_for(kafka_bootstrap, "unused")
        hub = Hub(settings, None, store)  # type: ignore[arg-type]
        conns = [StreamConnection(f"conn-{i}", "acme", agent, device, _RecordingSocket(), store,  # type: ignore[arg-type]
                                  settings)
                 for i, (agent, device) in enumerate([("ana", "laptop"), ("ana", "phone"), ("ben", "desk")])]
        for n, conn in enumerate(conns):
            conn.acked = 10 + n
            hub.ack_later(conn)
        conns[0].acked = 15  # a later ack of the same socket before the write: the latest is written
        hub.ack_later(conns[0])
        commands.names.clear()
        await hub.write_acks()
        assert commands.names == ["update"]  # one command for the three devices
        assert await store.device_cursors("acme", "ana") == {"laptop": 15, "phone": 11}
        assert await store.device_cursors("acme", "ben") == {"desk": 12}
        commands.names.clear()
        await hub.write_acks()
        assert commands.names == []  # nothing pending: nothing written
        conns[2].acked = 30
        hub.ack_later(conns[2])
        await hub.write_ack_now(conns[2])  # its socket closes
        assert await store.device_cursors("acme", "ben") == {"desk": 30}
        commands.names.clear()
        await hub.write_acks()
        assert commands.names == []  # written once, at the close
    finally:
        await client.drop_database(mongo_db_name)
        await client.close()
