"""contracts/: the topics of API.md, the envelope on every event, decoding and dead letters."""

import base64
import hashlib
import json
import re
import typing

import pytest
from im_api import openapi
from im_contracts import schema
from im_contracts.codec import (
    RejectedRecord,
    dead_letter_for,
    decode_record,
    event_headers,
)
from im_contracts.events import (
    ALL_EVENTS,
    SYSTEM_TENANT,
    AssistanceRequested,
    DeadLetter,
    MessagePosted,
    to_rfc3339,
)
from im_contracts.frames import CLIENT_FRAMES, SERVER_FRAMES, ClientFrame, CloseCode, ServerFrame
from im_contracts.models import Message
from im_contracts.topics import (
    ALL_TOPICS,
    ASSISTANCE_REQUESTS,
    CONVERSATIONS,
    MESSAGES,
    PRESENCE,
    agent_key,
    conversation_key,
)
from pydantic import ValidationError

pytestmark = pytest.mark.unit

API_TOPICS = {
    "im.messages.v1": "conversation id",
    "im.conversations.v1": "conversation id",
    "im.connections.v1": "tenant:agent",
    "im.gateways.v1": "gateway id",
    "im.presence.v1": "tenant:agent",
    "im.typing.v1": "conversation id",
    "helpdesk.assistance-requests.v1": "tenant:type:id",
    "im.dead-letters.v1": "original key",
}


def test_every_topic_of_the_public_contract_is_defined_with_its_key_rule():
    by_name = {t.base_name: t for t in ALL_TOPICS}
    for name, key in API_TOPICS.items():
        assert name in by_name, name
        assert by_name[name].key_rule.startswith(key), (name, by_name[name].key_rule)
    assert PRESENCE.compacted and PRESENCE.topic_config()["cleanup.policy"] == "compact"
    assert by_name["im.typing.v1"].retention_ms is not None


def test_every_event_carries_the_envelope_and_a_version():
    for event in ALL_EVENTS:
        fields = event.model_fields
        for name in ("event_id", "tenant_id", "occurred_at", "schema_version", "type"):
            assert name in fields, (event.__name__, name)
        assert fields["type"].default == event.__name__


def test_key_rules():
    assert conversation_key("c1") == b"c1"
    assert agent_key("acme", "a1") == b"acme:a1"


def _message_posted(**over) -> bytes:
    event = MessagePosted(
        tenant_id="acme",
        message=Message(id="m1", conversation_id="c1", seq=1, sender_id="a1", body="hi",
                        created_at="2026-01-01T00:00:00Z"),
        recipients=["a1", "a2"],
    )
    raw = json.loads(event.to_bytes())
    raw.update(over)
    return json.dumps(raw).encode()


def test_a_valid_record_decodes_into_its_model_and_unknown_fields_are_ignored():
    event = decode_record(MESSAGES, _message_posted(some_future_field={"x": 1}))
    assert isinstance(event, MessagePosted)
    assert event.recipients == ["a1", "a2"] and event.message.seq == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "malformed_json"),
        (None, "malformed_json"),
        (_message_posted(schema_version=2), "unsupported_schema_version"),
        (_message_posted(type="Nope"), "unknown_event_type"),
        (_message_posted(recipients="a1"), "invalid_event"),
        (_message_posted(tenant_id=""), "invalid_event"),
    ],
)
def test_a_bad_record_is_rejected_with_a_reason(value, reason):
    with pytest.raises(RejectedRecord) as info:
        decode_record(MESSAGES, value)
    assert info.value.reason == reason


def test_the_rejection_detail_never_echoes_the_record_body():
    secret_body = "customer card 4111 1111 1111 1111"
    raw = {"type": "AssistanceRequested", "tenant_id": "acme", "request_id": "r1",
           "requested_by": "a1", "agent_ids": [], "related": {"type": "ticket", "id": "1"},
           "message": secret_body}
    with pytest.raises(RejectedRecord) as info:
        decode_record(ASSISTANCE_REQUESTS, json.dumps(raw).encode())
    assert info.value.reason == "invalid_event" and "agent_ids" in info.value.detail
    assert "4111" not in info.value.detail


def test_single_event_topics_accept_records_without_the_type_discriminator():
    raw = {"tenant_id": "acme", "request_id": "r1", "requested_by": "a1", "agent_ids": ["a2"],
           "related": {"type": "ticket", "id": "123"}, "message": "help"}
    event = decode_record(ASSISTANCE_REQUESTS, json.dumps(raw).encode())
    assert isinstance(event, AssistanceRequested) and event.schema_version == 1
    with pytest.raises(RejectedRecord):
        decode_record(CONVERSATIONS, json.dumps({"tenant_id": "acme"}).encode())


def test_a_dead_letter_keeps_the_original_bytes_and_place_but_never_the_authorization_header():
    letter = dead_letter_for(
        topic="helpdesk.assistance-requests.v1", partition=2, offset=41, key=b"acme:ticket:1",
        value=b"{bad", headers=[("authorization", b"Bearer secret"), ("x-source", b"ticketing")],
        reason="malformed_json", detail="not JSON", consumer="im-api.assistance", tenant_id=None,
    )
    assert base64.b64decode(letter.original_value_b64) == b"{bad"
    assert base64.b64decode(letter.original_key_b64) == b"acme:ticket:1"
    assert (letter.original_topic, letter.original_partition, letter.original_offset) == (
        "helpdesk.assistance-requests.v1", 2, 41)
    assert [name for name, _ in letter.original_headers] == ["x-source"]
    assert b"secret" not in letter.to_bytes()


