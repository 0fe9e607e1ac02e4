"""What routes receive: the authenticated caller and the services (`Annotated` aliases)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from im_runtime.auth import AuthError, Principal, TokenVerifier

from ..active_agents import ActiveAgents
from ..directory import Directory
from ..errors import Forbidden, Unauthorized
from ..erasure import Erasures
from ..lifecycle import Actor, Lifecycle
from ..limits import RateLimits
from ..notifications import Notifications
from ..service import Conversations
from ..settings import ApiSettings
from ..store import Store
from ..team_requests import TeamRequests
from ..teams import Teams

_ACTING = re.compile(r"^[A-Za-z0-9._@:-]{1,128}$")


@dataclass
class Services:
    """Built once in app.py and kept on app.state."""

    settings: ApiSettings
    store: Store
    verifier: TokenVerifier
    directory: Directory
    conversations: Conversations
    limits: RateLimits
    active: ActiveAgents
    notifications: Notifications
    teams: Teams
    team_requests: TeamRequests
    lifecycle: Lifecycle
    erasures: Erasures


def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


async def current_principal(request: Request, svc: ServicesDep) -> Principal:
    """The verified caller. An `agent` token (or a service acting for an agent) counts only while
    that agent exists and is active, as the directory said at most IM_API_ACTIVE_AGENT_CACHE_S
    ago (ActiveAgents): a deactivation takes effect within that bound."""
    return await require_active(await token_principal(request, svc), svc)


async def token_principal(request: Request, svc: ServicesDep) -> Principal:
    """The caller as its token says (signature, expiry, claims): no database read yet. (async:
    FastAPI would run a plain function in a worker thread, away from the event loop.)"""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required")
    try:
        principal = svc.verifier.verify(token.strip())
    except AuthError as exc:
        raise Unauthorized(exc.message) from None
    acting = request.headers.get("x-acting-agent-id")
    if principal.role == "service" and acting:
        if not _ACTING.match(acting):
            raise Unauthorized("X-Acting-Agent-Id is not an agent id")
        principal = Principal(principal.tenant_id, principal.subject, principal.role, principal.expires_at, acting)
    return principal


async def require_active(principal: Principal, svc: Services) -> Principal:
    if principal.role == "agent" or principal.acting_agent_id:
        if not await svc.active.is_active(principal.tenant_id, principal.agent_id):
            raise Unauthorized("the agent is unknown or deactivated", code="inactive_agent")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


TokenPrincipal = Annotated[Principal, Depends(token_principal)]


async def sender(principal: TokenPrincipal, svc: ServicesDep) -> Principal:
    """The caller, once a send is within its agent's and tenant's rate limits (else 429). The
    limit comes before the directory read: a flood of refused sends costs no database query."""
    svc.limits.send(principal)
    return await require_active(principal, svc)


async def ticket_minter(principal: TokenPrincipal, svc: ServicesDep) -> Principal:
    svc.limits.ticket(principal)
    return await require_active(principal, svc)


Sender = Annotated[Principal, Depends(sender)]
TicketMinter = Annotated[Principal, Depends(ticket_minter)]


def with_role(roles: tuple[str, ...], refusal: str) -> Any:
    """The caller, when its token's role is one of `roles` (else 403 saying `refusal`)."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(refusal)
        return principal

    return Annotated[Principal, Depends(check)]


DirectoryAdmin = with_role(("admin", "service"), "only admin and service tokens manage the agents directory")
TeamAdmin = with_role(("admin", "service"), "only admin and service tokens manage teams")


def store(svc: ServicesDep) -> Store:
    return svc.store


def conversations(svc: ServicesDep) -> Conversations:
    return svc.conversations


def directory(svc: ServicesDep) -> Directory:
    return svc.directory


StoreDep = Annotated[Store, Depends(store)]
ConversationsDep = Annotated[Conversations, Depends(conversations)]
DirectoryDep = Annotated[Directory, Depends(directory)]


async def audit_admin_read(svc: Services, principal: Principal, action: str, target: dict[str, Any],
                           details: dict[str, Any] | None = None) -> None:
    """An admin's read of message bodies outside their own threads (a thread's preview, the
    threads about a ticket): recorded before the answer leaves, like every admin read of bodies."""
    await svc.lifecycle.audit.record(principal.tenant_id, actor(principal), action, target, details)


def actor(principal: Principal) -> Actor:
    """Who acts, as the message lifecycle and its audit log name them."""
    return Actor(principal.agent_id, principal.role)
