"""Redaction end to end, through the real processes (im-api, delivery, the notifier, Kafka and
SecantusDB): after a tenant admin redacts two messages — one edited before and previewed as its
thread's latest until a participant left, one a team request's question — no collection of the product's MongoDB database still
holds their text anywhere (every document of every collection is searched, binary values
included), an online participant gets the tombstone live, and a former participant's replay
shows it. The audit log keeps who, when and why."""

from __future__ import annotations

import json

import pytest
import websockets
from im_contracts.notifications import DELAY_MAX_S
from support.search import holders as holders_of
from support.notify import WEBHOOKS_ON_LOOPBACK, WebhookReceiver, running_receiver, start_notifier
from support.stack import Stack, read_until, start_stack
from support.wait import eventually

pytestmark = pytest.mark.e2e
T, OTHER = "acme", "globex"
SECRET = "card 4111-1111-1111-1111 exp 09/29"          # pasted by mistake, then "fixed" by an edit
SECRET_EDITED = "card 4111-1111-1111-1111 (expiry removed)"
QUESTION = "may I refund card 5500-0000-0000-0004 directly?"  # the start of a team request
NEEDLES = [s.encode() for s in ("4111-1111-1111-1111", "5500-0000-0000-0004")]


async def test_a_redaction_leaves_no_copy_in_any_collection(services, service_env, kafka_topics, jwt_secret,
                                                            mongo, mongo_db_name):
    receiver = WebhookReceiver(secrets={f"/{T}": "acme-webhook-secret"})
    async with running_receiver(receiver):
        env = {**service_env, **WEBHOOKS_ON_LOOPBACK}
        stack = await start_stack(services, env, jwt_secret)
        notifier, _ = start_notifier(services, env, smtp_port=None)
        await notifier.wait_ready(90)
        await redact_everywhere(stack, receiver, mongo[mongo_db_name])


