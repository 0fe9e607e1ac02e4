"""Teams: named groups of a tenant's agents that a thread may ask instead of a person, and the
tenant's team settings. Admins (and help-desk services) manage them; every agent lists them.

Collections owned by im-api:
- `teams`: `{_id: compound_id(tenant, team), tenant_id, team_id, name, name_lc, members: [agent ids],
  claim_timeout_s (None: the tenant's), version, created_at, updated_at, updated_by}` — names are
  unique per tenant whatever their case (`name_lc`, casefolded); `version` makes a membership change
  a compare-and-set (two admins adding at once both count).
- `team_settings`: `{_id: tenant, tenant_id, offer_offline_when_none_online, claim_timeout_s,
  updated_at, updated_by}`.
A team's id is the server's (32 hex digits), so an id from another tenant is simply unknown: 404.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from im_runtime.mongo import compound_id
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .errors import Conflict, NotFound, Unprocessable
from .store import PREFIX_END, Store, now
from .team_rules import TeamSettings

_TEAM_ID = re.compile(r"^[0-9a-f]{32}$")
CHANGE_ATTEMPTS = 8  # re-runs of a membership change that lost a race with another


def known_team_id(team_id: str) -> str:
    """An id this server could not have made names no team: 404 like any unknown one."""
    if not _TEAM_ID.match(team_id):
        raise NotFound("no such team", field="team_id")
    return team_id


class Teams:
    def __init__(self, db: AsyncDatabase, store: Store, status_of: Callable[[str, str], str], *,
                 members_max: int, teams_max: int) -> None:
        self._teams = db["teams"]
        self._settings = db["team_settings"]
        self.store = store
        self.status_of = status_of  # (tenant, agent) -> online | away | offline (the presence cache)
        self.members_max = members_max
        self.teams_max = teams_max

    async def create_indexes(self) -> None:
        await self._teams.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("team_id", ASCENDING)], unique=True, name="team"),
            IndexModel([("tenant_id", ASCENDING), ("name_lc", ASCENDING)], unique=True, name="team_name"),
        ])

    # --- settings ---------------------------------------------------------------------------

    async def settings(self, tenant_id: str, session: Any = None) -> TeamSettings:
        return self._settings_of(await self._settings.find_one({"_id": tenant_id, "tenant_id": tenant_id},
                                                               session=session) or {})

    @staticmethod
    def _settings_of(doc: dict) -> TeamSettings:
        default = TeamSettings()
        return TeamSettings(doc.get("offer_offline_when_none_online", default.offer_offline_when_none_online),
                            doc.get("claim_timeout_s", default.claim_timeout_s))

    async def settings_view(self, tenant_id: str) -> dict[str, Any]:
        doc = await self._settings.find_one({"_id": tenant_id, "tenant_id": tenant_id}) or {}
        current = self._settings_of(doc)
        return {"offer_offline_when_none_online": current.offer_offline_when_none_online,
                "claim_timeout_s": current.claim_timeout_s, "updated_at": doc.get("updated_at"),
                "updated_by": doc.get("updated_by")}

    async def replace_settings(self, tenant_id: str, admin: str, offline: bool, timeout_s: int) -> dict[str, Any]:
        await self._settings.update_one(
            {"_id": tenant_id, "tenant_id": tenant_id},
            {"$set": {"offer_offline_when_none_online": offline, "claim_timeout_s": timeout_s,
                      "updated_at": now(), "updated_by": admin}}, upsert=True)
        return await self.settings_view(tenant_id)

    # --- reads ------------------------------------------------------------------------------

    async def get(self, tenant_id: str, team_id: str, session: Any = None) -> dict:
        doc = await self._teams.find_one({"_id": compound_id(tenant_id, known_team_id(team_id)),
                                          "tenant_id": tenant_id}, session=session)
        if doc is None:
            raise NotFound("no such team", field="team_id")
        return doc

    async def list(self, tenant_id: str, prefix: str | None = None) -> list[dict]:
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if prefix:
            query["name_lc"] = {"$gte": prefix.casefold(), "$lt": prefix.casefold() + PREFIX_END}
        return await self._teams.find(query).sort("name_lc", ASCENDING).limit(self.teams_max).to_list()

    async def resolve(self, tenant_id: str, team_ids: list[str], field: str, session: Any = None) -> list[dict]:
        """The named teams, in the order given; 404 naming the first unknown one (`field[i]`): a
        team of another tenant is unknown like any other."""
        for i, team_id in enumerate(team_ids):
            if not _TEAM_ID.match(team_id):
                raise NotFound(f"no such team: {team_id[:64]}", code="unknown_team", field=f"{field}[{i}]")
        found = {d["team_id"]: d async for d in self._teams.find(
            {"tenant_id": tenant_id, "team_id": {"$in": list(team_ids)}}, session=session)}
        for i, team_id in enumerate(team_ids):
            if team_id not in found:
                raise NotFound(f"no such team: {team_id}", code="unknown_team", field=f"{field}[{i}]")
        return [found[t] for t in team_ids]

    async def resolve_existing(self, tenant_id: str, team_ids: list[str], session: Any = None) -> list[dict]:
        """Those of `team_ids` that still exist (a request outlives a deleted team)."""
        found = {d["team_id"]: d async for d in self._teams.find(
            {"tenant_id": tenant_id, "team_id": {"$in": list(team_ids)}}, session=session)}
        return [found[t] for t in team_ids if t in found]

    def view(self, tenant_id: str, doc: dict, me: str, names: dict[str, str] | None = None) -> dict[str, Any]:
        """A team as agents see it: its presence counts; with `names`, its members too."""
        statuses = {m: self.status_of(tenant_id, m) for m in doc["members"]}
        out: dict[str, Any] = {
            "id": doc["team_id"], "name": doc["name"], "member_count": len(doc["members"]),
            "online_count": sum(1 for s in statuses.values() if s == "online"),
            "away_count": sum(1 for s in statuses.values() if s == "away"),
            "is_member": me in doc["members"], "claim_timeout_s": doc.get("claim_timeout_s"),
            "created_at": doc["created_at"], "updated_at": doc["updated_at"],
        }
        if names is not None:
            out["members"] = [{"id": m, "display_name": names.get(m, m), "status": statuses[m]}
                              for m in doc["members"]]
        return out

    async def full_view(self, tenant_id: str, doc: dict, me: str) -> dict[str, Any]:
        return self.view(tenant_id, doc, me, await self.store.display_names(tenant_id, set(doc["members"])))

    # --- changes (admins) -------------------------------------------------------------------

    async def create(self, tenant_id: str, admin: str, name: str, member_ids: list[str],
                     claim_timeout_s: int | None) -> dict:
        members = list(dict.fromkeys(member_ids))
        self._within_cap(len(members))
        await self._require_active(tenant_id, members, member_ids)
        # Counted before the insert: two creates at the very same moment may pass the bound by one.
        if await self._teams.count_documents({"tenant_id": tenant_id}) >= self.teams_max:
            raise Conflict(f"a tenant has at most {self.teams_max} teams", code="too_many_teams")
        t = now()
        team_id = uuid.uuid4().hex
        doc = {"_id": compound_id(tenant_id, team_id), "tenant_id": tenant_id, "team_id": team_id,
               "name": self._clean_name(name), "members": members, "claim_timeout_s": claim_timeout_s,
               "version": 1, "created_at": t, "updated_at": t, "updated_by": admin}
        doc["name_lc"] = doc["name"].casefold()
        try:
            await self._teams.insert_one(doc)
        except DuplicateKeyError:
            raise self._name_taken(doc["name"]) from None
        return doc

    async def update(self, tenant_id: str, admin: str, team_id: str, fields: dict[str, Any]) -> dict:
        """Renames it and/or sets its claim timeout (`fields`: what the request gave)."""
        current = await self.get(tenant_id, team_id)
        changes: dict[str, Any] = {"updated_at": now(), "updated_by": admin}
        if "name" in fields:
            changes["name"] = self._clean_name(fields["name"])
            changes["name_lc"] = changes["name"].casefold()
        if "claim_timeout_s" in fields:
            changes["claim_timeout_s"] = fields["claim_timeout_s"]
        try:
            await self._teams.update_one({"_id": current["_id"], "tenant_id": tenant_id},
                                         {"$set": changes, "$inc": {"version": 1}})
        except DuplicateKeyError:
            raise self._name_taken(changes["name"]) from None
        return await self.get(tenant_id, team_id)

    async def delete(self, tenant_id: str, team_id: str) -> None:
        """Its open requests stay open to whom they were offered (they name the team as it was)."""
        result = await self._teams.delete_one({"_id": compound_id(tenant_id, known_team_id(team_id)),
                                               "tenant_id": tenant_id})
        if not result.deleted_count:
            raise NotFound("no such team", field="team_id")

    async def change_member(self, tenant_id: str, admin: str, team_id: str, agent_id: str, add: bool) -> dict:
        """Adds or removes one member, by a compare-and-set on the team's version (two admins at
        once both count). Changes apply to requests made after them: a removed member keeps what
        they claimed and may still claim what was offered to them."""
        if add:
            await self._require_active(tenant_id, [agent_id], [agent_id], field="agent_id")
        for _ in range(CHANGE_ATTEMPTS):
            doc = await self.get(tenant_id, team_id)
            members = doc["members"]
            if (agent_id in members) == add:
                return doc
            if add:
                self._within_cap(len(members) + 1, "agent_id")
            after = [*members, agent_id] if add else [m for m in members if m != agent_id]
            result = await self._teams.update_one(
                {"_id": doc["_id"], "tenant_id": tenant_id, "version": doc["version"]},
                {"$set": {"members": after, "updated_at": now(), "updated_by": admin}, "$inc": {"version": 1}})
            if result.matched_count:
                return await self.get(tenant_id, team_id)
        raise Conflict("the team changed too often at once; retry", code="team_busy")

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _clean_name(name: str) -> str:
        text = " ".join(name.split())
        if not 1 <= len(text) <= 100:
            raise Unprocessable("name must be 1 to 100 characters after trimming", code="invalid_name", field="name")
        return text

    @staticmethod
    def _name_taken(name: str) -> Conflict:
        return Conflict(f"a team named {name!r} exists already", code="team_name_taken", field="name")

    def _within_cap(self, count: int, field: str = "member_ids") -> None:
        if count > self.members_max:
            raise Unprocessable(f"a team has at most {self.members_max} members (this would make {count})",
                                code="too_many_members", field=field)

    async def _require_active(self, tenant_id: str, wanted: list[str], given: list[str],
                              field: str = "member_ids") -> None:
        if not wanted:
            return
        active = await self.store.agents_by_id(tenant_id, wanted, active_only=True)
        missing = [a for a in wanted if a not in active]
        if missing:
            errors = [{"field": f"{field}[{given.index(a)}]" if field == "member_ids" else field,
                       "code": "unknown_agent", "message": f"{a} is not an active agent"} for a in missing]
            raise Unprocessable(f"unknown or deactivated agents: {', '.join(missing)}", code="unknown_agents",
                                field=errors[0]["field"], errors=errors)

    async def active_members(self, tenant_id: str, teams: list[dict], session: Any = None) -> list[str]:
        """The teams' members who are active agents now, each once, in the teams' order."""
        members = list(dict.fromkeys(m for t in teams for m in t["members"]))
        if not members:
            return []
        active = await self.store.agents_by_id(tenant_id, members, active_only=True, session=session)
        return [m for m in members if m in active]
