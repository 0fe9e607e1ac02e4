"""HTTP: notification settings (tenant admins) and an agent's own preferences (do not disturb,
muted threads), read by the notifier when it decides whether to notify."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from im_runtime.auth import Principal

from ..errors import NotFound
from .deps import CurrentPrincipal, Services, ServicesDep, with_role
from .schemas import (
    DoNotDisturbBody,
    NotificationPreferences,
    NotificationSettings,
    NotificationSettingsBody,
    errors_doc,
)

router = APIRouter(tags=["notifications"])
ConversationPath = Annotated[str, Path(min_length=1, max_length=128)]


TenantAdmin = with_role(("admin",), "only tenant admins manage notification settings")


@router.get("/v1/admin/notification-settings", response_model=NotificationSettings,
            summary="The tenant's notification settings (admins; the secret is never returned)",
            responses=errors_doc(401, 403))
async def get_settings(principal: TenantAdmin, svc: ServicesDep) -> dict:
    return await svc.notifications.settings(principal.tenant_id)


@router.put("/v1/admin/notification-settings", response_model=NotificationSettings,
            summary="Replace the tenant's notification settings (admins)", responses=errors_doc(400, 401, 403, 422))
async def put_settings(body: NotificationSettingsBody, principal: TenantAdmin,
                       svc: ServicesDep) -> dict:
    given = body.model_dump(exclude_unset=True)
    # Defaults for what the body left out, but a left-out secret means "keep it".
    full = {**NotificationSettingsBody().model_dump(exclude={"webhook_secret"}), **given}
    return await svc.notifications.replace_settings(principal.tenant_id, principal.agent_id, full)


@router.get("/v1/me/notification-preferences", response_model=NotificationPreferences,
            summary="My do-not-disturb switch and muted threads", responses=errors_doc(401))
async def get_prefs(principal: CurrentPrincipal, svc: ServicesDep) -> dict:
    return await svc.notifications.prefs(principal.tenant_id, principal.agent_id)


@router.put("/v1/me/notification-preferences/do-not-disturb", response_model=NotificationPreferences,
            summary="Turn do-not-disturb on or off (no notification while on)", responses=errors_doc(400, 401, 422))
async def put_dnd(body: DoNotDisturbBody, principal: CurrentPrincipal, svc: ServicesDep) -> dict:
    return await svc.notifications.set_do_not_disturb(principal.tenant_id, principal.agent_id, body.do_not_disturb)


async def _participant(svc: Services, principal: Principal, conversation_id: str) -> None:
    doc = await svc.store.conversation(principal.tenant_id, conversation_id)
    if doc is None or principal.agent_id not in doc["participants"]:
        raise NotFound("no such conversation", field="conversation_id")


@router.put("/v1/conversations/{conversation_id}/mute", status_code=204,
            summary="Mute a thread: no notification about it (participants)", responses=errors_doc(401, 404, 409, 422))
async def mute(conversation_id: ConversationPath, principal: CurrentPrincipal, svc: ServicesDep) -> Response:
    await _participant(svc, principal, conversation_id)
    await svc.notifications.mute(principal.tenant_id, principal.agent_id, conversation_id, True)
    return Response(status_code=204)


@router.delete("/v1/conversations/{conversation_id}/mute", status_code=204,
               summary="Unmute a thread", responses=errors_doc(401, 422))
async def unmute(conversation_id: ConversationPath, principal: CurrentPrincipal, svc: ServicesDep) -> Response:
    """No participant check: it only takes an id off the caller's own list, and a thread the agent
    has left must not hold a place in it for ever."""
    await svc.notifications.mute(principal.tenant_id, principal.agent_id, conversation_id, False)
    return Response(status_code=204)
