"""Retention with im-api as a real process: a tenant turns `retention_days` on, the job deletes its
older messages a small batch per round, im-api is SIGKILLed in the middle of that work (no clean
stop, its lease left behind) and started again — and the job finishes: exactly the older messages
are gone, with their earlier versions and thread previews, every newer message is intact, and
every deleted message is covered by an audit record."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from im_api.store import now
from imctl.servers import free_port
from imctl.tokens import mint

from support.wait import eventually

pytestmark = pytest.mark.e2e
T, OTHER = "acme", "globex"
THREADS, PER_THREAD, YOUNG_IN_LAST = 6, 50, 10
# Rounds back to back, each small, so there are many to catch; the lease a killed process leaves
# goes to the next after 2 s.
FAST = {"IM_API_RETENTION_BATCH": "5", "IM_API_RETENTION_INTERVAL_S": "0.01", "IM_API_RETENTION_LEASE_S": "2",
        "IM_API_OUTBOX_LEASE_TTL_S": "2", "IM_API_OUTBOX_LEASE_RENEW_S": "0.4", "IM_API_OUTBOX_POLL_S": "0.1",
        "IM_RETRY_INITIAL_S": "0.05", "IM_RETRY_MAX_S": "0.5"}


async def test_retention_deletes_exactly_the_older_messages_and_survives_a_sigkill_mid_round(
        services, service_env, kafka_topics, jwt_secret, mongo, mongo_db_name):
    port = free_port()
    env = {**service_env, **FAST, "IM_API_PORT": str(port)}

    def start():
        return services.start("im-api", ["-m", "im_api"], env, ready_url=f"http://127.0.0.1:{port}/readyz")

    first = start()
    await first.wait_ready(timeout=60)
    db = mongo[mongo_db_name]

    def auth(tenant: str, agent: str, role: str = "agent") -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(jwt_secret, tenant, agent, role, 600)}"}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
        for tenant in (T, OTHER):
            for agent in ["alice", *[f"b{i}" for i in range(THREADS)]]:
                r = await http.put(f"/v1/agents/{agent}", json={"display_name": agent}, headers=auth(tenant, "root", "admin"))
                assert r.status_code == 200, r.text
        threads = []
        for i in range(THREADS):
            r = await http.post("/v1/conversations", json={"participant_ids": [f"b{i}"]}, headers=auth(T, "alice"))
            threads.append(r.json()["id"])
        for n in range(1, PER_THREAD + 1):
            for cid in threads:
                r = await http.post(f"/v1/conversations/{cid}/messages", headers=auth(T, "alice"),
                                    json={"body": f"message {n}", "client_msg_id": f"{cid}-{n}"})
                assert r.status_code == 201, r.text
        other = (await http.post("/v1/conversations", json={"participant_ids": ["b0"]}, headers=auth(OTHER, "alice"))
                 ).json()["id"]
        r = await http.post(f"/v1/conversations/{other}/messages", headers=auth(OTHER, "alice"),
                            json={"body": "kept", "client_msg_id": "o1"})
        assert r.status_code == 201
        # Earlier versions of a message to be deleted and of one to be kept.
        for cid, seq in [(threads[0], PER_THREAD), (threads[-1], PER_THREAD)]:
            r = await http.patch(f"/v1/conversations/{cid}/messages/{seq}", json={"body": "edited"},
                                 headers=auth(T, "alice"))
            assert r.status_code == 200, r.text

        # Nothing in flight when the kill comes: every record published, so the relay holds no
        # transaction (the job itself uses none).
        async def all_sent() -> bool:
            return await db["outbox"].count_documents({"sent_at": None}) == 0

        await eventually(all_sent, timeout=60, message="the relay never published the seed")
        # The API stamps created_at with the server's clock and a test cannot wait days: older
        # messages are made by moving their time in MongoDB (their thread previews too, which are
        # copies of them). All of the first threads, all but the last few of the last.
        old = now() - timedelta(days=2)
        for i, cid in enumerate(threads):
            last_old = PER_THREAD - YOUNG_IN_LAST if i == len(threads) - 1 else PER_THREAD
            await db["messages"].update_many({"tenant_id": T, "conversation_id": cid, "seq": {"$lte": last_old}},
                                             {"$set": {"created_at": old}})
            await db["conversations"].update_one({"_id": cid, "last_message.seq": {"$lte": last_old}},
                                                 {"$set": {"last_message.created_at": old}})
        await db["messages"].update_many({"tenant_id": OTHER}, {"$set": {"created_at": old}})
        old_count = await db["messages"].count_documents({"tenant_id": T, "created_at": old})
        assert old_count == THREADS * PER_THREAD - YOUNG_IN_LAST
        assert await db["message_versions"].count_documents({"tenant_id": T}) == 2

        r = await http.put("/v1/admin/message-settings", json={"retention_days": 1}, headers=auth(T, "root", "admin"))
        assert r.status_code == 200 and r.json()["retention_days"] == 1

        async def old_left() -> int:
            return await db["messages"].count_documents({"tenant_id": T, "created_at": old})

        async def records() -> int:
            return await db["audit_log"].count_documents({"tenant_id": T, "action": "retention.delete"})

        async def some_gone() -> bool:
            return 0 < await old_left() <= old_count - 10  # a few rounds in, most still to go

        # A round writes its audit record first, then removes the copies, then the messages: the
        # kill follows a new record as closely as it can, to land between the two. It may still
        # land after (the round is quick), so: again after each restart until one landed inside
        # (more audited than deleted, read once the process is dead).
        await eventually(some_gone, timeout=60, interval=0.005, message="the job never started deleting")
        proc, kills, landed = first, 0, False
        while not landed:
            assert kills < 4, "no kill landed inside a round"
            seen = await records()
            await eventually(lambda: _more(records, seen), timeout=60, interval=0.001,
                             message=lambda: f"no round started; im-api's log:\n{proc.tail()}")
            await asyncio.to_thread(proc.kill)  # SIGKILL: no clean stop, the lease stays
            kills += 1
            audited, left = await audited_messages(db), await old_left()
            landed = audited > old_count - left
            print(f"\n[retention] kill {kills}: {left} of {old_count} old messages left, audited {audited}, "
                  f"deleted {old_count - left}: {'inside a round' if landed else 'between rounds'}")
            assert 0 < left < old_count
            proc = start()  # watched from its first round on: not waiting for it to be ready
        await proc.wait_ready(timeout=60)
        await eventually(lambda: _none_left(old_left), timeout=120, message="the restarted job never finished")

        # Exactly the old ones are gone; the young ones and the other tenant's are all there.
        kept = await db["messages"].find({"tenant_id": T}).sort([("conversation_id", 1), ("seq", 1)]).to_list()
        assert [(m["conversation_id"], m["seq"]) for m in kept] == [
            (threads[-1], seq) for seq in range(PER_THREAD - YOUNG_IN_LAST + 1, PER_THREAD + 1)]
        assert await db["messages"].count_documents({"tenant_id": OTHER}) == 1
        versions = await db["message_versions"].find({"tenant_id": T}).to_list()
        assert [(v["conversation_id"], v["seq"]) for v in versions] == [(threads[-1], PER_THREAD)]
        previews = {c["_id"]: c["last_message"] async for c in db["conversations"].find({"tenant_id": T})}
        assert all(previews[cid] is None for cid in threads[:-1])
        assert previews[threads[-1]]["seq"] == PER_THREAD and previews[threads[-1]]["body"] == "edited"
        r = await http.get(f"/v1/conversations/{threads[-1]}/messages", headers=auth(T, "b5"))
        assert [m["seq"] for m in r.json()["items"]] == list(range(PER_THREAD - YOUNG_IN_LAST + 1, PER_THREAD + 1))

        # Every deleted message is covered by an audit record of the job (one made just before the
        # kill may cover some that the next process deleted and recorded again).
        total = await audited_messages(db)
        assert total >= old_count
        actors = await db["audit_log"].distinct("actor", {"tenant_id": T, "action": "retention.delete"})
        assert actors == ["system:retention"]
        assert await db["audit_log"].count_documents({"tenant_id": OTHER, "action": "retention.delete"}) == 0
        print(f"[retention] finished after the restart; audit records cover {total} messages")


async def audited_messages(db) -> int:
    rows = await db["audit_log"].find({"tenant_id": T, "action": "retention.delete"}).to_list()
    return sum(r["details"]["messages"] for r in rows)


async def _more(count, than: int) -> bool:
    return await count() > than


async def _none_left(old_left) -> bool:
    return await old_left() == 0
