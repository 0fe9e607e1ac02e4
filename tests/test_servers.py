"""The fixture layer hands out real servers: a Kafka that answers metadata, a MongoDB with transactions."""

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.integration


async def test_kafka_round_trip_through_the_session_broker(kafka_bootstrap, kafka_topics, endpoints):
    topic = f"{kafka_topics}im.messages.v1"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=endpoints.kafka_idempotence
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"ping", key=b"c1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = await consumer.getone()
        assert (record.key, record.value) == (b"c1", b"ping")
    finally:
        await consumer.stop()


async def test_mongo_runs_multi_document_transactions(mongo, mongo_db_name):
    db = mongo[mongo_db_name]
    await db.counters.insert_one({"_id": "c", "seq": 0})
    async with mongo.start_session() as session:

        async def txn(s):
            doc = await db.counters.find_one_and_update({"_id": "c"}, {"$inc": {"seq": 1}}, session=s,
                                                        return_document=True)
            await db.items.insert_one({"seq": doc["seq"]}, session=s)

        await session.with_transaction(txn)
    assert await db.items.count_documents({"seq": 1}) == 1

