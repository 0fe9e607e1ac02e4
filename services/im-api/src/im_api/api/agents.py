"""HTTP: the agents directory (upsert and deactivate for admins/services, the picker list for all)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from .deps import CurrentPrincipal, DirectoryAdmin, DirectoryDep, ServicesDep
from .schemas import Agent, AgentPage, AgentUpsert, errors_doc

router = APIRouter(prefix="/v1/agents", tags=["agents"])
AgentPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@:-]+$")]


@router.put("/{agent_id}", response_model=Agent, summary="Create or update an agent (admin, service)",
            responses=errors_doc(400, 401, 403, 413, 422))
async def upsert_agent(agent_id: AgentPath, body: AgentUpsert, principal: DirectoryAdmin,
                       directory: DirectoryDep) -> dict:
    await directory.upsert(principal.tenant_id, agent_id, body.display_name.strip() or agent_id,
                           body.email, body.role)
    return await directory.get(principal.tenant_id, agent_id)


@router.delete("/{agent_id}", status_code=204, summary="Deactivate an agent (admin, service)",
               responses=errors_doc(401, 403, 404, 422))
async def deactivate_agent(agent_id: AgentPath, principal: DirectoryAdmin, directory: DirectoryDep) -> Response:
    """The agent's tokens stop working: its next call to this process is 401 `inactive_agent`, and
    every other im-api process refuses it within `IM_API_DIRECTORY_RECHECK_S` (1 s). Its sockets
    close 4401."""
    await directory.deactivate(principal.tenant_id, agent_id)
    return Response(status_code=204)


@router.get("", response_model=AgentPage, summary="List agents: online, then away, then offline",
            responses=errors_doc(400, 401, 422))
async def list_agents(
    principal: CurrentPrincipal,
    directory: DirectoryDep,
    svc: ServicesDep,
    q: Annotated[str | None, Query(max_length=200, description="Case-insensitive name prefix.")] = None,
    status: Annotated[Literal["online", "away", "offline"] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict:
    items, next_cursor = await directory.list(principal.tenant_id, q, status,
                                              limit or svc.settings.default_page_size, cursor)
    return {"items": items, "next_cursor": next_cursor}
