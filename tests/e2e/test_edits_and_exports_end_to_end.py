"""Edits and deletions end to end through the real processes: an online participant gets each
change live, after the message it changes; an offline one replays the thread with every edit
and deletion applied — no frame of the replay carries a deleted or replaced body."""

from __future__ import annotations

import json

import pytest
import websockets
from support.stack import Stack, read_until

pytestmark = pytest.mark.e2e
T = "acme"
SECRET = "card 4111 1111 1111 1111"


async def test_edits_and_deletions_reach_the_online_live_and_the_offline_on_replay_in_order(stack: Stack):
    async with stack.client(stack.token(T, "root", "admin")) as admin:
        for agent in ("alice", "bob", "carol"):
            r = await admin.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})
            assert r.status_code == 200, r.text
    alice = stack.client(stack.token(T, "alice"))
    async with alice, websockets.connect(await stack.ticket_url(stack.token(T, "bob"), "bob-desk"),
                                         subprotocols=["im.v1"]) as bob:
        r = await alice.post("/v1/conversations", json={"participant_ids": ["bob", "carol"]})
        cid = r.json()["id"]
        for i, body in enumerate(["the customer's " + SECRET, "is this refundable?", "thanks"], 1):
            r = await alice.post(f"/v1/conversations/{cid}/messages", json={"body": body, "client_msg_id": f"m{i}"})
            assert r.status_code == 201, r.text
        r = await alice.patch(f"/v1/conversations/{cid}/messages/2", json={"body": "is this one refundable?"})
        assert r.status_code == 200, r.text
        r = await alice.delete(f"/v1/conversations/{cid}/messages/1")
        assert r.status_code == 200, r.text
        r = await alice.post(f"/v1/conversations/{cid}/messages", json={"body": "sorry, wrong paste", "client_msg_id": "m4"})
        assert r.status_code == 201

        seen: list[dict] = []
        await read_until(bob, lambda f: f["type"] == "message.created" and f["message"]["seq"] == 4, seen)
        mine = [f for f in seen if f["type"] in ("message.created", "message.updated")
                and f["message"]["conversation_id"] == cid]
        assert [(f["type"], f["message"]["seq"]) for f in mine] == [
            ("message.created", 1), ("message.created", 2), ("message.created", 3), ("message.updated", 2),
            ("message.updated", 1), ("message.created", 4)]
        assert mine[3]["message"]["body"] == "is this one refundable?" and mine[3]["message"]["edited_at"]
        assert mine[4]["message"]["body"] == "" and mine[4]["message"]["deleted_at"]
        cursors = [f["cursor"] for f in mine]
        assert cursors == sorted(cursors)

    # Carol was never online: her replay holds the thread as it is now, never the deleted text.
    async with websockets.connect(await stack.ticket_url(stack.token(T, "carol"), "carol-desk") + "&cursor=0",
                                  subprotocols=["im.v1"]) as carol:
        replay: list[dict] = []
        await read_until(carol, lambda f: f["type"] == "message.created" and f["message"]["seq"] == 4, replay)
    assert SECRET not in json.dumps(replay) and "is this refundable?" not in json.dumps(replay)
    created = {f["message"]["seq"]: f["message"] for f in replay if f["type"] == "message.created"}
    assert created[1]["body"] == "" and created[1]["deleted_at"]
    assert created[2]["body"] == "is this one refundable?" and created[2]["edited_at"]
    updated = [(f["message"]["seq"], bool(f["message"]["deleted_at"])) for f in replay if f["type"] == "message.updated"]
    assert updated == [(2, False), (1, True)]


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def reset_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as refs:  # "5": the peak resident size restarts from now
        refs.write("5")


async def test_an_export_of_ten_thousand_messages_streams_with_bounded_memory_and_matches_the_history(
        stack: Stack, mongo, mongo_db_name):
    from im_api.store import list_key, message_doc, now

    async with stack.client(stack.token(T, "root", "admin")) as admin:
        for agent in ("alice", "bob"):
            await admin.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})
    async with stack.client(stack.token(T, "alice")) as alice:
        cid = (await alice.post("/v1/conversations", json={"participant_ids": ["bob"]})).json()["id"]
    # 10,000 stored messages of 2,000 characters (20 MB of bodies), written as im-api stores them.
    count, t = 10_000, now()
    db = mongo[mongo_db_name]
    for first in range(1, count + 1, 1_000):
        await db["messages"].insert_many([
            message_doc(T, cid, seq, "alice", f"{seq:05d} " + "x" * 1_994, "text", f"bulk-{seq}", t)
            for seq in range(first, first + 1_000)])
    await db["conversations"].update_one({"_id": cid, "tenant_id": T}, {"$set": {
        "last_seq": count, "last_message_at": t, "list_key": list_key(t, cid)}})

    try:
        await export_and_compare(stack, cid, count)
    finally:
        # Removed in parts before the test's database is dropped: SecantusDB drops a database's
        # rows in one go under its global lock, and 20 MB of them can stall it (see
        # tests/delivery/test_worker_parts.py).
        for first in range(1, count + 1, 1_000):
            await db["messages"].delete_many({"tenant_id": T, "conversation_id": cid,
                                              "seq": {"$gte": first, "$lt": first + 1_000}})


async def export_and_compare(stack: Stack, cid: str, count: int) -> None:
    pid = stack.procs["api"].proc.pid
    reset_peak_rss(pid)
    before = peak_rss_kib(pid)
    lines, size = [], 0
    async with stack.client(stack.token(T, "root", "admin")) as admin:
        async with admin.stream("GET", f"/v1/admin/conversations/{cid}/export", timeout=120) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line:
                    size += len(line)
                    record = json.loads(line)
                    lines.append((record["type"], record.get("seq"), record.get("body", "")[:5]))
        growth_mib = (peak_rss_kib(pid) - before) / 1024
        assert size > 20_000_000
        # Built in memory, 20 MB of JSON (and its Python objects, several times that) would show;
        # streamed a page at a time, the server grows by a few pages at most.
        assert growth_mib < 15, f"im-api grew by {growth_mib:.1f} MiB while exporting {size / 1e6:.0f} MB"
        assert lines[0][0] == "conversation" and len(lines) == count + 1
        assert [seq for _, seq, _ in lines[1:]] == list(range(1, count + 1))
        # It matches the history, page by page.
        async with stack.client(stack.token(T, "bob")) as bob:
            for before_seq in (201, 5_001, count + 1):
                page = (await bob.get(f"/v1/conversations/{cid}/messages",
                                      params={"before_seq": before_seq, "limit": 200})).json()["items"]
                assert [(m["seq"], m["body"][:5]) for m in page] == [
                    (seq, body) for _, seq, body in lines[1:][before_seq - 201:before_seq - 1]]
