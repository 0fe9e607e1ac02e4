"""The agents directory rules: upsert, deactivate, and the picker list (online, away, offline)."""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from im_contracts.events import AgentChanged
from im_contracts.topics import AGENTS, agent_key

from . import cursors
from .errors import NotFound
from .outbox import Transaction, UnitOfWork
from .store import Store, now

STATUS_ORDER = ("online", "away", "offline")


class PresenceView(Protocol):
    def get(self, tenant_id: str, agent_id: str) -> tuple[str, datetime | None]: ...
    def members(self, tenant_id: str, status: str) -> Set[str]: ...


def publish_agent(tx: Transaction, doc: dict) -> None:
    """The stored directory entry as an AgentChanged, in the transaction that changed it."""
    event = AgentChanged(tenant_id=doc["tenant_id"], agent_id=doc["agent_id"],
                         display_name=doc["display_name"], role=doc.get("role", "agent"),
                         active=doc["active"], email=doc.get("email"))
    tx.publish(AGENTS, event, key=agent_key(doc["tenant_id"], doc["agent_id"]),
               order_key=f"agent:{doc['tenant_id']}:{doc['agent_id']}", order=doc["outbox_seq"])


def agent_view(doc: dict, presence: PresenceView) -> dict[str, Any]:
    status, seen = presence.get(doc["tenant_id"], doc["agent_id"])
    return {"id": doc["agent_id"], "display_name": doc["display_name"], "email": doc.get("email"),
            "role": doc.get("role", "agent"), "active": doc.get("active", True),
            "presence": {"status": status, "last_seen_at": seen}}


