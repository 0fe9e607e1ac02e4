"""The notification endpoints of im-api: tenant settings (admins; the secret write-only; URLs
checked), an agent's do-not-disturb and mutes (participants only, bounded), bad input refused with
the field named and nothing changed, and every tenant's settings its own."""

from __future__ import annotations

import pytest
from im_contracts.notifications import MUTED_MAX

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"
SECRET = "a-webhook-secret-of-tenant-acme"


async def test_settings_are_for_admins_with_a_write_only_secret_and_checked_urls(api):
    await api.add_agents(T, "bob")
    admin = api.admin(T)
    r = await api.http.get("/v1/admin/notification-settings", headers=admin)
    assert r.status_code == 200
    assert r.json() | {"updated_at": None} == {
        "tenant_id": T, "webhook_url": None, "webhook_secret_set": False, "email_enabled": False, "delay_s": 60,
        "assistance_delay_s": 60, "digest_window_s": 900, "include_bodies": False, "updated_at": None,
        "updated_by": None}
    for role in ("agent", "service"):
        r = await api.http.put("/v1/admin/notification-settings", json={"email_enabled": True},
                               headers=api.auth(T, "bob", role))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"

    good = {"webhook_url": "https://hooks.example.com/im", "webhook_secret": SECRET, "email_enabled": True,
            "delay_s": 30, "assistance_delay_s": 0, "digest_window_s": 600, "include_bodies": True}
    r = await api.http.put("/v1/admin/notification-settings", json=good, headers=admin)
    assert r.status_code == 200, r.text
    shown = r.json()
    assert "webhook_secret" not in shown and shown["webhook_secret_set"] is True
    assert shown["updated_by"] == "root" and shown["delay_s"] == 30 and shown["assistance_delay_s"] == 0
    assert SECRET not in r.text

    # Refused, field named, nothing changed.
    bad = [
        ({**good, "webhook_url": "https://10.0.0.7/im"}, "webhook_url", "webhook_url_refused"),
        ({**good, "webhook_url": "http://hooks.example.com/im"}, "webhook_url", "webhook_url_refused"),
        ({**good, "webhook_url": "https://169.254.169.254/latest"}, "webhook_url", "webhook_url_refused"),
        ({**good, "webhook_url": "https://localhost:8443/im"}, "webhook_url", "webhook_url_refused"),
        ({**good, "webhook_secret": "short"}, "webhook_secret", None),
        ({**good, "delay_s": -1}, "delay_s", None),
        ({**good, "digest_window_s": 10}, "digest_window_s", None),
        ({**good, "include_body": True}, "include_body", None),
    ]
    for body, field, code in bad:
        r = await api.http.put("/v1/admin/notification-settings", json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
        error = r.json()["error"]
        assert error["field"] == field or field in {e["field"] for e in error["errors"]}, r.text
        if code:
            assert error["code"] == code
    r = await api.http.get("/v1/admin/notification-settings", headers=admin)
    assert r.json() | {"updated_at": None} == shown | {"updated_at": None}

    # A PUT without the secret keeps it; a URL needs one; removing the URL is fine.
    r = await api.http.put("/v1/admin/notification-settings", json={**good, "webhook_secret": None, "webhook_url": None},
                           headers=admin)
    assert r.status_code == 200 and r.json()["webhook_secret_set"] is False
    r = await api.http.put("/v1/admin/notification-settings", json={"webhook_url": "https://hooks.example.com/im"},
                           headers=admin)
    assert r.status_code == 422 and r.json()["error"]["field"] == "webhook_secret"
    r = await api.http.put("/v1/admin/notification-settings", json=good, headers=admin)
    r = await api.http.put("/v1/admin/notification-settings", json={"webhook_url": "https://hooks.example.com/v2"},
                           headers=admin)
    assert r.status_code == 200 and r.json()["webhook_secret_set"] is True

    # Another tenant's admin sees its own (empty) settings, never acme's.
    r = await api.http.get("/v1/admin/notification-settings", headers=api.admin(OTHER))
    assert r.json()["tenant_id"] == OTHER and r.json()["webhook_url"] is None and not r.json()["webhook_secret_set"]
    stored = await api.app.state.services.store._db["notification_settings"].find_one({"_id": T})  # noqa: SLF001
    assert stored["webhook_secret"] == SECRET and stored["tenant_id"] == T


async def test_do_not_disturb_and_mutes_are_an_agents_own_and_bounded(api):
    await api.add_agents(T, "alice", "bob", "carol")
    await api.add_agents(OTHER, "alice")
    c = await api.start(T, "alice", "bob")
    alice = api.auth(T, "alice")

    r = await api.http.get("/v1/me/notification-preferences", headers=alice)
    assert r.json() == {"do_not_disturb": False, "muted_conversation_ids": [], "message_previews": False}
    r = await api.http.put("/v1/me/notification-preferences/do-not-disturb", json={"do_not_disturb": True},
                           headers=alice)
    assert r.status_code == 200 and r.json()["do_not_disturb"] is True
    for body in ({}, {"do_not_disturb": "maybe"}, {"do_not_disturb": True, "extra": 1}):
        r = await api.http.put("/v1/me/notification-preferences/do-not-disturb", json=body, headers=alice)
        assert r.status_code == 422, body
    assert (await api.http.put(f"/v1/conversations/{c['id']}/mute", headers=alice)).status_code == 204
    assert (await api.http.put(f"/v1/conversations/{c['id']}/mute", headers=alice)).status_code == 204  # idempotent
    r = await api.http.get("/v1/me/notification-preferences", headers=alice)
    assert r.json() == {"do_not_disturb": True, "muted_conversation_ids": [c["id"]], "message_previews": False}

    # Not a participant, another tenant, no such thread: 404, nothing written.
    for who in (api.auth(T, "carol"), api.auth(OTHER, "alice")):
        r = await api.http.put(f"/v1/conversations/{c['id']}/mute", headers=who)
        assert r.status_code == 404 and r.json()["error"]["field"] == "conversation_id"
    assert (await api.http.get("/v1/me/notification-preferences", headers=api.auth(OTHER, "alice"))).json() == {
        "do_not_disturb": False, "muted_conversation_ids": [], "message_previews": False}
    assert (await api.http.get("/v1/me/notification-preferences", headers=api.auth(T, "bob"))).json() == {
        "do_not_disturb": False, "muted_conversation_ids": [], "message_previews": False}

    # Unmuting needs no participation (a thread one left must not hold a place), and touches only
    # the caller's own list.
    assert (await api.http.delete(f"/v1/conversations/{c['id']}/mute", headers=api.auth(T, "carol"))).status_code == 204
    assert (await api.http.get("/v1/me/notification-preferences", headers=alice)).json()["muted_conversation_ids"] == [
        c["id"]]
    assert (await api.http.delete(f"/v1/conversations/{c['id']}/mute", headers=alice)).status_code == 204
    r = await api.http.get("/v1/me/notification-preferences", headers=alice)
    assert r.json()["muted_conversation_ids"] == []
    # What the console shows follows the tenant's body policy.
    r = await api.http.put("/v1/admin/notification-settings", json={"include_bodies": True}, headers=api.admin(T))
    assert r.status_code == 200
    assert (await api.http.get("/v1/me/notification-preferences", headers=alice)).json()["message_previews"] is True
    assert (await api.http.get("/v1/me/notification-preferences", headers=api.auth(OTHER, "alice"))).json()[
        "message_previews"] is False


async def test_a_client_msg_id_may_not_pose_as_an_assistance_request(api):
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    r = await api.send(T, "alice", c["id"], "urgent!", "assist:0123")
    assert r.status_code == 422 and r.json()["error"]["field"] == "client_msg_id", r.text
    r = await api.http.get(f"/v1/conversations/{c['id']}/messages", headers=api.auth(T, "alice"))
    assert r.json()["items"] == []


async def test_mutes_are_bounded_per_agent(api):
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    prefs = api.app.state.services.notifications
    # The bound as the store enforces it, filled directly (MUTED_MAX threads would take minutes).
    await prefs._prefs.update_one(  # noqa: SLF001
        {"_id": f"{T}:alice", "tenant_id": T},
        {"$set": {"agent_id": "alice", "muted": [f"t{i}" for i in range(MUTED_MAX)]}}, upsert=True)
    r = await api.http.put(f"/v1/conversations/{c['id']}/mute", headers=api.auth(T, "alice"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "too_many_muted"
    assert len((await api.http.get("/v1/me/notification-preferences", headers=api.auth(T, "alice"))).json()[
        "muted_conversation_ids"]) == MUTED_MAX
    # Unmuting one makes room.
    assert (await api.http.delete("/v1/conversations/" + c["id"] + "/mute",
                                  headers=api.auth(T, "alice"))).status_code == 204
    await prefs.mute(T, "alice", "t0", False)
    assert (await api.http.put(f"/v1/conversations/{c['id']}/mute", headers=api.auth(T, "alice"))).status_code == 204
