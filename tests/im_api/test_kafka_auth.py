"""Kafka that requires SASL/SCRAM: a broker of the test's own whose only listener for clients is
SASL_PLAINTEXT. im-api's producer, its FastStream consumer and its presence reader all get in
with the service's credentials; a client without them, or with a wrong password, does not."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from im_api_helpers import running
from im_contracts.topics import CONNECTIONS as CONNECTIONS_TOPIC
from im_contracts.topics import MESSAGES
from im_runtime.kafka import client_options
from imctl import servers as local
from imctl.topics import create_topics
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from servers import unique_name
from support.topics import read_events
from support.wait import eventually
from support.watchdog import on_abort

pytestmark = pytest.mark.integration
T = "acme"
USERS = {"admin": "admin-secret-0123456789", "im-api": "api-secret-0123456789"}


def own_broker(workdir, users: dict[str, str], acls: bool = False):
    """An Apache Kafka of the test's own requiring SCRAM (and enforcing ACLs if asked)."""
    path = workdir / unique_name("kafka-sasl-")
    broker = local.ApacheKafka(name="kafka-sasl", log_path=path / "kafka.log", data_dir=path, port=local.free_port(),
                               scram_users=users, acls=acls)
    forget = on_abort(broker.stop)
    try:
        yield broker.start()
    finally:
        forget()
        broker.stop()


@pytest.fixture
def sasl_kafka(workdir):
    yield from own_broker(workdir, USERS)


async def test_services_authenticate_with_scram_and_a_client_without_credentials_is_refused(
        sasl_kafka, api_settings, monkeypatch):
    bootstrap = sasl_kafka.bootstrap

    def metadata(credentials=None):  # a fresh admin client's metadata request (in a thread: it runs a loop)
        return asyncio.to_thread(local.kafka_metadata_ok, bootstrap, 5.0, credentials)

    assert await metadata(("im-api", USERS["im-api"]))
    assert not await metadata(), "no credentials: refused"
    assert not await metadata(("im-api", "wrong-password")), "a wrong password: refused"

    # imctl reads the same settings as the services from its environment.
    for name, value in {"IM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "IM_KAFKA_USERNAME": "admin",
                        "IM_KAFKA_PASSWORD": USERS["admin"]}.items():
        monkeypatch.setenv(name, value)
    await create_topics(bootstrap, api_settings.topic_prefix, partitions=1)

    settings = api_settings.model_copy(update={
        "kafka_bootstrap": bootstrap, "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_username": "im-api", "kafka_password": SecretStr(USERS["im-api"])})
    await serves_a_message(settings, "over SASL")
    events = await messages_on(settings)
    assert [e.message.body for e in events] == ["over SASL"]


async def serves_a_message(settings, body: str) -> None:
    """im-api on `settings` takes a message and publishes it, and is ready: its relay's producer,
    its presence reader and its assistance consumer (FastStream, in its group) all got in."""
    async with running(settings) as api:
        async def ready() -> bool:
            r = await api.http.get("/readyz")
            return r.status_code == 200 and all(r.json()["checks"].values())

        await api.add_agents(T, "alice", "bob")
        c = await api.start(T, "alice", "bob")
        assert (await api.send(T, "alice", c["id"], body, "m-1")).status_code == 201
        await eventually(ready, timeout=60, message="im-api never became ready")
        mongo = AsyncMongoClient(settings.mongo_uri, tz_aware=True)
        outbox = mongo[settings.mongo_db]["outbox"]

        async def published() -> bool:  # every outbox record sent before im-api stops
            return await outbox.count_documents({"sent_at": None}) == 0

        try:
            await eventually(published, timeout=60, message="the relay never published")
        finally:
            await mongo.close()


async def messages_on(settings) -> list:
    """What im.messages holds, read with the service's own client options (credentials too)."""
    return await read_events(MESSAGES, settings.topic_prefix, options=client_options(settings), count=1, timeout=30)


ACL_USERS = {"admin": "admin-secret-0123456789", "helpdesk-im-im-api": "api-secret-0123456789",
             "helpdesk-im-delivery-gateway": "gateway-secret-0123456789"}


@pytest.fixture
def acl_kafka(workdir):
    yield from own_broker(workdir, ACL_USERS, acls=True)


def as_user(settings, user: str):
    return settings.model_copy(update={"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_username": user,
                                       "kafka_password": SecretStr(ACL_USERS[user])})


async def test_each_principal_gets_only_its_acls_a_gateway_cannot_write_the_inbox_nor_read_assistance(
        acl_kafka, api_settings, monkeypatch):
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import (
        GroupAuthorizationFailedError,
        TopicAuthorizationFailedError,
    )
    from im_contracts.topics import ASSISTANCE_REQUESTS, INBOX
    from imctl.acls import grant

    bootstrap = acl_kafka.bootstrap
    for name, value in {"IM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "IM_KAFKA_USERNAME": "admin",
                        "IM_KAFKA_PASSWORD": ACL_USERS["admin"]}.items():
        monkeypatch.setenv(name, value)
    await create_topics(bootstrap, api_settings.topic_prefix, partitions=1)
    base = api_settings.model_copy(update={"kafka_bootstrap": bootstrap})
    admin = AIOKafkaAdminClient(**client_options(as_user(base, "admin")))
    await admin.start()
    try:
        granted = await grant(admin, api_settings.topic_prefix, group_prefix=api_settings.topic_prefix,
                              services=("im-api", "delivery-gateway"))
    finally:
        await admin.close()
    assert granted > 0

    # The gateway's principal: its own topics yes, the inbox no (only the worker writes it).
    gateway = as_user(base, "helpdesk-im-delivery-gateway")
    producer = AIOKafkaProducer(**client_options(gateway), enable_idempotence=False, request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(CONNECTIONS_TOPIC.name(api_settings.topic_prefix), b"{}", key=b"k")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(INBOX.name(api_settings.topic_prefix), b"{}", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(ASSISTANCE_REQUESTS.name(api_settings.topic_prefix), **client_options(gateway),
                                group_id="im-api-assistance", auto_offset_reset="earliest")
    with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
        await consumer.start()
        await consumer.getmany(timeout_ms=5000)
    await consumer.stop()

    # im-api as its own principal does all it does: publishes, joins its assistance group, and
    # reads presence.
    await serves_a_message(as_user(base, "helpdesk-im-im-api"), "with ACLs")