@dataclass
class Directory:
    store: Store
    uow: UnitOfWork
    presence: PresenceView
    # Directory rows one list request may read (its whole cost, whatever the tenant's size).
    scan_max: int = 2_000
    scan_chunk: int = 500
    # An online/away group this small is read by id (one query) rather than walked by name.
    by_id_max: int = 200
    # Told after each committed change of an agent (the auth check's cache forgets it at once).
    on_change: Callable[[str, str], None] = lambda tenant_id, agent_id: None

    async def upsert(self, tenant_id: str, agent_id: str, display_name: str, email: str | None,
                     role: str) -> dict:
        """Create or update (and reactivate) an agent; AgentChanged goes out in the same transaction."""

        async def work(tx: Transaction) -> dict:
            doc = await self.store.save_agent(
                tenant_id, agent_id, {"display_name": display_name, "name_lc": display_name.casefold(),
                                      "email": email, "role": role, "active": True, "erased_at": None},
                now(), tx.session)
            await self.store.count_directory_change(tenant_id, agent_id, tx.session)
            publish_agent(tx, doc)
            return doc

        await self.store.make_directory_buckets(tenant_id)
        doc = await self.uow.run(work)
        self.on_change(tenant_id, agent_id)
        return doc

    async def deactivate(self, tenant_id: str, agent_id: str) -> None:
        async def work(tx: Transaction) -> None:
            doc = await self.store.deactivate_agent(tenant_id, agent_id, now(), tx.session)
            if doc is None:
                raise NotFound("no such agent", field="agent_id")
            await self.store.count_directory_change(tenant_id, agent_id, tx.session)
            publish_agent(tx, doc)

        await self.store.make_directory_buckets(tenant_id)
        await self.uow.run(work)
        self.on_change(tenant_id, agent_id)

    async def get(self, tenant_id: str, agent_id: str) -> dict:
        doc = await self.store.agent(tenant_id, agent_id)
        if doc is None:
            raise NotFound("no such agent", field="agent_id")
        return agent_view(doc, self.presence)

    async def list(self, tenant_id: str, q: str | None, status: str | None, limit: int,
                   cursor: str | None) -> tuple[list[dict], str | None]:
        """Active agents, online first, then away, then offline, each group by name.

        Every request reads at most `agent_list_scan_max` directory rows, however many agents the
        tenant has or how many are online: a group is a keyset walk of the name index, keeping the
        agents the presence cache puts in it (membership is a set lookup, never a `$nin` of every
        online id). Where the budget runs out the page ends early, and its cursor resumes the walk
        there: a page may hold fewer than `limit` agents (even none) while `next_cursor` is set.
        A small online/away group (at most the page's worth of ids) is read by id instead.
        Presence may change between pages: an agent can then move group.
        """
        pos = cursors.decode(cursor, {"g": int, "n": str, "i": str}) if cursor else None
        prefix = (q or "").casefold()
        # A snapshot (a set copy, no read): the cache changes between this request's awaits, and an
        # agent who came online after the online group was read would otherwise be left out of the
        # offline group too, and missing from the list.
        present = {s: frozenset(self.presence.members(tenant_id, s)) for s in ("online", "away")}
        budget = [self.scan_max]
        found: list[tuple[int, dict]] = []
        resume: tuple[int, str, str] | None = None
        for group, name in enumerate(STATUS_ORDER):
            if (status and name != status) or (pos and group < pos["g"]):
                continue
            after = (pos["n"], pos["i"]) if pos and group == pos["g"] else None
            need = limit + 1 - len(found)
            if name == "offline":
                def keep(agent_id: str) -> bool:
                    return agent_id not in present["online"] and agent_id not in present["away"]
            else:
                members = present[name]
                if not members:
                    continue
                if len(members) <= self.by_id_max:
                    found += [(group, d) for d in await self._present(tenant_id, prefix, members, after, need)]
                    if len(found) > limit:
                        break
                    continue
                keep = members.__contains__
            rows, stopped = await self._walk(tenant_id, prefix, keep, after, need, budget)
            found += [(group, d) for d in rows]
            if len(found) > limit:
                break
            if stopped is not None:
                resume = (group, *stopped)
                break
        next_cursor = None
        if len(found) > limit:
            group, last = found[limit - 1]
            next_cursor = cursors.encode(g=group, n=last["name_lc"], i=last["agent_id"])
        elif resume is not None:
            next_cursor = cursors.encode(g=resume[0], n=resume[1], i=resume[2])
        return [agent_view(d, self.presence) for _, d in found[:limit]], next_cursor

    async def _present(self, tenant_id: str, prefix: str, ids: Set[str], after: tuple[str, str] | None,
                       need: int) -> list[dict]:
        docs = await self.store.agents_by_id(tenant_id, sorted(ids), active_only=True)
        rows = sorted((d for d in docs.values() if d["name_lc"].startswith(prefix)),
                      key=lambda d: (d["name_lc"], d["agent_id"]))
        if after is not None:
            rows = [d for d in rows if (d["name_lc"], d["agent_id"]) > after]
        return rows[:need]

    async def _walk(self, tenant_id: str, prefix: str, keep: Callable[[str], bool], after: tuple[str, str] | None,
                    need: int, budget: list[int]) -> tuple[list[dict], tuple[str, str] | None]:
        """Up to `need` active agents after `after` in name order that `keep` accepts, reading the
        name index in chunks while `budget` (rows, shared by the request) lasts; and where the walk
        stopped for want of budget (None: it found `need` or reached the end)."""
        out: list[dict] = []
        while budget[0] > 0:
            chunk = min(self.scan_chunk, budget[0])
            docs = await self.store.active_agents_page(tenant_id, prefix, after, chunk)
            budget[0] -= max(1, len(docs))
            for d in docs:
                if keep(d["agent_id"]):
                    out.append(d)
                    if len(out) >= need:
                        return out, None
            if len(docs) < chunk:
                return out, None
            after = (docs[-1]["name_lc"], docs[-1]["agent_id"])
        # Out of budget: resume after the last row read, or at the group's start when none was
        # ("" sorts before every name: names are never empty).
        return out, after or ("", "")