def test_a_dead_letter_always_fits_in_a_record_whatever_the_original_holds():
    # A 5 MB value, a 100 KB key, 500 headers of 10 KB and a forged 10 KB tenant id: the letter keeps
    # the value's beginning with its whole size and digest, and stays far below Kafka's 1 MiB.
    value = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    letter = dead_letter_for(
        topic="helpdesk.assistance-requests.v1", partition=0, offset=9, key=b"k" * 100_000, value=value,
        headers=[(f"h{i}", b"v" * 10_000) for i in range(500)], reason="malformed_json",
        detail="x" * 50_000, consumer="im-api.assistance", tenant_id="t" * 10_000,
    )
    encoded = letter.to_bytes()
    assert len(encoded) < 512 * 1024
    assert letter.tenant_id == SYSTEM_TENANT
    assert letter.original_value_size == len(value) and letter.original_value_truncated
    assert letter.original_value_sha256 == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(letter.original_value_b64) == value[: DeadLetter.KEPT_VALUE_BYTES]
    assert len(letter.original_headers) == DeadLetter.KEPT_HEADERS
    assert DeadLetter.model_validate_json(encoded).to_bytes() == encoded


def test_a_small_dead_letter_is_whole_and_says_so():
    letter = dead_letter_for(topic="t", partition=0, offset=1, key=None, value=b"{bad", headers=None,
                             reason="malformed_json", detail="", consumer="c", tenant_id="acme")
    assert not letter.original_value_truncated and letter.original_value_size == 4
    assert letter.tenant_id == "acme" and letter.original_key_b64 is None


def test_times_are_rfc3339_utc_and_headers_name_the_event():
    event = decode_record(MESSAGES, _message_posted())
    wire = json.loads(event.to_bytes())
    assert wire["occurred_at"].endswith("Z")
    assert wire["message"]["created_at"] == "2026-01-01T00:00:00.000Z", "times inside events too"
    assert to_rfc3339(event.message.created_at) == "2026-01-01T00:00:00.000Z"
    assert dict(event_headers(event))["event-type"] == b"MessagePosted"


def test_generated_json_schema_and_asyncapi_match_the_models():
    """`make contracts` output is committed; this fails when the models drift from it."""
    generated = schema.GENERATED_DIR
    expected = {**schema.rendered(), openapi.PATH: openapi.rendered()}
    on_disk = {str(p.relative_to(generated)): p.read_text() for p in generated.rglob("*.json")}
    assert set(on_disk) == set(expected), "run `make contracts` and commit contracts/generated/"
    for rel, text in expected.items():
        assert on_disk[rel] == text, f"{rel} drifted from the models: run `make contracts`"
    doc = json.loads(expected["asyncapi.json"])
    assert {c["address"] for c in doc["channels"].values()} >= set(API_TOPICS)



def test_every_stream_frame_validates_and_unknown_fields_are_ignored():
    batch = SERVER_FRAMES.validate_python({"type": "batch", "frames": [
        {"type": "read.updated", "cursor": 3, "conversation_id": "c1", "agent_id": "bob", "seq": 2, "later": 1},
        {"type": "message.created", "cursor": 4, "message": {
            "id": "m", "conversation_id": "c1", "seq": 3, "sender_id": "ana", "body": "hi", "kind": "text",
            "client_msg_id": "k", "created_at": "2026-01-01T00:00:00.000Z"}}]})
    assert [f.cursor for f in batch.frames] == [3, 4]
    live = SERVER_FRAMES.validate_python({"type": "presence.changed", "agent_id": "bob", "status": "away",
                                          "last_seen_at": None})
    assert live.status == "away"
    assert CLIENT_FRAMES.validate_python({"type": "ack", "cursor": 9}).cursor == 9
    for bad in ({"type": "ack", "cursor": -1}, {"type": "typing"}, {"type": "nope"}):
        with pytest.raises(ValidationError):
            CLIENT_FRAMES.validate_python(bad)
    with pytest.raises(ValidationError):  # a queued frame without its cursor
        SERVER_FRAMES.validate_python({"type": "read.updated", "conversation_id": "c", "agent_id": "a", "seq": 1})


def test_the_asyncapi_document_describes_every_stream_frame_and_close_code():
    doc = schema.asyncapi()
    stream = doc["channels"]["stream"]
    sent = {m["$ref"].rsplit("/", 1)[1] for m in doc["operations"]["send_stream"]["messages"]}
    received = {m["$ref"].rsplit("/", 1)[1] for m in doc["operations"]["receive_stream"]["messages"]}
    frame_types = {
        "send": {f"Stream{cls.__name__}" for cls in typing.get_args(typing.get_args(ServerFrame)[0])},
        "receive": {f"Stream{cls.__name__}" for cls in typing.get_args(typing.get_args(ClientFrame)[0])},
    }
    assert sent == frame_types["send"] and received == frame_types["receive"]
    assert set(stream["messages"]) == sent | received
    for name in sent | received:
        payload = doc["components"]["messages"][name]["payload"]["$ref"].rsplit("/", 1)[1]
        assert payload in doc["components"]["schemas"], f"{name}: its schema is missing"
    refs = re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc))
    assert set(refs) <= set(doc["components"]["schemas"]), "every $ref resolves"
    assert set(stream["x-close-codes"]) == {str(int(code)) for code in CloseCode}
