"""The notifier end to end: the whole stack as real processes, a real HTTP receiver checking
signatures, a real SMTP server, the real Kafka and MongoDB."""

from __future__ import annotations

import json

import pytest
import websockets
from im_contracts.events import DeadLetter
from im_contracts.topics import DEAD_LETTERS
from support.notify import (
    WEBHOOKS_ON_LOOPBACK,
    WebhookReceiver,
    mail_catcher,
    metric,
    running_receiver,
    start_notifier,
)
from support.stack import Stack, start_stack
from support.topics import read_topic
from support.wait import eventually

pytestmark = pytest.mark.e2e

SECRETS = {f"/n{i}": f"tenant-n{i}-webhook-secret" for i in range(1, 6)}


async def directory(stack: Stack, tenant: str, agents: list[str]) -> None:
    async with stack.client(stack.token(tenant, "root", "admin")) as c:
        for agent in agents:
            r = await c.put(f"/v1/agents/{agent}", json={"display_name": agent.title(),
                                                         "email": f"{agent}@{tenant}.test"})
            assert r.status_code == 200, r.text


async def configure(stack: Stack, tenant: str, receiver: WebhookReceiver, **settings) -> dict:
    async with stack.client(stack.token(tenant, "root", "admin")) as c:
        r = await c.put("/v1/admin/notification-settings", json={
            "webhook_url": receiver.url(f"/{tenant}"), "webhook_secret": SECRETS[f"/{tenant}"], **settings})
        assert r.status_code == 200, r.text
        return r.json()


async def thread(stack: Stack, tenant: str, sender: str, others: list[str], messages: int, ticket: str) -> str:
    async with stack.client(stack.token(tenant, sender)) as c:
        r = await c.post("/v1/conversations", json={"participant_ids": others,
                                                     "related": {"type": "ticket", "id": ticket, "title": "Printer"}})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        for i in range(messages):
            r = await c.post(f"/v1/conversations/{cid}/messages",
                             json={"body": f"secret customer detail {ticket} #{i}", "client_msg_id": f"{ticket}-{i}"})
            assert r.status_code == 201, r.text
    return cid


async def presence_of(stack: Stack, tenant: str, agent: str) -> str:
    async with stack.client(stack.token(tenant, "root", "admin")) as c:
        items = (await c.get("/v1/agents")).json()["items"]
    return next(a["presence"]["status"] for a in items if a["id"] == agent)


