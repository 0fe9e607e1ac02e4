"""Editing and deleting messages through im-api against the real servers: the author within the
tenant's window, a tenant admin deleting any time; tombstones in history and the thread's preview;
earlier versions for admins only; each act on Kafka in the thread's order and in the audit log;
bad or late requests refused with a clear error and nothing changed; another tenant gets 404."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from im_api.lifecycle import Actor, may_change, window_text
from im_contracts.events import MessageChanged, MessagePosted
from im_contracts.topics import MESSAGES

from im_api_helpers import read_events

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_who_may_change_a_message_and_when():
    msg = {"sender_id": "alice", "kind": "text", "created_at": T0, "deleted_at": None}
    alice, bob, admin = Actor("alice", "agent"), Actor("bob", "agent"), Actor("root", "admin")
    assert may_change(msg, alice, T0 + timedelta(seconds=899), 900, deleting=False) is None
    assert may_change(msg, alice, T0 + timedelta(seconds=901), 900, deleting=False) == "edit_window_passed"
    assert may_change(msg, alice, T0 + timedelta(seconds=901), 900, deleting=True) == "edit_window_passed"
    assert may_change(msg, bob, T0, 900, deleting=False) == "not_author"
    assert may_change(msg, admin, T0 + timedelta(days=400), 900, deleting=True) is None
    assert may_change(msg, admin, T0, 900, deleting=False) == "not_author"  # admins delete, never edit
    assert may_change({**msg, "kind": "system"}, alice, T0, 900, deleting=False) == "system_message"
    assert may_change({**msg, "deleted_at": T0}, admin, T0, 900, deleting=True) == "deleted"
    assert [window_text(s) for s in (900, 60, 90, 1)] == ["15 minutes", "1 minute", "90 seconds", "1 second"]


async def test_edit_and_delete_with_versions_audit_and_events_in_order(api):
    await api.add_agents(T, "alice", "bob", "carol")
    conv = await api.start(T, "alice", "bob")
    cid = conv["id"]
    for i in range(1, 4):
        r = await api.send(T, "alice", cid, f"message {i}", f"m{i}")
        assert r.status_code == 201
    url = f"/v1/conversations/{cid}/messages"

    r = await api.http.patch(f"{url}/2", json={"body": "  message 2, fixed "}, headers=api.auth(T, "alice"))
    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited["body"] == "message 2, fixed" and edited["edited_at"] and edited["deleted_at"] is None
    r = await api.http.patch(f"{url}/2", json={"body": "message 2, fixed again"}, headers=api.auth(T, "alice"))
    assert r.status_code == 200
    r = await api.http.patch(f"{url}/2", json={"body": "message 2, fixed again"}, headers=api.auth(T, "alice"))
    assert r.status_code == 200  # the same body: nothing changes (no version, no event)

    # Refused, with the reason, and nothing changed.
    for who, seq, body, status, code in [("bob", 2, "mine now", 403, "not_author"),
                                         ("alice", 9, "x", 404, None), ("alice", 2, "   ", 422, "invalid_body")]:
        r = await api.http.patch(f"{url}/{seq}", json={"body": body}, headers=api.auth(T, who))
        assert r.status_code == status, r.text
        assert code is None or r.json()["error"]["code"] == code
    r = await api.http.patch(f"{url}/2", json={"body": "x", "colour": "red"}, headers=api.auth(T, "alice"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "colour"
    r = await api.http.patch(f"{url}/2", json={"body": "x"}, headers=api.auth(T, "carol"))
    assert r.status_code == 404  # not in the thread

    # The author deletes the last message: a tombstone in history and in the thread's preview.
    r = await api.http.delete(f"{url}/3", headers=api.auth(T, "alice"))
    assert r.status_code == 200, r.text
    assert r.json()["body"] == "" and r.json()["deleted_at"]
    r = await api.http.delete(f"{url}/3", headers=api.auth(T, "alice"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "deleted"
    r = await api.http.patch(f"{url}/3", json={"body": "back"}, headers=api.auth(T, "alice"))
    assert r.status_code == 409
    history = (await api.http.get(url, headers=api.auth(T, "bob"))).json()["items"]
    assert [(m["seq"], m["body"], bool(m["edited_at"]), bool(m["deleted_at"])) for m in history] == [
        (1, "message 1", False, False), (2, "message 2, fixed again", True, False), (3, "", False, True)]
    listed = (await api.http.get("/v1/conversations", headers=api.auth(T, "bob"))).json()["items"]
    assert listed[0]["last_message"]["seq"] == 3 and listed[0]["last_message"]["deleted_at"]
    assert listed[0]["last_message"]["body"] == ""

    # A tenant admin deletes any message, in a thread they are not in, any time.
    r = await api.http.delete(f"{url}/1", headers=api.admin(T))
    assert r.status_code == 200 and r.json()["deleted_at"]

    # Earlier versions: tenant admins only, and the read is audited.
    r = await api.http.get(f"/v1/admin/conversations/{cid}/messages/2/versions", headers=api.auth(T, "alice"))
    assert r.status_code == 403
    r = await api.http.get(f"/v1/admin/conversations/{cid}/messages/2/versions", headers=api.admin(T))
    assert r.status_code == 200, r.text
    versions = r.json()
    assert [v["body"] for v in versions["versions"]] == ["message 2", "message 2, fixed"]
    assert [v["version"] for v in versions["versions"]] == [1, 2] and versions["message"]["body"] == "message 2, fixed again"

    # On Kafka, in the thread's order: the posts, then each change with its version.
    events = await read_events(api.settings.kafka_bootstrap, MESSAGES, api.settings.topic_prefix, 7)
    mine = [e for _, e, _ in events if e.message.conversation_id == cid]
    assert [(type(e).__name__, e.message.seq, getattr(e, "change", None), getattr(e, "version", None))
            for e in mine] == [
        ("MessagePosted", 1, None, None), ("MessagePosted", 2, None, None), ("MessagePosted", 3, None, None),
        ("MessageChanged", 2, "edited", 2), ("MessageChanged", 2, "edited", 3), ("MessageChanged", 3, "deleted", 2),
        ("MessageChanged", 1, "deleted", 2)]
    assert isinstance(mine[0], MessagePosted) and isinstance(mine[-1], MessageChanged)
    assert mine[-1].message.body == "" and mine[-1].changed_by == "root"
    assert sorted(mine[3].recipients) == ["alice", "bob"]

    # The audit log: every act, newest first, with its actor, target and request id; no body.
    r = await api.http.get("/v1/admin/audit", headers=api.admin(T))
    assert r.status_code == 200
    records = r.json()["items"]
    assert [(a["action"], a["actor"], a["target"].get("seq")) for a in records] == [
        ("message.versions.read", "root", 2), ("message.delete", "root", 1), ("message.delete", "alice", 3),
        ("message.edit", "alice", 2), ("message.edit", "alice", 2)]
    assert all(a["request_id"] for a in records) and "message 2" not in r.text
    r = await api.http.get("/v1/admin/audit", params={"limit": 2}, headers=api.admin(T))
    page = r.json()
    r = await api.http.get("/v1/admin/audit", params={"limit": 2, "cursor": page["next_cursor"]}, headers=api.admin(T))
    assert [a["id"] for a in page["items"] + r.json()["items"]] == [a["id"] for a in records[:4]]
    r = await api.http.get("/v1/admin/audit", params={"action": "message.edit"}, headers=api.admin(T))
    assert len(r.json()["items"]) == 2
    r = await api.http.get("/v1/admin/audit", params={"cursor": "nonsense"}, headers=api.admin(T))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"
    r = await api.http.get("/v1/admin/audit", headers=api.auth(T, "alice"))
    assert r.status_code == 403

    # Another tenant's admin: 404 for all of it, and sees none of the audit.
    for method, path in [("delete", f"{url}/2"), ("get", f"/v1/admin/conversations/{cid}/messages/2/versions")]:
        r = await api.http.request(method.upper(), path, headers=api.admin(OTHER))
        assert r.status_code == 404, (path, r.text)
    assert (await api.http.get("/v1/admin/audit", headers=api.admin(OTHER))).json()["items"] == []


async def test_the_tenants_window_bounds_edits_and_its_change_is_audited(api):
    await api.add_agents(T, "alice", "bob")
    conv = await api.start(T, "alice", "bob")
    r = await api.send(T, "alice", conv["id"], "hello", "h1")
    assert r.status_code == 201
    r = await api.http.get("/v1/admin/message-settings", headers=api.admin(T))
    assert r.json()["edit_window_s"] == 900
    r = await api.http.put("/v1/admin/message-settings", json={"edit_window_s": 0}, headers=api.admin(T))
    assert r.status_code == 200 and r.json()["edit_window_s"] == 0 and r.json()["updated_by"] == "root"
    r = await api.http.put("/v1/admin/message-settings", json={"edit_window_s": -1}, headers=api.admin(T))
    assert r.status_code == 422 and r.json()["error"]["field"] == "edit_window_s"
    r = await api.http.put("/v1/admin/message-settings", json={"edit_window_s": 60}, headers=api.auth(T, "alice"))
    assert r.status_code == 403
    url = f"/v1/conversations/{conv['id']}/messages/1"
    for method, body in [("patch", {"body": "hello!"}), ("delete", None)]:
        r = await api.http.request(method.upper(), url, json=body, headers=api.auth(T, "alice"))
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "edit_window_passed" and error["message"] == "messages cannot be changed once posted"
        assert error["details"]["edit_window_s"] == 0 and error["details"]["posted_at"].endswith("Z")
    history = (await api.http.get(f"/v1/conversations/{conv['id']}/messages", headers=api.auth(T, "bob"))).json()
    assert history["items"][0]["body"] == "hello" and history["items"][0]["edited_at"] is None
    audit = (await api.http.get("/v1/admin/audit", headers=api.admin(T))).json()["items"]
    assert [(a["action"], a["details"]) for a in audit] == [("settings.change", {"edit_window_s": [900, 0]})]


async def test_exports_stream_json_lines_audited_and_only_to_the_tenants_admins(api):
    await api.add_agents(T, "alice", "bob")
    conv = await api.start(T, "alice", "bob", related={"type": "ticket", "id": "T-5"})
    for i in range(1, 4):
        assert (await api.send(T, "alice", conv["id"], f"line {i}", f"e{i}")).status_code == 201
    await api.http.delete(f"/v1/conversations/{conv['id']}/messages/2", headers=api.auth(T, "alice"))
    url = f"/v1/admin/conversations/{conv['id']}/export"
    r = await api.http.get(url, headers=api.admin(T))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0]["type"] == "conversation" and lines[0]["id"] == conv["id"] and lines[0]["related"]["id"] == "T-5"
    history = (await api.http.get(f"/v1/conversations/{conv['id']}/messages", headers=api.auth(T, "bob"))).json()
    assert [{k: v for k, v in line.items() if k != "type"} for line in lines[1:]] == history["items"]
    assert lines[2]["body"] == "" and lines[2]["deleted_at"]  # a tombstone exports as one

    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await api.http.get("/v1/admin/export", params={"from": start, "to": end}, headers=api.admin(T))
    assert r.status_code == 200, r.text
    assert [json.loads(line)["type"] for line in r.text.splitlines()] == ["conversation", "message", "message", "message"]
    r = await api.http.get("/v1/admin/export", params={"from": end, "to": start}, headers=api.admin(T))
    assert r.status_code == 422 and r.json()["error"]["field"] == "to"
    r = await api.http.get("/v1/admin/export", params={"from": "2026-11-27T00:00:00", "to": end}, headers=api.admin(T))
    assert r.status_code == 422 and r.json()["error"]["field"] == "from"

    for headers in (api.auth(T, "alice"), api.admin(OTHER)):
        r = await api.http.get(url, headers=headers)
        assert r.status_code in (403, 404) and "line 1" not in r.text
    r = await api.http.get("/v1/admin/export", params={"from": start, "to": end}, headers=api.admin(OTHER))
    assert r.status_code == 200 and r.text == ""
    actions = [a["action"] for a in (await api.http.get("/v1/admin/audit", headers=api.admin(T))).json()["items"]]
    assert actions[:2] == ["export.range", "export.conversation"]


async def test_a_redaction_reaches_a_deleted_message_and_names_everyone_a_copy_reached(api):
    await api.add_agents(T, "alice", "bob", "carol")
    conv = await api.start(T, "alice", "bob", "carol")
    cid = conv["id"]
    for i, body in enumerate(["the customer's card 4111 1111", "thanks"], 1):
        assert (await api.send(T, "alice", cid, body, f"r{i}")).status_code == 201
    r = await api.http.delete(f"/v1/conversations/{cid}/participants/me", headers=api.auth(T, "carol"))
    assert r.status_code == 204
    url = f"/v1/conversations/{cid}/messages/1"
    assert (await api.http.delete(url, headers=api.auth(T, "alice"))).status_code == 200
    redact = f"/v1/admin/conversations/{cid}/messages"

    # A deleted message is still redacted: its last body lives among its versions until then.
    r = await api.http.get(f"{redact}/1/versions", headers=api.admin(T))
    assert [v["body"] for v in r.json()["versions"]] == ["the customer's card 4111 1111"]
    r = await api.http.post(f"{redact}/1/redact", json={"reason": "card number"}, headers=api.admin(T))
    assert r.status_code == 200, r.text
    assert r.json()["redacted_at"] and r.json()["deleted_at"] and r.json()["body"] == ""
    r = await api.http.get(f"{redact}/1/versions", headers=api.admin(T))
    assert [(v["body"], bool(v["redacted_at"])) for v in r.json()["versions"]] == [("", True)]

    # Refused with the reason, and nothing changed: a system line (carol's leaving), a reason too
    # long, another tenant, a missing message.
    r = await api.http.post(f"{redact}/3/redact", json={"reason": "x"}, headers=api.admin(T))
    assert r.status_code == 403 and r.json()["error"]["code"] == "system_message"
    r = await api.http.post(f"{redact}/2/redact", json={"reason": "x" * 501}, headers=api.admin(T))
    assert r.status_code == 422 and r.json()["error"]["field"] == "reason"
    r = await api.http.post(f"{redact}/2/redact", json={"reason": "x"}, headers=api.admin(OTHER))
    assert r.status_code == 404
    r = await api.http.post(f"{redact}/9/redact", json={"reason": "x"}, headers=api.admin(T))
    assert r.status_code == 404 and r.json()["error"]["field"] == "seq"
    history = (await api.http.get(f"/v1/conversations/{cid}/messages", headers=api.auth(T, "bob"))).json()["items"]
    assert [(m["seq"], m["body"], bool(m["redacted_at"])) for m in history] == [
        (1, "", True), (2, "thanks", False), (3, history[2]["body"], False)]

    # On Kafka, after the deletion, in the thread's order; carol, who left, is among its recipients.
    events = await read_events(api.settings.kafka_bootstrap, MESSAGES, api.settings.topic_prefix, 5)
    mine = [e for _, e, _ in events if e.message.conversation_id == cid]
    assert [(type(e).__name__, e.message.seq, getattr(e, "change", None)) for e in mine] == [
        ("MessagePosted", 1, None), ("MessagePosted", 2, None), ("MessagePosted", 3, None),
        ("MessageChanged", 1, "deleted"), ("MessageChanged", 1, "redacted")]
    assert sorted(mine[-1].recipients) == ["alice", "bob", "carol"] and mine[-1].version == 3
    audit = (await api.http.get("/v1/admin/audit", params={"action": "message.redact"}, headers=api.admin(T))).json()
    assert [(a["actor"], a["target"]["seq"], a["details"]["reason"]) for a in audit["items"]] == [
        ("root", 1, "card number")]


async def test_an_admins_reads_of_others_threads_are_audited(api):
    await api.add_agents(T, "alice", "bob")
    conv = await api.start(T, "alice", "bob", related={"type": "ticket", "id": "T-77"})
    assert (await api.send(T, "alice", conv["id"], "refund approved", "x1")).status_code == 201
    # Agents reading their own threads leave no record.
    assert (await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.auth(T, "bob"))).status_code == 200
    assert (await api.http.get("/v1/related/ticket/T-77/conversations", headers=api.auth(T, "bob"))).status_code == 200
    assert (await api.http.get("/v1/admin/audit", headers=api.admin(T))).json()["items"] == []

    r = await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.admin(T))
    assert r.status_code == 200 and r.json()["last_message"]["body"] == "refund approved"
    r = await api.http.get("/v1/related/ticket/T-77/conversations", headers=api.admin(T))
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    audit = (await api.http.get("/v1/admin/audit", headers=api.admin(T))).json()["items"]
    assert [(a["action"], a["actor"], a["target"]) for a in audit] == [
        ("related.read", "root", {"type": "ticket", "id": "T-77"}),
        ("conversation.read", "root", {"type": "conversation", "conversation_id": conv["id"]})]
    assert all(a["request_id"] for a in audit)
    r = await api.http.get(f"/v1/conversations/{conv['id']}", headers=api.admin(OTHER))
    assert r.status_code == 404  # another tenant's admin: nothing, and nothing recorded for them
    assert (await api.http.get("/v1/admin/audit", headers=api.admin(OTHER))).json()["items"] == []