async def redact_everywhere(stack: Stack, receiver: WebhookReceiver, db) -> None:
    async with stack.client(stack.token(T, "root", "admin")) as admin:
        for agent in ("alice", "bob", "carol", "dave"):
            r = await admin.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})
            assert r.status_code == 200, r.text
        # The notifier keeps previews with bodies; nobody is due for hours, so nothing is sent.
        r = await admin.put("/v1/admin/notification-settings", json={
            "webhook_url": receiver.url(f"/{T}"), "webhook_secret": "acme-webhook-secret",
            "include_bodies": True, "delay_s": DELAY_MAX_S, "assistance_delay_s": DELAY_MAX_S})
        assert r.status_code == 200, r.text
        r = await admin.post("/v1/teams", json={"name": "Tier 2", "member_ids": ["dave"]})
        assert r.status_code == 201, r.text
        team = r.json()["id"]

    alice, carol = stack.client(stack.token(T, "alice")), stack.client(stack.token(T, "carol"))
    async with alice, carol, websockets.connect(await stack.ticket_url(stack.token(T, "bob"), "bob-desk"),
                                                subprotocols=["im.v1"]) as bob:
        r = await alice.post("/v1/conversations", json={
            "participant_ids": ["bob", "carol"], "related": {"type": "ticket", "id": "4521", "title": "Refund"}})
        cid = r.json()["id"]
        for i, body in enumerate(["hello", SECRET], 1):
            r = await alice.post(f"/v1/conversations/{cid}/messages", json={"body": body, "client_msg_id": f"m{i}"})
            assert r.status_code == 201, r.text
        r = await alice.patch(f"/v1/conversations/{cid}/messages/2", json={"body": SECRET_EDITED})
        assert r.status_code == 200, r.text
        # Carol leaves: her queue holds the message, though she is no participant at the redaction.
        assert (await carol.delete(f"/v1/conversations/{cid}/participants/me")).status_code == 204
        # A team request whose question is cut from its first message (offered to dave, offline).
        r = await alice.post("/v1/conversations", json={
            "participant_ids": [], "team_ids": [team], "first_message": {"body": QUESTION, "client_msg_id": "q1"}})
        assert r.status_code == 201, r.text
        asked = r.json()["id"]

        seen: list[dict] = []
        await read_until(bob, lambda f: f["type"] == "message.updated" and f["message"]["seq"] == 2, seen)
        # Everything has its copies before the redaction: queues, previews, the notifier's.
        everywhere = {"messages", "message_versions", "conversations", "outbox", "delivery_queue",
                      "delivery_conversations", "notifier_agents"}
        await eventually(lambda: _holds_all(db, everywhere), timeout=30,
                         message=lambda: f"never held everywhere (else the test proves nothing): {_last_found}")

        async with stack.client(stack.token(OTHER, "root", "admin")) as stranger, \
                stack.client(stack.token(T, "root", "admin")) as admin:
            url = f"/v1/admin/conversations/{cid}/messages/2/redact"
            r = await stranger.post(url, json={"reason": "not theirs"})
            assert r.status_code == 404  # another tenant's admin: no such thread
            r = await alice.post(url, json={"reason": "mine"})
            assert r.status_code == 403  # agents never redact
            r = await admin.post(url, json={"reason": "   "})
            assert r.status_code == 422 and r.json()["error"]["field"] == "reason"
            r = await admin.post(url, json={"reason": "customer card number (ticket 4521)"})
            assert r.status_code == 200, r.text
            tomb = r.json()
            assert tomb["body"] == "" and tomb["deleted_at"] and tomb["redacted_at"]
            r = await admin.post(url, json={"reason": "again"})
            assert r.status_code == 409 and r.json()["error"]["code"] == "redacted"
            r = await admin.post(f"/v1/admin/conversations/{asked}/messages/1/redact",
                                 json={"reason": "card number in a team question"})
            assert r.status_code == 200, r.text

            # Bob, online, gets the tombstone live, after the edit.
            live = await read_until(bob, lambda f: f["type"] == "message.updated" and f["message"]["seq"] == 2
                                    and f["message"]["redacted_at"], seen)
            assert live["message"]["body"] == ""
            # Nothing left anywhere once delivery and the notifier have applied it.
            left = await eventually(lambda: _nothing_holds(db), timeout=30,
                                    message=lambda: f"still holding the text: {_last_found}")
            assert left is True

            r = await admin.get(f"/v1/admin/conversations/{cid}/messages/2/versions")
            assert [v["body"] for v in r.json()["versions"]] == [""] and r.json()["versions"][0]["redacted_at"]
            r = await admin.get("/v1/admin/audit", params={"action": "message.redact"})
            records = r.json()["items"]
            assert [(a["actor"], a["target"]["seq"], a["details"]["reason"]) for a in records] == [
                ("root", 1, "card number in a team question"), ("root", 2, "customer card number (ticket 4521)")]
            assert all(a["request_id"] and a["at"] for a in records)
            assert records[0]["details"]["question_removed"] is True
            r = await alice.get(f"/v1/conversations/{asked}")
            assert r.json()["team_request"]["question"] is None

    # Carol left before the redaction: her replay still shows only the tombstone.
    async with websockets.connect(await stack.ticket_url(stack.token(T, "carol"), "carol-desk") + "&cursor=0",
                                  subprotocols=["im.v1"]) as carol_ws:
        replay: list[dict] = []
        await read_until(carol_ws, lambda f: f["type"] == "message.updated" and f["message"].get("redacted_at"),
                         replay)
    created = [f["message"] for f in replay if f["type"] == "message.created" and f["message"]["seq"] == 2]
    assert created and created[0]["body"] == "" and created[0]["redacted_at"]
    assert not any(n.decode() in json.dumps(replay) for n in NEEDLES)


_last_found: dict[str, int] = {}


async def holders(db) -> dict[str, int]:
    return await holders_of(db, NEEDLES)


async def _nothing_holds(db) -> bool:
    _last_found.clear()
    _last_found.update(await holders(db))
    return not _last_found


async def _holds_all(db, names: set[str]) -> bool:
    _last_found.clear()
    _last_found.update(await holders(db))
    return names <= set(_last_found)