async def test_away_agents_get_one_webhook_and_one_digest_and_nothing_else(services, service_env, kafka_topics,
                                                                           jwt_secret):
    receiver = WebhookReceiver(secrets=SECRETS)
    with mail_catcher() as (smtp, inbox):
        async with running_receiver(receiver):
            env = {**service_env, **WEBHOOKS_ON_LOOPBACK}
            stack = await start_stack(services, env, jwt_secret)
            notifier, n_url = start_notifier(services, env, smtp.port)
            await notifier.wait_ready(90)
            people = ["alice", "bob", "frank", "carol", "dave", "erin"]
            await directory(stack, "n1", people)
            await directory(stack, "n2", people)

            # Settings: admins only; the secret is write-only; private addresses are refused and change nothing.
            async with stack.client(stack.token("n1", "bob")) as c:
                r = await c.get("/v1/admin/notification-settings")
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
            shown = await configure(stack, "n1", receiver, email_enabled=True, delay_s=12, include_bodies=False)
            assert "webhook_secret" not in shown and shown["webhook_secret_set"] is True
            await configure(stack, "n2", receiver, email_enabled=False, delay_s=12, include_bodies=True)
            async with stack.client(stack.token("n1", "root", "admin")) as c:
                for bad in ("http://10.0.0.5/hook", "http://169.254.169.254/latest", "http://[::1]:8080/x",
                            "http://192.168.1.20/x"):
                    r = await c.put("/v1/admin/notification-settings", json={"webhook_url": bad})
                    assert r.status_code == 422, r.text
                    assert r.json()["error"]["field"] == "webhook_url", r.text
                r = await c.get("/v1/admin/notification-settings")
                assert r.json()["webhook_url"] == receiver.url("/n1") and r.json()["delay_s"] == 12
                assert r.json()["email_enabled"] is True and "webhook_secret" not in r.json()

            # alice (n1) is away: connected, every connection idle.
            url = await stack.ticket_url(stack.token("n1", "alice"), "alices-laptop")
            async with websockets.connect(url, subprotocols=["im.v1"]) as alice_ws:
                await alice_ws.send(json.dumps({"type": "idle"}))
                await eventually(lambda: _is(presence_of(stack, "n1", "alice"), "away"), timeout=30,
                                 message="alice never shown away")
                # Ten messages in two threads for alice; one of them for alice of tenant n2.
                t1 = await thread(stack, "n1", "bob", ["alice"], 6, "T-1")
                t2 = await thread(stack, "n1", "frank", ["alice"], 4, "T-2")
                await thread(stack, "n2", "bob", ["alice"], 1, "T-9")
                # carol reads within the delay.
                tc = await thread(stack, "n1", "bob", ["carol"], 2, "T-3")
                async with stack.client(stack.token("n1", "carol")) as c:
                    assert (await c.post(f"/v1/conversations/{tc}/read", json={"seq": 2})).status_code == 200
                # dave comes online within the delay.
                await thread(stack, "n1", "bob", ["dave"], 1, "T-4")
                dave_url = await stack.ticket_url(stack.token("n1", "dave"), "daves-phone")
                async with websockets.connect(dave_url, subprotocols=["im.v1"]):
                    await eventually(lambda: _is(presence_of(stack, "n1", "dave"), "online"), timeout=30,
                                     message="dave never shown online")
                    # erin muted the thread before the message came.
                    te = await thread(stack, "n1", "bob", ["erin"], 0, "T-5")
                    async with stack.client(stack.token("n1", "erin")) as c:
                        assert (await c.put(f"/v1/conversations/{te}/mute")).status_code == 204
                        prefs = (await c.get("/v1/me/notification-preferences")).json()
                        assert prefs == {"do_not_disturb": False, "muted_conversation_ids": [te],
                                         "message_previews": False}
                    async with stack.client(stack.token("n1", "bob")) as c:
                        r = await c.post(f"/v1/conversations/{te}/messages", json={"body": "psst", "client_msg_id": "e1"})
                        assert r.status_code == 201
                    async with stack.client(stack.token("n1", "carol")) as c:  # only a participant mutes
                        r = await c.put(f"/v1/conversations/{te}/mute")
                        assert r.status_code == 404 and r.json()["error"]["field"] == "conversation_id"

                    # alice: one webhook, signed, both threads, metadata only.
                    await eventually(lambda: receiver.accepted("/n1"), timeout=60, message="no webhook for alice")
                    await eventually(lambda: inbox.messages, timeout=60, message="no digest email for alice")
                    # The three others were decided without a notification, each for its reason.
                    for reason in ("read", "online", "muted"):
                        await eventually(lambda r=reason: metric(n_url, "im_notifier_skipped_total",
                                                                 channel="webhook", reason=r), timeout=60,
                                         message=f"nothing skipped as {reason}")
                    await eventually(lambda: receiver.accepted("/n2"), timeout=60, message="no webhook for n2")

            hooks = receiver.accepted("/n1")
            assert len(hooks) == 1 and len(receiver.on("/n1")) == 1, [h.body for h in receiver.on("/n1")]
            hook = hooks[0]
            assert hook.signature_ok and hook.key == hook.body["id"]
            assert hook.body["tenant_id"] == "n1" and hook.body["agent"] == {"id": "alice", "display_name": "Alice"}
            threads = {t["conversation_id"]: t for t in hook.body["threads"]}
            assert set(threads) == {t1, t2}
            assert (threads[t1]["unread"], threads[t2]["unread"]) == (6, 4)
            assert threads[t1]["related"] == {"type": "ticket", "id": "T-1", "title": "Printer"}
            assert threads[t1]["last_sender"] == {"id": "bob", "display_name": "Bob"}
            assert threads[t1]["url"] == f"http://console.test/#/im/{t1}"
            assert all(t["preview"] is None for t in threads.values())
            assert "secret customer detail" not in json.dumps(hook.body)

            # One digest, to alice of n1 only, both parts, no message text.
            assert len(inbox.messages) == 1 and inbox.envelopes[0][1] == ["alice@n1.test"]
            mail = inbox.messages[0]
            assert mail["Subject"] == "10 messages in 2 threads are waiting for you"
            text = mail.get_body(("plain",)).get_content()
            markup = mail.get_body(("html",)).get_content()
            assert "6 messages from Bob about Ticket T-1" in text and f"http://console.test/#/im/{t2}" in markup
            assert "secret customer detail" not in text + markup

            # n2: its own webhook (its secret, its body policy); n1's email setting did not apply.
            n2 = receiver.accepted("/n2")
            assert len(n2) == 1 and n2[0].signature_ok and n2[0].body["tenant_id"] == "n2"
            assert n2[0].body["threads"][0]["preview"] == "secret customer detail T-9 #0"
            # Nobody else was notified: the decisions for carol, dave and erin are behind us.
            assert {h.body["agent"]["id"] for h in receiver.received} == {"alice"}
            assert await metric(n_url, "im_notifier_notifications_total", channel="webhook", outcome="sent") == 2
            assert await metric(n_url, "im_notifier_notifications_total", channel="email", outcome="sent") == 1


