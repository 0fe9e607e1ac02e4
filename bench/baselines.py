"""The floors, measured on the same servers in the same run: what Kafka and MongoDB themselves
allow. Each product figure is reported as a ratio to these."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from .stats import summary_ms


async def kafka_round_trip(bootstrap: str, n: int = 500, idempotence: bool = True) -> dict:
    """acks=all produce → a consumer already polling the partition receives it."""
    topic = f"bench.rtt.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotence, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    produce, round_trip = [], []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, str(i).encode(), key=b"k")
            t1 = time.perf_counter()
            record = await consumer.getone()
            t2 = time.perf_counter()
            assert record.value == str(i).encode()
            produce.append(t1 - t0)
            round_trip.append(t2 - t0)
    finally:
        await producer.stop()
        await consumer.stop()
    return {"produce": summary_ms(produce), "produce_consume": summary_ms(round_trip)}


async def mongo_writes(uri: str, n: int = 500) -> dict:
    """A plain insert, and the send transaction's shape: $inc a seq + insert message + insert outbox."""
    client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True)
    db = client[f"bench_{uuid.uuid4().hex[:8]}"]
    inserts, txns = [], []
    try:
        await db.conversations.insert_one({"_id": "c", "tenant_id": "t", "last_seq": 0})
        await db.messages.create_index([("tenant_id", 1), ("conversation_id", 1), ("seq", 1)], unique=True)
        for i in range(n):
            t0 = time.perf_counter()
            await db.plain.insert_one({"tenant_id": "t", "i": i, "body": "x" * 100})
            inserts.append(time.perf_counter() - t0)
        async with client.start_session() as session:
            for _ in range(n):
                t0 = time.perf_counter()

                async def txn(s):
                    conv = await db.conversations.find_one_and_update(
                        {"_id": "c"}, {"$inc": {"last_seq": 1}}, session=s, return_document=True)
                    await db.messages.insert_one(
                        {"tenant_id": "t", "conversation_id": "c", "seq": conv["last_seq"], "body": "x" * 100},
                        session=s)
                    await db.outbox.insert_one({"conversation_id": "c", "seq": conv["last_seq"]}, session=s)

                await session.with_transaction(txn)
                txns.append(time.perf_counter() - t0)
        ceiling = n / sum(txns)
    finally:
        await client.drop_database(db.name)
        await client.close()
    return {"insert": summary_ms(inserts), "transaction": summary_ms(txns),
            "single_transaction_ceiling_per_s": round(ceiling, 1)}


async def mongo_reads(uri: str, n: int = 10_000, batch: int = 200) -> dict:
    """Replay's floor: one agent's queue read in cursor order, `batch` entries per find (as the
    gateway reads it), entries shaped like a queued message.created frame."""
    client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True)
    db = client[f"bench_{uuid.uuid4().hex[:8]}"]
    try:
        queue = db.queue
        await queue.create_index([("tenant_id", 1), ("agent_id", 1), ("cursor", 1)], unique=True)
        frame = {"type": "message.created", "message": {
            "id": uuid.uuid4().hex, "conversation_id": uuid.uuid4().hex, "seq": 1, "sender_id": "s0",
            "body": "bench message 1", "kind": "text", "client_msg_id": "m-1",
            "created_at": "2026-01-01T00:00:00.000Z"}}
        for start in range(0, n, 1000):
            await queue.insert_many([{"tenant_id": "t", "agent_id": "a", "cursor": c, "dedupe_key": f"k{c}",
                                      "frame": frame} for c in range(start + 1, min(n, start + 1000) + 1)])
        t0 = time.perf_counter()
        last, read = 0, 0
        while True:
            # A bounded range, as the gateway reads (an open "$gt" range makes SecantusDB walk the
            # rest of the queue on every find: 10,000 entries read ~5x slower).
            docs = await queue.find({"tenant_id": "t", "agent_id": "a", "cursor": {"$gt": last, "$lte": last + batch}},
                                    {"cursor": 1, "frame": 1, "_id": 0}).sort("cursor", 1).limit(batch).to_list()
            if not docs:
                break
            read += len(docs)
            last = docs[-1]["cursor"]
        elapsed = time.perf_counter() - t0
    finally:
        await client.drop_database(db.name)
        await client.close()
    return {"docs": read, "batch": batch, "docs_per_s": round(read / elapsed, 1)}


async def measure(bootstrap: str, mongo_uri: str, idempotence: bool = True, n: int = 500,
                  reads: int = 10_000) -> dict:
    kafka = await kafka_round_trip(bootstrap, n, idempotence)
    mongo = await mongo_writes(mongo_uri, n)
    mongo["queue_read"] = await mongo_reads(mongo_uri, reads)
    floor_p50 = mongo["transaction"]["p50_ms"] + kafka["produce_consume"]["p50_ms"] + mongo["insert"]["p50_ms"]
    floor_p99 = mongo["transaction"]["p99_ms"] + kafka["produce_consume"]["p99_ms"] + mongo["insert"]["p99_ms"]
    return {
        "kafka": kafka,
        "mongo": mongo,
        # The floor of one delivered message: the send transaction, one Kafka hop, one queue insert.
        "floor": {"p50_ms": round(floor_p50, 3), "p99_ms": round(floor_p99, 3)},
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(asyncio.run(measure(sys.argv[1], sys.argv[2])), indent=2))
