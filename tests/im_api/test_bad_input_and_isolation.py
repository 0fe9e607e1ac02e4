"""Bad input and foreign tenants: a 4xx JSON error of the contract's shape, and nothing changes."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from im_api_helpers import running, token

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"


def assert_error(r, status: int, code: str | None = None, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["x-request-id"]
    error = r.json()["error"]
    assert set(error) >= {"code", "message", "field", "errors", "request_id"}
    assert error["request_id"] == r.headers["x-request-id"]
    if code:
        assert error["code"] == code, error
    if field:
        assert error["field"] == field, error
    return error


def forged_cursor(fields: dict) -> str:
    """A cursor as the server's are made (base64url JSON), with fields of the caller's choosing."""
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


async def snapshot(mongo, db: str) -> dict:
    out = {}
    for name in ("agents", "conversations", "messages", "outbox"):
        out[name] = await mongo[db][name].find({}, {"_id": 1, "participants": 1, "last_seq": 1, "read": 1,
                                                    "active": 1, "display_name": 1}).sort("_id").to_list()
    return out


async def test_every_endpoint_refuses_bad_input_with_the_contract_error_and_writes_nothing(api, mongo, mongo_db_name):
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    await api.send(T, "alice", c["id"], "hi", "m1")
    before = await snapshot(mongo, mongo_db_name)
    h = {**api.auth(T, "alice"), "content-type": "application/json"}
    a = api.admin(T) | {"content-type": "application/json"}
    conv = f"/v1/conversations/{c['id']}"
    writes = [("PUT", "/v1/agents/carol", a), ("POST", "/v1/conversations", h), ("POST", f"{conv}/messages", h),
              ("POST", f"{conv}/participants", h), ("POST", f"{conv}/read", h), ("POST", "/v1/stream/tickets", h)]
    for method, url, headers in writes:
        assert_error(await api.http.request(method, url, content=b'{"body": ', headers=headers), 400,
                     "malformed_json", "body")
        assert_error(await api.http.request(method, url, json=[1, 2], headers=headers), 422, "validation_failed")
        assert_error(await api.http.request(method, url, json={"surprise": 1}, headers=headers), 422)
        big = b'{"body": "' + b"x" * (api.settings.max_request_bytes + 10) + b'"}'
        assert_error(await api.http.request(method, url, content=big, headers=headers), 413, "payload_too_large")

        async def streamed():  # no Content-Length: counted while it streams
            yield big[:1000]
            yield big[1000:]

        assert_error(await api.http.request(method, url, content=streamed(), headers=headers), 413)
    assert_error(await api.http.post("/v1/conversations", json={"participant_ids": "bob"}, headers=h), 422,
                 field="participant_ids")
    assert_error(await api.http.post("/v1/conversations", json={"participant_ids": ["bob"], "extra": 1}, headers=h),
                 422, "validation_failed", "extra")
    assert_error(await api.http.post(f"{conv}/messages", json={"body": 5, "client_msg_id": "x"}, headers=h), 422,
                 field="body")
    assert_error(await api.http.post(f"{conv}/read", json={"seq": -1}, headers=h), 422, field="seq")
    assert_error(await api.http.post(f"{conv}/read", json={"seq": "ten"}, headers=h), 422, field="seq")
    assert_error(await api.http.put("/v1/agents/bad%20id", json={"display_name": "x"}, headers=a), 422,
                 field="agent_id")
    # Well-formed but forged: numbers past what BSON holds (they used to reach the driver: a 500).
    huge = 10**30
    forged_list = forged_cursor({"t": "2026-01-01T00:00:00+00:00", "k": "x", "sc": huge})
    forged_agents = forged_cursor({"g": huge, "n": "a", "i": "a"})
    for url in ("/v1/conversations?cursor=not-a-cursor!", "/v1/conversations?cursor=eyJ4IjoxfQ",
                "/v1/agents?cursor=%%%", "/v1/agents?cursor=eyJnIjoiYSJ9",
                f"/v1/conversations?cursor={forged_list}", f"/v1/agents?cursor={forged_agents}",
                f"/v1/conversations?cursor={forged_cursor({'t': '2026-01-01T00:00:00+00:00', 'k': 'x', 'sc': -1})}"):
        assert_error(await api.http.get(url, headers=h), 400, "invalid_cursor", "cursor")
    assert_error(await api.http.get("/v1/conversations?limit=0", headers=h), 422, field="limit")
    assert_error(await api.http.get("/v1/agents?status=busy", headers=h), 422, field="status")
    assert_error(await api.http.get(f"{conv}/messages?before_seq=abc", headers=h), 422, field="before_seq")
    assert_error(await api.http.get("/v1/conversations/not-an-id", headers=h), 404, "not_found")
    assert_error(await api.http.get("/v1/conversations/" + "0" * 32, headers=h), 404, "not_found")
    assert_error(await api.http.get("/v1/related/invoice/1/conversations", headers=h), 422, field="related_type")
    assert await snapshot(mongo, mongo_db_name) == before


async def test_missing_forged_expired_and_ticket_tokens_are_401(api):
    await api.add_agents(T, "alice")
    url = "/v1/conversations"
    assert_error(await api.http.get(url), 401, "unauthorized")
    assert_error(await api.http.get(url, headers={"Authorization": "Basic abc"}), 401)
    forged = token("another-secret-that-is-long-enough-for-hs256", T, "alice")
    assert_error(await api.http.get(url, headers={"Authorization": f"Bearer {forged}"}), 401)
    expired = token(api.secret, T, "alice", ttl_s=-60)
    assert_error(await api.http.get(url, headers={"Authorization": f"Bearer {expired}"}), 401)
    ticket = (await api.http.post("/v1/stream/tickets", json={"device_id": "d"}, headers=api.auth(T, "alice"))).json()
    assert_error(await api.http.get(url, headers={"Authorization": f"Bearer {ticket['ticket']}"}), 401)
    assert_error(await api.http.get(url, headers=api.auth(T, "ghost")), 401, "inactive_agent")
    assert (await api.http.get("/healthz")).status_code == 200
    given = await api.http.get("/healthz", headers={"X-Request-Id": "req-123"})
    assert given.headers["x-request-id"] == "req-123"


async def test_a_foreign_tenants_token_gets_404_or_401_on_every_endpoint_and_changes_nothing(api, mongo, mongo_db_name):
    await api.add_agents(T, "alice", "bob")
    await api.add_agents(OTHER, "alice", "mallory")
    c = await api.start(T, "alice", "bob", related={"type": "ticket", "id": "T-1"})
    await api.send(T, "alice", c["id"], "secret", "m1")
    before = await snapshot(mongo, mongo_db_name)
    conv = f"/v1/conversations/{c['id']}"
    for who in (api.auth(OTHER, "alice"), api.auth(OTHER, "mallory"), api.admin(OTHER)):
        calls = [
            ("GET", conv, None), ("GET", f"{conv}/messages", None),
            ("POST", f"{conv}/messages", {"body": "x", "client_msg_id": "evil"}),
            ("POST", f"{conv}/participants", {"agent_ids": ["mallory"]}),
            ("DELETE", f"{conv}/participants/me", None), ("POST", f"{conv}/read", {"seq": 1}),
        ]
        for method, url, body in calls:
            r = await api.http.request(method, url, json=body, headers=who)
            assert_error(r, 404, "not_found")
        listed = await api.http.get("/v1/conversations", headers=who)
        assert listed.status_code == 200 and listed.json()["items"] == []
        related = await api.http.get("/v1/related/ticket/T-1/conversations", headers=who)
        assert related.json()["items"] == []
        assert (await api.http.get("/v1/me/unread", headers=who)).json() == {"total": 0, "conversations": 0,
                                                                               "capped": False}
        agents = (await api.http.get("/v1/agents", headers=who)).json()["items"]
        assert {a["id"] for a in agents} == {"alice", "mallory"}
        start = await api.http.post("/v1/conversations", json={"participant_ids": ["bob"]}, headers=who)
        assert_error(start, 422, "unknown_agents")
    # Tenant A's admin cannot deactivate tenant B's agent: it does not exist for them.
    assert_error(await api.http.delete("/v1/agents/mallory", headers=api.admin(T)), 404)
    # Tenant B's agent "bob" does not exist: its token is refused outright.
    assert_error(await api.http.get("/v1/me/unread", headers=api.auth(OTHER, "bob")), 401)
    assert await snapshot(mongo, mongo_db_name) == before


async def test_a_change_too_large_for_a_kafka_record_is_413_and_writes_nothing(api_settings, mongo, mongo_db_name):
    # A deployment whose record limit is 4,000 bytes: a 3,500-character message (a record of ~4 KB
    # with its envelope and headers) is refused before anything is written, alone in its batch,
    # while a short one still posts; the same check guards a start's first message.
    async with running(api_settings.model_copy(update={"max_record_bytes": 4000})) as api:
        await api.add_agents(T, "alice", "bob", "carol")
        c = await api.start(T, "alice", "bob")
        db = mongo[mongo_db_name]
        outbox_before = await db.outbox.count_documents({})
        big, small = await asyncio.gather(api.send(T, "alice", c["id"], "x" * 3500, "big-1"),
                                          api.send(T, "alice", c["id"], "short", "small-1"))
        assert_error(big, 413, "record_too_large", "body")
        assert small.status_code == 201 and small.json()["seq"] == 1, small.text
        assert [m["body"] async for m in db.messages.find({"conversation_id": c["id"]})] == ["short"]
        assert await db.outbox.count_documents({}) == outbox_before + 1

        r = await api.http.post("/v1/conversations", headers=api.auth(T, "alice"),
                                json={"participant_ids": ["carol"], "first_message": {"body": "y" * 3500, "client_msg_id": "first-1"}})
        assert_error(r, 413, "record_too_large", "first_message.body")
        assert await db.conversations.count_documents({"participants": "carol"}) == 0
        assert await db.outbox.count_documents({}) == outbox_before + 1