async def _is(status, expected: str) -> bool:
    return (await status) == expected


async def test_retries_dead_letters_and_a_crash_between_due_and_sent(services, service_env, kafka_topics,
                                                                     jwt_secret, mongo):
    receiver = WebhookReceiver(secrets=SECRETS, plans={"/n3": [500, 500], "/n4": ["hang"] * 3, "/n5": ["hang"]})
    async with running_receiver(receiver):
        env = {**service_env, **WEBHOOKS_ON_LOOPBACK}
        stack = await start_stack(services, env, jwt_secret)
        timings = {"IM_NOTIFIER_ATTEMPT_TIMEOUT_S": "3", "IM_NOTIFIER_LEASE_GRACE_S": "0.5",
                   "IM_NOTIFIER_SEND_RETRY_INITIAL_S": "0.2", "IM_NOTIFIER_SEND_RETRY_MAX_S": "0.5", "IM_NOTIFIER_MAX_TRIES": "3"}
        notifier, n_url = start_notifier(services, env, None, **timings)
        await notifier.wait_ready(90)
        for tenant in ("n3", "n4", "n5"):
            await directory(stack, tenant, ["alice", "bob"])
            await configure(stack, tenant, receiver, delay_s=0)

        # 500, 500, then 200: three attempts of one notification, one delivery.
        await thread(stack, "n3", "bob", ["alice"], 1, "T-30")
        await eventually(lambda: receiver.accepted("/n3"), timeout=60, message="n3 never delivered")
        attempts = receiver.on("/n3")
        assert [a.answered for a in attempts] == [500, 500, 200]
        assert len({a.key for a in attempts}) == 1 and all(a.signature_ok for a in attempts)

        # A receiver that never answers: three tries, then a dead letter with the reason.
        await thread(stack, "n4", "bob", ["alice"], 1, "T-40")
        letters = await read_topic(DEAD_LETTERS, env["IM_TOPIC_PREFIX"], bootstrap=env["IM_KAFKA_BOOTSTRAP"],
                                   until=lambda events: any(isinstance(e, DeadLetter) and e.tenant_id == "n4"
                                                            for e in events), timeout=60)
        letter = next(r.event for r in letters if r.event.tenant_id == "n4")
        assert letter.reason == "webhook_failed" and letter.detail.startswith("3 tries; last: no answer within 3 s")
        assert len(receiver.on("/n4")) == 3 and len({a.key for a in receiver.on("/n4")}) == 1
        assert await metric(n_url, "im_notifier_notifications_total", channel="webhook", outcome="failed") == 1
        assert "secret customer detail" not in json.dumps(letter.model_dump(mode="json"))

        # SIGKILL between "due" and "sent": the claim is in MongoDB, the receiver holds the request.
        await thread(stack, "n5", "bob", ["alice"], 1, "T-50")
        await eventually(lambda: receiver.on("/n5"), timeout=60, message="n5 never attempted")
        doc = await mongo[env["IM_MONGO_DB"]].notifier_agents.find_one({"_id": "n5:alice"})
        assert doc["outgoing"]["webhook"]["attempts"] == 1
        notifier.kill()
        restarted, _ = start_notifier(services, env, None, port=int(n_url.rsplit(":", 1)[1]), **timings)
        await restarted.wait_ready(90)
        await eventually(lambda: receiver.accepted("/n5"), timeout=60, message="n5 never delivered after restart")

        async def settled() -> bool:
            doc = await mongo[env["IM_MONGO_DB"]].notifier_agents.find_one({"_id": "n5:alice"})
            return not doc["outgoing"]

        await eventually(settled, timeout=30, message="the claim stayed after its delivery")
        attempts = receiver.on("/n5")
        assert [a.answered for a in attempts] == [None, 200] and len({a.key for a in attempts}) == 1
        assert len(receiver.accepted("/n3")) == 1  # and nothing else came meanwhile
