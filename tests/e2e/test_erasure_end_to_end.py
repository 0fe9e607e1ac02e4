"""An agent's erasure end to end, through the real processes (im-api with its background job,
delivery, the notifier, Kafka and SecantusDB): once the job is done, no collection of the
product's database holds the agent's former display name or email — not the directory, the
system lines, the outbox, the delivery queues and projections, nor the notifier's agents and
threads."""

from __future__ import annotations

import pytest
from support.notify import WEBHOOKS_ON_LOOPBACK, WebhookReceiver, running_receiver, start_notifier
from support.search import holders
from support.stack import Stack, start_stack
from support.wait import eventually

pytestmark = pytest.mark.e2e
T = "acme"
NEEDLES = (b"Alice Liddell", b"alice@acme.test")
EVERYWHERE = {"agents", "messages", "outbox", "delivery_queue", "delivery_conversations", "delivery_agents",
              "notifier_agents"}


async def test_an_erased_agent_is_named_nowhere(services, service_env, kafka_topics, jwt_secret, mongo,
                                                mongo_db_name):
    receiver = WebhookReceiver(secrets={f"/{T}": "acme-webhook-secret"})
    async with running_receiver(receiver):
        env = {**service_env, **WEBHOOKS_ON_LOOPBACK, "IM_API_ERASURE_INTERVAL_S": "0.2"}
        stack = await start_stack(services, env, jwt_secret)
        notifier, _ = start_notifier(services, env, smtp_port=None)
        await notifier.wait_ready(90)
        await erase_everywhere(stack, receiver, mongo[mongo_db_name])


async def erase_everywhere(stack: Stack, receiver: WebhookReceiver, db) -> None:
    found: dict[str, int] = {}

    async def named_in(names: set[str]) -> bool:
        found.clear()
        found.update(await holders(db, NEEDLES))
        return names <= set(found)

    async with stack.client(stack.token(T, "root", "admin")) as admin:
        r = await admin.put("/v1/agents/alice", json={"display_name": "Alice Liddell", "email": "alice@acme.test"})
        assert r.status_code == 200, r.text
        for agent in ("bob", "carol"):
            assert (await admin.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})).status_code == 200
        r = await admin.put("/v1/admin/notification-settings", json={
            "webhook_url": receiver.url(f"/{T}"), "webhook_secret": "acme-webhook-secret", "email_enabled": True})
        assert r.status_code == 200, r.text
        team = (await admin.post("/v1/teams", json={"name": "Tier 2", "member_ids": ["carol"]})).json()["id"]

    async with stack.client(stack.token(T, "alice")) as alice, stack.client(stack.token(T, "bob")) as bob, \
            stack.client(stack.token(T, "carol")) as carol:
        cid = (await alice.post("/v1/conversations", json={"participant_ids": ["bob"]})).json()["id"]
        assert (await alice.post(f"/v1/conversations/{cid}/messages",
                                 json={"body": "hello", "client_msg_id": "a1"})).status_code == 201
        other = (await bob.post("/v1/conversations", json={"participant_ids": ["carol"]})).json()["id"]
        r = await bob.post(f"/v1/conversations/{other}/participants", json={"agent_ids": ["alice"]})
        assert r.status_code == 200, r.text  # "Bob added Alice Liddell"
        r = await alice.post("/v1/conversations", json={
            "participant_ids": [], "team_ids": [team], "first_message": {"body": "who knows VAT?", "client_msg_id": "q"}})
        asked = r.json()["id"]
        assert (await carol.post(f"/v1/conversations/{asked}/claim")).status_code == 200
    await eventually(lambda: named_in(EVERYWHERE), timeout=30,
                     message=lambda: f"never named everywhere (else the test proves nothing): {found}")
    # Each thread's last frames queued: the erasure comes after what was asked before it.
    last_frames = [("carol", {"frame.type": "team_request.claimed", "frame.request.conversation_id": asked}),
                   ("alice", {"frame.type": "team_request.claimed", "frame.request.conversation_id": asked}),
                   ("carol", {"frame.type": "message.created", "frame.message.conversation_id": asked,
                              "frame.message.seq": 2}),
                   ("bob", {"frame.type": "message.created", "frame.message.conversation_id": other}),
                   ("bob", {"frame.type": "message.created", "frame.message.conversation_id": cid})]

    async def all_queued() -> bool:
        for agent, query in last_frames:
            if await db["delivery_queue"].find_one({"tenant_id": T, "agent_id": agent, **query}) is None:
                return False
        return True

    await eventually(all_queued, timeout=30, message="the frames asked for before the erasure never came")

    async with stack.client(stack.token(T, "root", "admin")) as admin:
        r = await admin.post("/v1/admin/agents/alice/erase", json={"messages": "keep", "reason": "her request"})
        assert r.status_code == 202, r.text

        async def done() -> bool:
            return (await admin.get("/v1/admin/agents/alice/erasure")).json()["status"] == "done"

        await eventually(done, timeout=60, message="the erasure never finished")

    async def named_nowhere() -> bool:
        return await named_in(set()) and not found

    await eventually(named_nowhere, timeout=30, message=lambda: f"still named after the erasure: {found}")
