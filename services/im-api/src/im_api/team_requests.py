"""Team requests: a thread asked of teams is offered to their members; one of them claims it
(atomically: a compare-and-set on the thread in a transaction, so of any number of claims at once,
from any number of processes, exactly one wins); the asker may release it back; one nobody claims
in time escalates to every member. Each step writes through the transaction + outbox path, and its
`TeamRequestChanged` is ordered with the thread's other events. The rules are `team_rules.py`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from im_contracts.events import TeamRequestChanged
from im_contracts.models import TeamRequest
from im_contracts.topics import CONVERSATIONS, conversation_key
from im_runtime.logs import log

from . import team_rules as rules
from .committer import StaleConversation
from .errors import Conflict, Forbidden, NotFound, Unprocessable
from .metrics import TEAM_CLAIM_SECONDS, TEAM_REQUESTS_CLAIMED, TEAM_REQUESTS_ESCALATED, TEAM_REQUESTS_RELEASED
from .outbox import Transaction
from .service import Conversations
from .store import now
from .teams import Teams

logger = logging.getLogger("im_api.team_requests")


@dataclass(frozen=True)
class Offer:
    """A new thread's request, worked out before its transaction (presence is this process's)."""

    teams: list[dict]
    offered_to: list[str]
    timeout_s: int


def request_event(tenant_id: str, change: str, conv: dict, names: dict[str, str], newly: list[str],
                  recipients: list[str], withdrawn: list[str] | None = None) -> TeamRequestChanged:
    """`conv`: the thread as it is after the change."""
    view = rules.request_view(conv, names)
    return TeamRequestChanged(tenant_id=tenant_id, change=change, request=TeamRequest.model_validate(view),
                              newly_offered=newly, withdrawn_from=withdrawn or [],
                              recipients=list(dict.fromkeys(recipients)), seq=conv["last_seq"])


@dataclass
class TeamRequests:
    conversations: Conversations
    teams: Teams

    @property
    def store(self):
        return self.conversations.store

    # --- offering (at the start) --------------------------------------------------------------

    async def resolve(self, tenant_id: str, team_ids: list[str], field: str = "team_ids") -> list[dict]:
        """The teams a start names (404 `unknown_team` naming `field[i]` for one the tenant lacks),
        each once."""
        teams = await self.teams.resolve(tenant_id, team_ids, field)
        return list({t["team_id"]: t for t in teams}.values())

    async def offer(self, tenant_id: str, participants: list[str], teams: list[dict],
                    field: str = "team_ids") -> Offer:
        """Who a new thread asking `teams` goes to; 422 when the teams have nobody but the
        thread's own participants to ask."""
        members = await self.teams.active_members(tenant_id, teams)
        if not [m for m in members if m not in participants]:
            raise Unprocessable("the teams have no active member to ask besides the thread's participants",
                                code="nobody_to_ask", field=field)
        settings = await self.teams.settings(tenant_id)
        status = {m: self.teams.status_of(tenant_id, m) for m in members}
        offered = rules.offer_targets(members, status, set(participants), settings.offer_offline_when_none_online)
        timeout = rules.claim_timeout([t.get("claim_timeout_s") for t in teams], settings.claim_timeout_s)
        return Offer([{"id": t["team_id"], "name": t["name"]} for t in teams], offered, timeout)

    # --- claim --------------------------------------------------------------------------------

    async def claim(self, tenant_id: str, me: str, conversation_id: str) -> dict[str, Any]:
        """The thread as the winner sees it; 409 `already_claimed` naming who won for anyone else."""
        outcome: dict[str, Any] = {}

        async def work(tx: Transaction) -> None:
            outcome.clear()  # a re-run (a transient failure) starts over
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            request = conv.get("team_request") if conv else None
            verdict = rules.claim_outcome(request, conv.get("offered_to") or [] if conv else [], me)
            if verdict == "not_offered":
                raise NotFound("no such team request", field="conversation_id")
            if verdict == "taken":
                winner = request["claimed_by"]
                name = (await self.store.display_names(tenant_id, {winner})).get(winner, winner)
                raise Conflict(f"{name} already took this request", code="already_claimed",
                               field="conversation_id", details={"claimed_by": {"id": winner, "display_name": name}})
            if verdict == "already_yours":
                return
            at = now()
            after = [*conv["participants"], me] if me not in conv["participants"] else list(conv["participants"])
            self.conversations.within_cap(len(after), "conversation_id")
            names = await self.store.display_names(tenant_id, {me, request["asked_by"]})
            request_after = rules.claimed(request, me, at)
            text = f"{names.get(me, me)} took the request for {rules.team_names(request)}"
            teams = await self.teams.resolve_existing(tenant_id, [t["id"] for t in request["teams"]], tx.session)
            members = await self.teams.active_members(tenant_id, teams, session=tx.session)
            withdrawn = [a for a in request.get("offered", []) if a not in after]
            await self._step(tx, conv, at, me, text, after, added=[me] if me not in conv["participants"] else [],
                             removed=[], request_after=request_after, offered_to=[], change="claimed",
                             newly=[], extra_recipients=[*request.get("offered", []), *members], names=names,
                             withdrawn=withdrawn)
            outcome["waited"] = (at - request["opened_at"]).total_seconds()

        await self.conversations.retrying(work)
        if "waited" in outcome:
            TEAM_REQUESTS_CLAIMED.inc()
            TEAM_CLAIM_SECONDS.observe(max(0.0, outcome["waited"]))
            log(logger, logging.INFO, "team request claimed", tenant_id=tenant_id, conversation_id=conversation_id,
                waited_s=round(outcome["waited"], 3))
        return await self.conversations.view(tenant_id, me, conversation_id)

    # --- release ------------------------------------------------------------------------------

    async def release(self, tenant_id: str, me: str, conversation_id: str) -> dict[str, Any]:
        """Back to its teams: the member who took it leaves the thread, and it is offered again
        (to whoever of the teams is present now) with its escalation clock restarted."""
        settings = await self.teams.settings(tenant_id)

        async def work(tx: Transaction) -> None:
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            request = conv.get("team_request") if conv else None
            verdict = rules.release_outcome(request, me, request["asked_by"] if request else "",
                                            conv["participants"] if conv else [])
            if verdict == "not_visible":
                raise NotFound("no such team request", field="conversation_id")
            if verdict == "not_allowed":
                raise Forbidden("only the asker or the member who took it can release a request",
                                code="not_allowed")
            if verdict == "not_claimed":
                raise Conflict("nobody has taken this request", code="not_claimed", field="conversation_id")
            holder = request["claimed_by"]
            after = [p for p in conv["participants"] if p != holder]
            teams = await self.teams.resolve_existing(tenant_id, [t["id"] for t in request["teams"]], tx.session)
            members = await self.teams.active_members(tenant_id, teams, session=tx.session)
            status = {m: self.teams.status_of(tenant_id, m) for m in members}
            offered = rules.offer_targets(members, status, set(after) | {holder},
                                          settings.offer_offline_when_none_online)
            at = now()
            names = await self.store.display_names(tenant_id, {me, holder, request["asked_by"]})
            who = names.get(me, me)
            text = (f"{who} handed the request back to {rules.team_names(request)}" if me == holder
                    else f"{who} released the request back to {rules.team_names(request)}")
            await self._step(tx, conv, at, me, text, after, added=[], removed=[holder],
                             request_after=rules.released(request, offered, at), offered_to=offered, change="released",
                             newly=offered, extra_recipients=[holder, *offered], names=names)

        await self.conversations.retrying(work)
        TEAM_REQUESTS_RELEASED.inc()
        return await self.conversations.view(tenant_id, me, conversation_id)

    async def _step(self, tx: Transaction, conv: dict, at: Any, actor: str, text: str, after: list[str], *,
                    added: list[str], removed: list[str], request_after: dict, offered_to: list[str], change: str,
                    newly: list[str], extra_recipients: list[str], names: dict[str, str],
                    withdrawn: list[str] | None = None) -> None:
        """A claim or a release: the participants change, a system line says so, the request
        moves on — one compare-and-set on the thread, three events in its order."""
        fields = {"team_request": request_after, "offered_to": offered_to,
                  "escalate_at": rules.escalate_at(request_after)}
        updated, order = await self.conversations.change_with_line(
            tx, conv, actor, text, after, added=added, removed=removed, read={}, also=fields, at=at, more_events=1)
        tx.publish(CONVERSATIONS, request_event(conv["tenant_id"], change, updated, names, newly,
                                                [*after, *extra_recipients], withdrawn),
                   key=conversation_key(conv["_id"]), order_key=conv["_id"], order=order, field="team_ids")

    # --- escalation ---------------------------------------------------------------------------

    async def escalate(self, tenant_id: str, conversation_id: str) -> bool:
        """Offers a request nobody took in time to every member of its teams, offline ones too
        (and so to the notifier). False when it is not due (any more): taken, released meanwhile,
        or escalated by another process."""
        done: dict[str, int] = {}

        async def work(tx: Transaction) -> None:
            done.clear()  # a re-run (a transient failure) starts over
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            request = conv.get("team_request") if conv else None
            due = rules.escalate_at(request) if request else None
            if due is None or due > now():
                return
            teams = await self.teams.resolve_existing(tenant_id, [t["id"] for t in request["teams"]], tx.session)
            members = await self.teams.active_members(tenant_id, teams, session=tx.session)
            added = rules.escalation_targets(members, conv.get("offered_to") or [], set(conv["participants"]))
            request_after = rules.escalated(request, added)
            offered_to = [*(conv.get("offered_to") or []), *added]
            order = conv.get("outbox_seq", 0) + 1
            fields = {"team_request": request_after, "offered_to": offered_to, "escalate_at": None}
            if not await self.store.touch_conversation(conv, order, fields, session=tx.session):
                raise StaleConversation(conversation_id)
            names = await self.store.display_names(tenant_id, {request["asked_by"]})
            event = request_event(tenant_id, "offered", {**conv, **fields}, names, added,
                                  [*conv["participants"], *offered_to])
            tx.publish(CONVERSATIONS, event, key=conversation_key(conversation_id), order_key=conversation_id,
                       order=order)
            done["added"] = len(added)

        await self.conversations.retrying(work)
        if "added" in done:
            TEAM_REQUESTS_ESCALATED.inc()
            log(logger, logging.INFO, "team request escalated", tenant_id=tenant_id, conversation_id=conversation_id,
                added=done["added"])
        return "added" in done

    async def escalate_due(self, limit: int, retry_s: float) -> int:
        """One round: the requests whose time has come, oldest first, at most `limit`. One that
        fails is looked at again `retry_s` later, behind the others, so it never holds up the
        escalations of other requests (or tenants) at the head of the queue."""
        count = 0
        for tenant_id, conversation_id in await self.store.due_escalations(now(), limit):
            try:
                if await self.escalate(tenant_id, conversation_id):
                    count += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log(logger, logging.WARNING, "escalation failed; retried later", tenant_id=tenant_id,
                    conversation_id=conversation_id, error=type(exc).__name__)
                await self.store.defer_escalation(tenant_id, conversation_id, now() + timedelta(seconds=retry_s))
        return count

    async def run_escalations(self, interval_s: float, limit: int, retry_s: float) -> None:
        """Every `interval_s`, until cancelled (every im-api runs it: the compare-and-set makes a
        request escalate once however many look at it)."""
        while True:
            try:
                await self.escalate_due(limit, retry_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed round is retried at the next one
                log(logger, logging.WARNING, "escalation round failed", error=type(exc).__name__)
            await asyncio.sleep(interval_s)
