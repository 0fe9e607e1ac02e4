"""Messages: gap-free seq under concurrency, history paging, idempotency, and what reaches Kafka."""

from __future__ import annotations

import asyncio

import pytest
from im_contracts.events import MessagePosted
from im_contracts.topics import MESSAGES

from im_api_helpers import read_events

pytestmark = pytest.mark.integration
T = "acme"


async def test_concurrent_sends_get_gap_free_seqs_on_one_thread_and_across_threads(api, endpoints):
    await api.add_agents(T, "alice", "bob", "carol")
    busy = await api.start(T, "alice", "bob")
    quiet = await api.start(T, "alice", "carol")
    sends = [api.send(T, "alice" if i % 2 else "bob", busy["id"], f"busy {i}", f"b{i}") for i in range(50)]
    sends += [api.send(T, "carol", quiet["id"], f"quiet {i}", f"q{i}") for i in range(10)]
    results = await asyncio.gather(*sends)
    assert [r.status_code for r in results] == [201] * 60
    busy_seqs = sorted(r.json()["seq"] for r in results[:50])
    assert busy_seqs == list(range(1, 51))
    assert sorted(r.json()["seq"] for r in results[50:]) == list(range(1, 11))
    assert api.app.state.committer.batches < 60  # sends were grouped into shared transactions
    events = await read_events(endpoints.kafka_bootstrap, MESSAGES, api.settings.topic_prefix, 60, settle_s=0.5)
    per_conversation: dict[str, list[int]] = {}
    request_of = {r.json()["id"]: r.headers["x-request-id"] for r in results}
    for key, event, headers in events:
        assert isinstance(event, MessagePosted) and key == event.message.conversation_id.encode()
        # Each record carries the request that sent it, also when committed in a shared batch.
        assert headers["event-type"] == b"MessagePosted"
        assert headers["trace-id"].decode() == request_of[event.message.id]
        per_conversation.setdefault(event.message.conversation_id, []).append(event.message.seq)
    assert per_conversation == {busy["id"]: list(range(1, 51)), quiet["id"]: list(range(1, 11))}


async def test_history_pages_before_and_after_a_seq_ascending(api):
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    for i in range(1, 61):
        assert (await api.send(T, "alice", c["id"], f"m{i}", f"m{i}")).status_code == 201
    url = f"/v1/conversations/{c['id']}/messages"
    newest = (await api.http.get(url, headers=api.auth(T, "bob"))).json()["items"]
    assert [m["seq"] for m in newest] == list(range(11, 61))  # default: the newest 50, ascending
    older = (await api.http.get(f"{url}?before_seq=11&limit=5", headers=api.auth(T, "bob"))).json()["items"]
    assert [m["seq"] for m in older] == [6, 7, 8, 9, 10]
    newer = (await api.http.get(f"{url}?after_seq=55", headers=api.auth(T, "bob"))).json()["items"]
    assert [m["seq"] for m in newer] == [56, 57, 58, 59, 60]
    between = (await api.http.get(f"{url}?after_seq=3&before_seq=7", headers=api.auth(T, "bob"))).json()["items"]
    assert [m["seq"] for m in between] == [4, 5, 6]


async def test_a_retry_returns_the_original_and_another_body_is_409(api, endpoints):
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    store = api.app.state.committer.store
    lookups = []
    lookup = store.messages_by_client_ids

    async def counted(keys):
        lookups.append(keys)
        return await lookup(keys)

    store.messages_by_client_ids = counted
    first = await api.send(T, "alice", c["id"], "  hello  ", "k1")
    assert first.status_code == 201 and first.json()["body"] == "hello"
    # Issue 19: a new client_msg_id costs no read; the unique index refuses a repeat, which is
    # then looked up.
    assert lookups == []
    retry = await api.send(T, "alice", c["id"], "hello", "k1")
    assert retry.status_code == 200 and retry.json() == first.json()
    assert len(lookups) == 1
    other = await api.send(T, "alice", c["id"], "goodbye", "k1")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_mismatch"
    # Bob's k1 is his own key.
    assert (await api.send(T, "bob", c["id"], "hi", "k1")).status_code == 201
    # A burst of the same retry at once: still one message.
    burst = await asyncio.gather(*(api.send(T, "alice", c["id"], "again", "k2") for _ in range(10)))
    assert sorted(r.status_code for r in burst) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in burst}) == 1
    history = (await api.http.get(f"/v1/conversations/{c['id']}/messages", headers=api.auth(T, "bob"))).json()
    assert [m["seq"] for m in history["items"]] == [1, 2, 3]
    events = await read_events(endpoints.kafka_bootstrap, MESSAGES, api.settings.topic_prefix, 3, settle_s=0.5)
    assert sorted(e.message.seq for _, e, _ in events) == [1, 2, 3]


async def test_body_must_be_1_to_10000_characters_after_trimming(api):
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    assert (await api.send(T, "alice", c["id"], "   ", "e1")).status_code == 422
    assert (await api.send(T, "alice", c["id"], "x" * 10_001, "e2")).status_code == 422
    ok = await api.send(T, "alice", c["id"], " " + "x" * 10_000 + " ", "e3")
    assert ok.status_code == 201 and ok.json()["seq"] == 1


async def test_a_send_refused_inside_a_shared_transaction_fails_alone(api):
    await api.add_agents(T, "alice", "bob", "carol")
    c = await api.start(T, "alice", "bob")
    sends = [api.send(T, "carol" if i == 5 else "alice", c["id"], f"m{i}", f"m{i}") for i in range(12)]
    results = await asyncio.gather(*sends)
    assert [r.status_code for r in results] == [404 if i == 5 else 201 for i in range(12)]
    assert sorted(r.json()["seq"] for i, r in enumerate(results) if i != 5) == list(range(1, 12))
