"""HTTP: teams (admins and services manage them, every agent lists them) and the tenant's team
settings; claiming and releasing a team request are under /v1/conversations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from .deps import CurrentPrincipal, ServicesDep, TeamAdmin, with_role
from .schemas import Team, TeamCreate, TeamPage, TeamSettings, TeamSettingsBody, TeamUpdate, errors_doc

router = APIRouter(tags=["teams"])
TeamPath = Annotated[str, Path(min_length=1, max_length=64, description="A team id.")]
AgentPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@:-]+$")]


TenantAdmin = with_role(("admin",), "only tenant admins manage the team settings")


@router.get("/v1/teams", response_model=TeamPage, summary="The tenant's teams by name, with online member counts",
            responses=errors_doc(401, 422))
async def list_teams(principal: CurrentPrincipal, svc: ServicesDep,
                     q: Annotated[str | None, Query(max_length=100, description="Case-insensitive name prefix.")] = None
                     ) -> dict:
    docs = await svc.teams.list(principal.tenant_id, q)
    return {"items": [svc.teams.view(principal.tenant_id, d, principal.agent_id) for d in docs]}


@router.post("/v1/teams", response_model=Team, status_code=201, summary="Create a team (admin, service)",
             responses=errors_doc(400, 401, 403, 409, 413, 422))
async def create_team(body: TeamCreate, principal: TeamAdmin, svc: ServicesDep) -> dict:
    doc = await svc.teams.create(principal.tenant_id, principal.agent_id, body.name, body.member_ids,
                                 body.claim_timeout_s)
    return await svc.teams.full_view(principal.tenant_id, doc, principal.agent_id)


@router.get("/v1/teams/{team_id}", response_model=Team, summary="One team, with its members and their presence",
            responses=errors_doc(401, 404))
async def get_team(team_id: TeamPath, principal: CurrentPrincipal, svc: ServicesDep) -> dict:
    doc = await svc.teams.get(principal.tenant_id, team_id)
    return await svc.teams.full_view(principal.tenant_id, doc, principal.agent_id)


@router.patch("/v1/teams/{team_id}", response_model=Team, summary="Rename a team or set its claim timeout (admin, service)",
              responses=errors_doc(400, 401, 403, 404, 409, 422))
async def update_team(team_id: TeamPath, body: TeamUpdate, principal: TeamAdmin, svc: ServicesDep) -> dict:
    fields = body.model_dump(exclude_unset=True)
    if fields.get("name", "") is None:
        fields.pop("name")  # null name: nothing to rename
    doc = await svc.teams.update(principal.tenant_id, principal.agent_id, team_id, fields)
    return await svc.teams.full_view(principal.tenant_id, doc, principal.agent_id)


@router.delete("/v1/teams/{team_id}", status_code=204, summary="Delete a team (admin, service)",
               responses=errors_doc(401, 403, 404))
async def delete_team(team_id: TeamPath, principal: TeamAdmin, svc: ServicesDep) -> Response:
    """Requests already made keep its name and stay open to whom they were offered."""
    await svc.teams.delete(principal.tenant_id, team_id)
    return Response(status_code=204)


@router.put("/v1/teams/{team_id}/members/{agent_id}", response_model=Team,
            summary="Add a member (admin, service); applies to requests made after", responses=errors_doc(401, 403, 404, 422))
async def add_member(team_id: TeamPath, agent_id: AgentPath, principal: TeamAdmin, svc: ServicesDep) -> dict:
    doc = await svc.teams.change_member(principal.tenant_id, principal.agent_id, team_id, agent_id, add=True)
    return await svc.teams.full_view(principal.tenant_id, doc, principal.agent_id)


@router.delete("/v1/teams/{team_id}/members/{agent_id}", response_model=Team,
               summary="Remove a member (admin, service); they keep the requests they took",
               responses=errors_doc(401, 403, 404))
async def remove_member(team_id: TeamPath, agent_id: AgentPath, principal: TeamAdmin, svc: ServicesDep) -> dict:
    doc = await svc.teams.change_member(principal.tenant_id, principal.agent_id, team_id, agent_id, add=False)
    return await svc.teams.full_view(principal.tenant_id, doc, principal.agent_id)


@router.get("/v1/admin/team-settings", response_model=TeamSettings, summary="The tenant's team settings (admins)",
            responses=errors_doc(401, 403))
async def get_team_settings(principal: TenantAdmin, svc: ServicesDep) -> dict:
    return await svc.teams.settings_view(principal.tenant_id)


@router.put("/v1/admin/team-settings", response_model=TeamSettings, summary="Replace the tenant's team settings (admins)",
            responses=errors_doc(400, 401, 403, 422))
async def put_team_settings(body: TeamSettingsBody, principal: TenantAdmin, svc: ServicesDep) -> dict:
    return await svc.teams.replace_settings(principal.tenant_id, principal.agent_id,
                                            body.offer_offline_when_none_online, body.claim_timeout_s)
