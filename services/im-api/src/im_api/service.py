"""The conversation rules: start (once per start identity), post, participants, read markers,
thread list and related lookup. Plain methods any entry point calls (HTTP today, the
assistance-request consumer later), all writing through the unit of work and its outbox."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from im_contracts.events import (
    ConversationStarted,
    MessagePosted,
    ParticipantsChanged,
    ReadMarkerMoved,
    TeamRequestChanged,
)
from im_contracts.models import BODY_MAX_CHARS, ConversationSnapshot, Participant, Related, TeamRequest
from im_contracts.topics import CONVERSATIONS, MESSAGES, conversation_key
from pymongo.errors import DuplicateKeyError

from . import cursors, team_rules
from .committer import Committer, StaleConversation
from .errors import Conflict, NotFound, RecordTooLarge, Unprocessable
from .metrics import TEAM_REQUESTS_OFFERED
from .outbox import Transaction, UnitOfWork, event_fits
from .settings import ApiSettings
from .store import Store, list_key, message_doc, now, related_key
from .views import conversation_view, last_read, message_model, message_view, read_state

if TYPE_CHECKING:
    from .team_requests import Offer, TeamRequests

T = TypeVar("T")
# Extra writes in a new message's own transaction: (transaction, stored message).
PostHook = Callable[[Transaction, dict], Awaitable[None]]
RACE_ATTEMPTS = 8  # re-runs of a membership/read change that lost a race with a send


@dataclass(frozen=True)
class FirstMessage:
    """The message a start posts in the new thread."""

    body: str
    client_msg_id: str | None


def clean_body(body: str, field: str = "body") -> str:
    text = body.strip()
    if not 1 <= len(text) <= BODY_MAX_CHARS:
        raise Unprocessable(f"{field} must be 1 to {BODY_MAX_CHARS} characters after trimming",
                            code="invalid_body", field=field)
    return text


@dataclass
class Conversations:
    store: Store
    uow: UnitOfWork
    committer: Committer
    settings: ApiSettings
    requests: TeamRequests | None = None  # set by the composition root (it needs this object)

    # --- views ----------------------------------------------------------------------------

    async def views(self, tenant_id: str, me: str, docs: list[dict]) -> list[dict[str, Any]]:
        """The API shape of each thread, participants' names joined in one query."""
        wanted = {p for d in docs for p in d["participants"]} | {a for d in docs for a in team_rules.names_needed(d)}
        names = await self.store.display_names(tenant_id, wanted)
        return [self._view_of(d, me, names) for d in docs]

    @staticmethod
    def _view_of(doc: dict, me: str, names: dict[str, str]) -> dict[str, Any]:
        view = {**conversation_view(doc, me, names), "team_request": team_rules.request_view(doc, names)}
        if me not in doc["participants"] and me in (doc.get("team_request") or {}).get("offered", []):
            # Offered, not in it: the question is what they see, never a later message.
            view.update(last_message=None, last_read_seq=doc["last_seq"], unread_count=0)
        return view

    async def view(self, tenant_id: str, me: str, conversation_id: str, admin: bool = False) -> dict[str, Any]:
        """A member a team request was offered to sees the thread (not its history) too."""
        doc = await self._visible(tenant_id, me, conversation_id, admin, offered_ok=True)
        return (await self.views(tenant_id, me, [doc]))[0]

    async def _visible(self, tenant_id: str, me: str, conversation_id: str, admin: bool = False,
                       offered_ok: bool = False) -> dict:
        doc = await self.store.conversation(tenant_id, conversation_id)
        offered = offered_ok and doc is not None and me in (doc.get("team_request") or {}).get("offered", [])
        if doc is None or (me not in doc["participants"] and not admin and not offered):
            raise NotFound("no such conversation", field="conversation_id")
        return doc

    async def snapshot(self, tenant_id: str, doc: dict, session: Any) -> ConversationSnapshot:
        """The shared part of a thread as events carry it (names read in the transaction)."""
        names = await self.store.agents_by_id(tenant_id, doc["participants"], session=session)
        last = doc.get("last_message")
        return ConversationSnapshot(
            id=doc["_id"],
            participants=[Participant(id=p, display_name=names[p]["display_name"] if p in names else p)
                          for p in doc["participants"]],
            related=Related(**doc["related"]) if doc.get("related") else None,
            created_by=doc["created_by"], created_at=doc["created_at"], last_seq=doc["last_seq"],
            last_message=message_model(last) if last else None, last_message_at=doc["last_message_at"])

    # --- start ----------------------------------------------------------------------------

    async def start(self, tenant_id: str, me: str, participant_ids: list[str], related: Related | None,
                    first_message: FirstMessage | None, also: PostHook | None = None,
                    team_ids: list[str] | None = None) -> tuple[dict[str, Any], bool]:
        """(conversation, created?): the thread of this start identity, made once; `also` joins the
        first message's transaction (see Committer.send). `team_ids`: teams asked too — the thread
        is offered to their members, and one of them claims it (team_requests.py)."""
        ids = sorted(set(participant_ids) | {me})
        teams = sorted(set(team_ids or []))
        if ids == [me] and not teams:
            raise Unprocessable("a conversation needs at least one agent or team besides you",
                                code="self_only_conversation", field="participant_ids")
        self.within_cap(len(ids), "participant_ids")
        first_body = clean_body(first_message.body, "first_message.body") if first_message else None
        await self.require_active(tenant_id, ids, participant_ids, "participant_ids")
        if first_body is not None:
            self._message_fits(tenant_id, me, ids, first_body, first_message.client_msg_id, "first_message.body")
        identity: list[Any] = [ids, related.type if related else None, related.id if related else None]
        if teams:  # threads without teams keep the key they always had
            identity.append(teams)
        key = json.dumps(identity)
        named_teams: list[dict] = []
        if teams:  # checked (404 for a team the tenant lacks) even when the thread exists already
            assert self.requests is not None
            if first_body is None:
                raise Unprocessable("asking a team needs the question: a first_message", code="question_required",
                                    field="first_message")
            named_teams = await self.requests.resolve(tenant_id, list(team_ids or []))
        doc = await self.store.conversation_by_start_key(tenant_id, key)
        created = False
        if doc is None:
            # Worked out only for a new thread: a repeat (a retry, a redelivered request) of an
            # existing one must not fail on who is present or still a member now.
            offer = await self.requests.offer(tenant_id, ids, named_teams) if named_teams else None
            question = team_rules.question_of(first_body)
            try:
                doc = await self.uow.run(lambda tx: self._create(tx, tenant_id, me, ids, related, key, offer, question))
                created = True
                if offer is not None:
                    TEAM_REQUESTS_OFFERED.inc()
            except DuplicateKeyError:  # a concurrent start won: its thread is ours
                doc = await self.store.conversation_by_start_key(tenant_id, key)
        if me not in doc["participants"]:  # a starter who left comes back by starting it again
            await self._change(tenant_id, me, doc["_id"], add=[me], remove=[], require_member=False)
        if first_message:
            await self.post(tenant_id, me, doc["_id"], first_body, first_message.client_msg_id, also=also)
        return await self.view(tenant_id, me, doc["_id"]), created

    def _message_fits(self, tenant_id: str, me: str, participants: list[str], body: str,
                      client_msg_id: str | None, field: str) -> None:
        """Refuses a first message too large to publish before its thread is made (the send's own
        check comes after the thread exists: the start would be half-done)."""
        probe = {"_id": uuid.uuid4().hex, "conversation_id": uuid.uuid4().hex, "seq": 1, "sender_id": me,
                 "body": body, "kind": "text", "client_msg_id": client_msg_id, "created_at": now()}
        event = MessagePosted(tenant_id=tenant_id, message=message_model(probe), recipients=participants)
        limit = self.settings.max_record_bytes
        if not event_fits(event, conversation_key(probe["conversation_id"]), limit):
            raise RecordTooLarge(f"this message needs a record larger than the {limit}-byte limit of this "
                                 "deployment", field=field)

    async def _create(self, tx: Transaction, tenant_id: str, me: str, ids: list[str], related: Related | None,
                      key: str, offer: Offer | None = None, question: str | None = None) -> dict:
        t = now()
        doc = {"_id": uuid.uuid4().hex, "tenant_id": tenant_id, "participants": ids, "start_key": key,
               "related": related.model_dump() if related else None, "created_by": me, "created_at": t,
               "last_seq": 0, "last_message": None, "last_message_at": t, "read": {}, "outbox_seq": 1}
        doc["list_key"] = list_key(t, doc["_id"])
        doc["related_key"] = related_key(related.type, related.id) if related else None
        if offer is not None:
            request = team_rules.new_request(offer.teams, me, question, offer.offered_to, t, offer.timeout_s)
            doc.update(team_request=request, offered_to=list(offer.offered_to),
                       escalate_at=team_rules.escalate_at(request), outbox_seq=2)
        await self.store.insert_conversation(doc, session=tx.session)
        event = ConversationStarted(tenant_id=tenant_id, conversation=await self.snapshot(tenant_id, doc, tx.session),
                                    recipients=ids)
        tx.publish(CONVERSATIONS, event, key=conversation_key(doc["_id"]), order_key=doc["_id"], order=1)
        if offer is not None:
            names = await self.store.display_names(tenant_id, {me})
            tx.publish(CONVERSATIONS, TeamRequestChanged(
                tenant_id=tenant_id, change="offered",
                request=TeamRequest.model_validate(team_rules.request_view(doc, names)),
                newly_offered=list(offer.offered_to), recipients=list(dict.fromkeys([*ids, *offer.offered_to])),
                seq=1), key=conversation_key(doc["_id"]), order_key=doc["_id"], order=2, field="team_ids")
        return doc

    # --- messages -------------------------------------------------------------------------

    async def post(self, tenant_id: str, me: str, conversation_id: str, body: str,
                   client_msg_id: str | None, also: PostHook | None = None) -> tuple[dict[str, Any], bool]:
        """(message, created?); a retry with the same client_msg_id returns the original."""
        doc, created = await self.committer.send(tenant_id, conversation_id, me, clean_body(body), client_msg_id,
                                                 also=also)
        return message_view(doc), created

    async def history(self, tenant_id: str, me: str, conversation_id: str, before_seq: int | None,
                      after_seq: int | None, limit: int) -> list[dict[str, Any]]:
        await self._visible(tenant_id, me, conversation_id)
        docs = await self.store.history(tenant_id, conversation_id, before_seq, after_seq, limit)
        return [message_view(d) for d in docs]

    # --- participants ---------------------------------------------------------------------

    async def add_participants(self, tenant_id: str, me: str, conversation_id: str,
                               agent_ids: list[str]) -> dict[str, Any]:
        await self._visible(tenant_id, me, conversation_id)
        wanted = list(dict.fromkeys(agent_ids))
        await self.require_active(tenant_id, wanted, agent_ids, "agent_ids")
        await self._change(tenant_id, me, conversation_id, add=wanted, remove=[])
        return await self.view(tenant_id, me, conversation_id)

    async def require_active(self, tenant_id: str, wanted: list[str], given: list[str], field: str) -> None:
        """422 `unknown_agents` naming each of `wanted` that is not an active agent of the tenant,
        by its index in the caller's `given` list (one directory read). The assistance intake
        calls it first too, and dead-letters the same refusal as `unknown_agent`."""
        active = await self.store.agents_by_id(tenant_id, wanted, active_only=True)
        missing = [a for a in wanted if a not in active]
        if missing:
            errors = [{"field": f"{field}[{given.index(a)}]" if a in given else field, "code": "unknown_agent",
                       "message": f"{a} is not an active agent"} for a in missing]
            raise Unprocessable(f"unknown or deactivated agents: {', '.join(missing)}", code="unknown_agents",
                                field=errors[0]["field"], errors=errors)

    def within_cap(self, count: int, field: str) -> None:
        cap = self.settings.max_participants
        if count > cap:
            raise Unprocessable(f"a thread holds at most {cap} agents (this would make {count})",
                                code="too_many_participants", field=field)

    async def leave(self, tenant_id: str, me: str, conversation_id: str) -> None:
        doc = await self._visible(tenant_id, me, conversation_id)
        request = doc.get("team_request") or {}
        if request.get("status") == "claimed" and request.get("claimed_by") == me and self.requests is not None:
            # The helper walking away hands the request back to its teams rather than leaving the
            # asker with a request marked taken by nobody in the thread.
            try:
                await self.requests.release(tenant_id, me, conversation_id)
                return
            except Conflict:  # the asker released it meanwhile (and so took the helper out)
                await self._change(tenant_id, me, conversation_id, add=[], remove=[me], require_member=False)
                return
        await self._change(tenant_id, me, conversation_id, add=[], remove=[me])

    async def _change(self, tenant_id: str, actor: str, conversation_id: str, add: list[str], remove: list[str],
                      require_member: bool = True) -> None:
        async def work(tx: Transaction) -> None:
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            if conv is None or (require_member and actor not in conv["participants"]):
                raise NotFound("no such conversation", field="conversation_id")
            current = conv["participants"]
            added = [a for a in add if a not in current]
            removed = [r for r in remove if r in current]
            if not added and not removed:
                return
            after = [p for p in current if p not in removed] + added
            if added:  # in the transaction, so concurrent adds count; leaving is always allowed
                self.within_cap(len(after), "agent_ids")
            names = await self.store.display_names(tenant_id, {actor, *added})
            if removed:
                text = f"{names.get(actor, actor)} left the conversation"
            elif added == [actor]:
                text = f"{names.get(actor, actor)} rejoined the conversation"
            else:
                text = f"{names.get(actor, actor)} added {_join([names.get(a, a) for a in added])}"
            seq = conv["last_seq"] + 1
            # New participants read the history over HTTP; only the "added you" message is unread.
            marks = {a: seq - 1 for a in added if a != actor}
            if actor in after:
                marks[actor] = seq
            await self.change_with_line(tx, conv, actor, text, after, added=added, removed=removed, read=marks)

        await self.retrying(work)

    async def change_with_line(self, tx: Transaction, conv: dict, actor: str, text: str, after: list[str], *,
                               added: list[str], removed: list[str], read: dict[str, int],
                               also: dict[str, Any] | None = None, at: datetime | None = None,
                               more_events: int = 0) -> tuple[dict, int]:
        """The participants become `after` and a system line (`text`, by `actor`) says so, in the
        caller's transaction: one compare-and-set on the thread (`also`: more of its fields), then
        ParticipantsChanged and MessagePosted in its order. `more_events` order numbers are kept
        for the caller's own events after them. (The thread as it is now, the first kept order.)"""
        tenant_id, conversation_id = conv["tenant_id"], conv["_id"]
        seq, at, order = conv["last_seq"] + 1, at or now(), conv.get("outbox_seq", 0)
        msg = message_doc(tenant_id, conversation_id, seq, actor, text, "system", None, at)
        fields = {"participants": after, **(also or {})}
        if not await self.store.advance(conv, msg, outbox_seq=order + 2 + more_events, read=read, also=fields,
                                        session=tx.session):
            raise StaleConversation(conversation_id)
        await self.store.insert_messages([msg], session=tx.session)
        updated = {**conv, **fields, "last_seq": seq, "last_message": msg, "last_message_at": at}
        snapshot = await self.snapshot(tenant_id, updated, tx.session)
        key = conversation_key(conversation_id)
        tx.publish(CONVERSATIONS, ParticipantsChanged(
            tenant_id=tenant_id, conversation=snapshot, added=added, removed=removed, changed_by=actor,
            recipients=after + removed), key=key, order_key=conversation_id, order=order + 1)
        tx.publish(MESSAGES, MessagePosted(tenant_id=tenant_id, message=message_model(msg), recipients=after),
                   key=key, order_key=conversation_id, order=order + 2)
        return updated, order + 3

    async def retrying(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Runs `work` in a transaction, again while it loses a compare-and-set (StaleConversation)."""
        for _ in range(RACE_ATTEMPTS - 1):
            try:
                return await self.uow.run(work)
            except StaleConversation:
                continue
        return await self.uow.run(work)

    # --- read markers ---------------------------------------------------------------------

    async def mark_read(self, tenant_id: str, me: str, conversation_id: str, seq: int) -> dict[str, int]:
        async def work(tx: Transaction) -> dict[str, int]:
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            if conv is None or me not in conv["participants"]:
                raise NotFound("no such conversation", field="conversation_id")
            old = last_read(conv, me)
            target = min(seq, conv["last_seq"])  # nobody has read what was not posted yet
            if target > old:
                order = conv.get("outbox_seq", 0) + 1
                if not await self.store.move_read_marker(conv, me, target, order, session=tx.session):
                    raise StaleConversation(conversation_id)
                tx.publish(CONVERSATIONS, ReadMarkerMoved(
                    tenant_id=tenant_id, conversation_id=conversation_id, agent_id=me, seq=target,
                    recipients=list(conv["participants"])),
                    key=conversation_key(conversation_id), order_key=conversation_id, order=order)
            return read_state(conv["last_seq"], max(old, target))

        return await self.retrying(work)

    async def unread(self, tenant_id: str, me: str) -> dict[str, Any]:
        """Over the agent's `unread_scan_max` most recently active threads: a thread with a new
        message is among them (a message makes its thread the most recent), so only an agent with
        more threads than that active since their last read can have unread the badge misses —
        `capped` says the count stopped there."""
        cap = self.settings.unread_scan_max
        rows = await self.store.unread_rows(tenant_id, me, cap + 1)
        counts = [read_state(r["last_seq"], last_read(r, me))["unread_count"] for r in rows[:cap]]
        return {"total": sum(counts), "conversations": sum(1 for c in counts if c), "capped": len(rows) > cap}

    # --- lists ----------------------------------------------------------------------------

    async def threads(self, tenant_id: str, me: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """A keyset walk of a snapshot: the first page fixes the time; later changes come by stream."""
        if cursor:
            c = cursors.decode(cursor, {"t": datetime, "k": str, "sc": int})
            snapshot, after, stream_cursor = c["t"], c["k"], c["sc"]
        else:
            # Read before the query: anything changing after it is on the stream after this cursor.
            stream_cursor = await self.store.stream_cursor(tenant_id, me)
            snapshot, after = now(), None
        docs = await self.store.thread_page(tenant_id, me, snapshot, after, limit + 1)
        next_cursor = None
        if len(docs) > limit:
            docs = docs[:limit]
            last = docs[-1]
            next_cursor = cursors.encode(t=snapshot, k=last["list_key"], sc=stream_cursor)
        return {"items": await self.views(tenant_id, me, docs), "next_cursor": next_cursor,
                "stream_cursor": stream_cursor}

    async def related(self, tenant_id: str, me: str, admin: bool, related_type: str, related_id: str,
                      limit: int) -> list[dict[str, Any]]:
        docs = await self.store.related(tenant_id, related_type, related_id, None if admin else me, limit)
        return await self.views(tenant_id, me, docs)


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
