"""Notification settings (per tenant, admins) and preferences (per agent: do not disturb, muted
threads). im-api writes them; the notifier reads them when it decides (im_contracts.notifications)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from im_contracts.events import utcnow
from im_contracts.notifications import (
    MUTED_MAX,
    PREFS_COLLECTION,
    SETTINGS_COLLECTION,
    TenantNotificationSettings,
    prefs_id,
    settings_id,
)
from im_runtime.webhook_urls import Network, check_url
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .errors import Conflict, Unprocessable

# Fields an admin may set; the secret is written, never read back.
SETTABLE = ("webhook_url", "webhook_secret", "email_enabled", "delay_s", "assistance_delay_s",
            "digest_window_s", "include_bodies")
SECRET_MIN_CHARS = 16


@dataclass
class WebhookPolicy:
    """What URLs a tenant may configure (the operator's IM_WEBHOOK_* settings)."""

    allow_http: bool
    allowed: list[Network]


class Notifications:
    def __init__(self, db: AsyncDatabase, policy: WebhookPolicy) -> None:
        self._settings = db[SETTINGS_COLLECTION]
        self._prefs = db[PREFS_COLLECTION]
        self.policy = policy

    async def create_indexes(self) -> None:
        await self._prefs.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("agent_id", ASCENDING)], unique=True, name="agent"),
        ])

    # --- tenant settings (admins) -------------------------------------------------------------

    async def settings(self, tenant_id: str) -> dict[str, Any]:
        doc = await self._settings.find_one({"_id": settings_id(tenant_id), "tenant_id": tenant_id})
        return shown(TenantNotificationSettings.model_validate(doc or {"tenant_id": tenant_id}))

    async def replace_settings(self, tenant_id: str, admin_id: str, given: dict[str, Any]) -> dict[str, Any]:
        """`given`: the request's fields (pydantic-checked). A missing `webhook_secret` keeps the
        stored one; a URL without any secret is refused (an unsigned webhook cannot be trusted)."""
        current = await self._settings.find_one({"_id": settings_id(tenant_id), "tenant_id": tenant_id}) or {}
        url = given.get("webhook_url")
        if url is not None:
            why = check_url(url, allow_http=self.policy.allow_http, allowed=self.policy.allowed)
            if why:
                raise Unprocessable(f"webhook_url {why}", code="webhook_url_refused", field="webhook_url")
        secret = given["webhook_secret"] if "webhook_secret" in given else current.get("webhook_secret")
        if url is not None and not secret:
            raise Unprocessable("a webhook needs webhook_secret (its requests are signed with it)",
                                code="webhook_secret_required", field="webhook_secret")
        if secret is not None and len(secret) < SECRET_MIN_CHARS:
            raise Unprocessable(f"webhook_secret must be at least {SECRET_MIN_CHARS} characters",
                                field="webhook_secret")
        doc = TenantNotificationSettings.model_validate({
            **{k: v for k, v in given.items() if k in SETTABLE}, "webhook_secret": secret,
            "tenant_id": tenant_id, "updated_at": utcnow(), "updated_by": admin_id,
        }).model_dump()
        await self._settings.replace_one({"_id": settings_id(tenant_id), "tenant_id": tenant_id},
                                         {"_id": settings_id(tenant_id), **doc}, upsert=True)
        return shown(TenantNotificationSettings.model_validate(doc))

    # --- an agent's own preferences -------------------------------------------------------------

    async def prefs(self, tenant_id: str, agent_id: str) -> dict[str, Any]:
        doc = await self._prefs.find_one({"_id": prefs_id(tenant_id, agent_id), "tenant_id": tenant_id})
        tenant = await self._settings.find_one({"_id": settings_id(tenant_id), "tenant_id": tenant_id},
                                               projection={"include_bodies": 1})
        return {"do_not_disturb": bool((doc or {}).get("do_not_disturb")),
                "muted_conversation_ids": list((doc or {}).get("muted", [])),
                "message_previews": bool((tenant or {}).get("include_bodies"))}

    async def set_do_not_disturb(self, tenant_id: str, agent_id: str, on: bool) -> dict[str, Any]:
        await self._prefs.update_one({"_id": prefs_id(tenant_id, agent_id), "tenant_id": tenant_id},
                                     {"$set": {"do_not_disturb": on, "agent_id": agent_id}}, upsert=True)
        return await self.prefs(tenant_id, agent_id)

    async def mute(self, tenant_id: str, agent_id: str, conversation_id: str, muted: bool) -> None:
        key = {"_id": prefs_id(tenant_id, agent_id), "tenant_id": tenant_id}
        if not muted:
            await self._prefs.update_one(key, {"$pull": {"muted": conversation_id}})
            return
        # Bounded: the add applies only while the list has room (or already holds the id).
        result = await self._prefs.update_one(
            {**key, "$or": [{"muted": conversation_id}, {f"muted.{MUTED_MAX - 1}": {"$exists": False}}]},
            {"$addToSet": {"muted": conversation_id}, "$set": {"agent_id": agent_id}})
        if result.matched_count:
            return
        if await self._prefs.find_one(key, projection={"_id": 1}) is None:
            try:
                await self._prefs.insert_one({**key, "agent_id": agent_id, "do_not_disturb": False,
                                              "muted": [conversation_id]})
                return
            except DuplicateKeyError:  # a concurrent first write: the document exists now
                return await self.mute(tenant_id, agent_id, conversation_id, muted)
        raise Conflict(f"at most {MUTED_MAX} muted threads; unmute one first", code="too_many_muted",
                       field="conversation_id")


def shown(settings: TenantNotificationSettings) -> dict[str, Any]:
    """What an admin reads back: everything but the secret, and whether one is set."""
    out = settings.model_dump(exclude={"webhook_secret"})
    out["webhook_secret_set"] = bool(settings.webhook_secret)
    return out
