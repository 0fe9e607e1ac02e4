"""A message's life after it is posted: edits, deletions and redactions (through the same transaction + outbox
path as a send, ordered with the thread's messages), the earlier versions kept for admins, the
tenant's message settings, and the audit log of every such act.

Collections owned by im-api:
- `message_versions`: `{tenant_id, conversation_id, seq, message_id, version, body, replaced_at,
  replaced_by, redacted_at}` — each body an edit or a deletion replaced (admins read them,
  audited); a redaction empties them.
- `message_settings`: `{_id: tenant, tenant_id, edit_window_s, retention_days, updated_at, updated_by}`
  (`retention_days`: null or absent = kept for ever; delivery and the notifier read it too,
  im_contracts.retention; retention.py deletes what is past it).
- `audit_log`: `{tenant_id, at, actor, role, action, target, request_id, details}` — never a body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from im_contracts.events import MessageChanged
from im_contracts.models import to_rfc3339
from im_contracts.retention import MESSAGE_SETTINGS_COLLECTION, retention_days
from im_contracts.topics import MESSAGES, conversation_key
from im_runtime.logs import trace_id
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from .committer import StaleConversation
from .errors import Conflict, Forbidden, InvalidCursor, NotFound, Unprocessable
from . import redaction
from .outbox import Transaction
from .service import Conversations, clean_body
from .store import Store, list_key, now
from .views import message_model, message_view

DEFAULT_EDIT_WINDOW_S = 900
CLOCK_MARGIN_S = 300  # how far apart the clocks of two im-api processes may be


@dataclass(frozen=True)
class Actor:
    agent_id: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def may_change(message: dict, actor: Actor, at: datetime, window_s: int, deleting: bool) -> str | None:
    """Why `actor` may not edit (or delete) `message` now; None when they may. The author, within
    the tenant's window; a tenant admin deletes any message any time."""
    if message.get("deleted_at") is not None:
        return "deleted"
    if message["kind"] != "text":
        return "system_message"
    if deleting and actor.admin:
        return None
    if message["sender_id"] != actor.agent_id:
        return "not_author"
    if at - message["created_at"] > timedelta(seconds=window_s):
        return "edit_window_passed"
    return None


def window_text(seconds: int) -> str:
    """15 minutes, 90 seconds, 1 minute."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


REFUSALS = {
    "deleted": (Conflict, "the message was deleted"),
    "system_message": (Forbidden, "a system line cannot be changed"),
    "not_author": (Forbidden, "only its author can change a message (and a tenant admin delete it)"),
}


class Audit:
    def __init__(self, db: AsyncDatabase) -> None:
        self._log = db["audit_log"]

    async def create_indexes(self) -> None:
        # Newest first by _id: an ObjectId starts with its creation time, and one key keeps each
        # page a plain index range (an $or of (time, id) bounds made SecantusDB scan).
        await self._log.create_indexes([
            IndexModel([("tenant_id", ASCENDING), ("_id", DESCENDING)], name="by_tenant"),
            IndexModel([("tenant_id", ASCENDING), ("action", ASCENDING), ("_id", DESCENDING)], name="by_action"),
        ])

    async def record(self, tenant_id: str, actor: Actor, action: str, target: dict[str, Any],
                     details: dict[str, Any] | None = None, session: Any = None) -> None:
        """In the caller's transaction when it has one: the act and its record exist together."""
        await self._log.insert_one({
            "tenant_id": tenant_id, "at": now(), "actor": actor.agent_id, "role": actor.role, "action": action,
            "target": target, "request_id": trace_id.get(), "details": details or {}}, session=session)

    def page_cursor(self, tenant_id: str, action: str | None, limit: int, before: ObjectId | None):
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if action:
            query["action"] = action
        if before is not None:
            query["_id"] = {"$lt": before}
        return self._log.find(query).sort("_id", DESCENDING).limit(limit)

    async def page(self, tenant_id: str, action: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        """Newest first; `cursor`: the last id of the previous page."""
        try:
            before = ObjectId(cursor) if cursor else None
        except InvalidId:
            raise InvalidCursor() from None
        rows = await self.page_cursor(tenant_id, action, limit + 1, before).to_list()
        items = [{**{k: v for k, v in r.items() if k not in ("_id", "tenant_id")}, "id": str(r["_id"])}
                 for r in rows[:limit]]
        return {"items": items, "next_cursor": items[-1]["id"] if len(rows) > limit else None}


async def create_indexes(db: AsyncDatabase) -> None:
    """The versions', the audit log's and the erasures' indexes (im-api at start, and imctl migrate)."""
    await db["message_versions"].create_indexes([
        IndexModel([("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("seq", ASCENDING),
                    ("version", ASCENDING)], unique=True, name="versions"),
    ])
    await Audit(db).create_indexes()
    from .erasure import create_indexes as erasure_indexes  # erasure.py builds on this module

    await erasure_indexes(db)


@dataclass
class Lifecycle:
    conversations: Conversations
    audit: Audit
    db: AsyncDatabase

    @property
    def store(self) -> Store:
        return self.conversations.store

    async def create_indexes(self) -> None:
        await create_indexes(self.db)

    # --- settings ---------------------------------------------------------------------------

    async def settings(self, tenant_id: str, session: Any = None) -> dict[str, Any]:
        doc = await self.db[MESSAGE_SETTINGS_COLLECTION].find_one({"_id": tenant_id, "tenant_id": tenant_id},
                                                                  session=session) or {}
        return {"edit_window_s": doc.get("edit_window_s", DEFAULT_EDIT_WINDOW_S),
                "retention_days": retention_days(doc),
                "updated_at": doc.get("updated_at"), "updated_by": doc.get("updated_by")}

    async def replace_settings(self, tenant_id: str, actor: Actor, changes: dict[str, Any]) -> dict[str, Any]:
        """`changes`: the settings given (validated); the others keep their value. Audited with
        each given one's value before and after, in the change's own transaction (two changes at
        once conflict, and the one retried records the other's value as its "before")."""

        async def work(tx: Transaction) -> None:
            before = await self.settings(tenant_id, session=tx.session)
            await self.db[MESSAGE_SETTINGS_COLLECTION].update_one(
                {"_id": tenant_id, "tenant_id": tenant_id},
                {"$set": {**changes, "updated_at": now(), "updated_by": actor.agent_id}}, upsert=True,
                session=tx.session)
            await self.audit.record(tenant_id, actor, "settings.change", {"type": "message_settings"},
                                    {name: [before[name], value] for name, value in changes.items()},
                                    session=tx.session)

        await self.conversations.uow.run(work)
        return await self.settings(tenant_id)

    # --- edit and delete --------------------------------------------------------------------

    async def edit(self, tenant_id: str, actor: Actor, conversation_id: str, seq: int, body: str) -> dict[str, Any]:
        text = clean_body(body)
        return await self._change(tenant_id, actor, conversation_id, seq, "edited", text)

    async def delete(self, tenant_id: str, actor: Actor, conversation_id: str, seq: int) -> dict[str, Any]:
        return await self._change(tenant_id, actor, conversation_id, seq, "deleted", "")

    async def _change(self, tenant_id: str, actor: Actor, conversation_id: str, seq: int, change: str,
                      body: str) -> dict[str, Any]:
        window_s = (await self.settings(tenant_id))["edit_window_s"]
        deleting = change == "deleted"

        async def work(tx: Transaction) -> dict:
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            if conv is None or (actor.agent_id not in conv["participants"] and not (deleting and actor.admin)):
                raise NotFound("no such conversation", field="conversation_id")
            message = await self.store.message_at(tenant_id, conversation_id, seq, session=tx.session)
            if message is None:
                raise NotFound("no such message", field="seq")
            at = now()
            why = may_change(message, actor, at, window_s, deleting)
            if why == "edit_window_passed":
                said = ("messages cannot be changed once posted" if window_s == 0 else
                        f"messages can be changed for {window_text(window_s)} after they are posted; "
                        f"this one was posted at {message['created_at']:%H:%M:%S} UTC")
                raise Forbidden(said, code="edit_window_passed", field="seq",
                                details={"edit_window_s": window_s, "posted_at": to_rfc3339(message["created_at"])})
            if why is not None:
                cls, text = REFUSALS[why]
                raise cls(text, code=why, field="seq")
            if not deleting and message["body"] == body:
                return message  # nothing changes: no version, no event
            fields = ({"body": "", "deleted_at": at, "deleted_by": actor.agent_id} if deleting
                      else {"body": body, "edited_at": at})
            if not await self.store.change_message(message, fields, session=tx.session):
                raise StaleConversation(conversation_id)
            version = message.get("version", 1)
            await self.db["message_versions"].insert_one({
                "tenant_id": tenant_id, "conversation_id": conversation_id, "seq": seq, "message_id": message["_id"],
                "version": version, "body": message["body"], "replaced_at": at, "replaced_by": actor.agent_id},
                session=tx.session)
            changed = {**message, **fields}
            order = conv.get("outbox_seq", 0) + 1
            last = conv.get("last_message") or {}
            also = {"last_message": changed} if last.get("seq") == seq else {}
            if not await self.store.touch_conversation(conv, order, also, session=tx.session):
                raise StaleConversation(conversation_id)
            tx.publish(MESSAGES, MessageChanged(
                tenant_id=tenant_id, change=change, message=message_model(changed), changed_by=actor.agent_id,
                version=version + 1, recipients=list(conv["participants"])), key=conversation_key(conversation_id),
                order_key=conversation_id, order=order, field="body")
            await self.audit.record(tenant_id, actor, "message.delete" if deleting else "message.edit",
                                    {"type": "message", "conversation_id": conversation_id, "seq": seq,
                                     "message_id": message["_id"]},
                                    {"version": version + 1, "author": message["sender_id"]}, session=tx.session)
            return changed

        return message_view(await self.conversations.retrying(work))

    # --- redaction (tenant admins) -------------------------------------------------------------

    async def redact(self, tenant_id: str, actor: Actor, conversation_id: str, seq: int, reason: str
                     ) -> dict[str, Any]:
        """Removes a message's body from everywhere im-api keeps it, in one transaction with its
        audit record and its `MessageChanged` (`redacted`): the message (a tombstone), its earlier
        versions, the thread's preview and team question, and every outbox record of the thread
        that carries a copy, sent or not. Delivery and the notifier clear their copies from the
        event, which names everyone a copy reached (the outbox records say who)."""

        async def work(tx: Transaction) -> dict:
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            if conv is None:
                raise NotFound("no such conversation", field="conversation_id")
            message = await self.store.message_at(tenant_id, conversation_id, seq, session=tx.session)
            if message is None:
                raise NotFound("no such message", field="seq")
            if message["kind"] != "text":
                raise Forbidden("a system line has no body to redact", code="system_message", field="seq")
            if message.get("redacted_at") is not None:
                raise Conflict("the message was redacted already", code="redacted", field="seq")
            at = now()
            fields: dict[str, Any] = {"body": "", "redacted_at": at, "redacted_by": actor.agent_id}
            if message.get("deleted_at") is None:
                fields |= {"deleted_at": at, "deleted_by": actor.agent_id}
            if not await self.store.change_message(message, fields, session=tx.session):
                raise StaleConversation(conversation_id)
            where = {"tenant_id": tenant_id, "conversation_id": conversation_id, "seq": seq}
            bodies = [message["body"]] + [v["body"] async for v in self.db["message_versions"].find(
                where, {"body": 1}, session=tx.session)]
            await self.db["message_versions"].update_many(
                where, {"$set": {"body": "", "redacted_at": at}}, session=tx.session)
            changed = {**message, **fields}
            tombstone = message_model(changed).model_dump(mode="json")
            request = conv.get("team_request")
            question = redaction.question_came_from(request, message["sender_id"], bodies)
            reached = await self.replace_in_outbox(tenant_id, conversation_id, message, tombstone, question, tx.session)
            order = conv.get("outbox_seq", 0) + 1
            also: dict[str, Any] = {}
            if (conv.get("last_message") or {}).get("seq") == seq:
                also["last_message"] = changed
            if question:
                also["team_request.question"] = None
            if not await self.store.touch_conversation(conv, order, also, session=tx.session):
                raise StaleConversation(conversation_id)
            # Everyone a copy may have reached: delivery rewrites their queues, the notifier their
            # previews (the participants of today are not all of them: some left, some were offered).
            everyone = set(conv["participants"]) | reached | set((request or {}).get("offered") or [])
            if (request or {}).get("claimed_by"):
                everyone.add(request["claimed_by"])
            tx.publish(MESSAGES, MessageChanged(
                tenant_id=tenant_id, change="redacted", message=message_model(changed), changed_by=actor.agent_id,
                version=message.get("version", 1) + 1, recipients=sorted(everyone), question_removed=question),
                key=conversation_key(conversation_id), order_key=conversation_id, order=order)
            await self.audit.record(tenant_id, actor, "message.redact",
                                    {"type": "message", "conversation_id": conversation_id, "seq": seq,
                                     "message_id": message["_id"]},
                                    {"reason": reason, "author": message["sender_id"],
                                     "version": message.get("version", 1) + 1, "question_removed": question},
                                    session=tx.session)
            return changed

        return message_view(await self.conversations.retrying(work))

    async def replace_in_outbox(self, tenant_id: str, conversation_id: str, message: dict, replacement: dict,
                                question: bool, session: Any) -> set[str]:
        """Rewrites the thread's outbox records that carry the message (or its question) with
        `replacement` (a tombstone, a reworded line); who the thread's records since the message
        reached. A record is written after
        the message it carries, so those since it was posted are all there is to look at (with a
        margin for the clocks of several im-api processes)."""
        since = message["created_at"] - timedelta(seconds=CLOCK_MARGIN_S)
        reached: set[str] = set()
        values: dict[Any, bytes] = {}
        for record in await self.store.outbox_since(tenant_id, conversation_id, since, session):
            event = json.loads(record["value"])
            reached |= redaction.reached(event)
            if redaction.scrub(event, conversation_id, message["seq"], replacement, question):
                values[record["_id"]] = redaction.encode(event)
        await self.store.rewrite_outbox(values, session)
        return reached

    # --- what admins may read ----------------------------------------------------------------

    async def versions(self, tenant_id: str, actor: Actor, conversation_id: str, seq: int) -> dict[str, Any]:
        """A message and its earlier bodies, for a tenant admin; the read itself is audited first."""
        message = await self.store.message_at(tenant_id, conversation_id, seq)
        if message is None:
            raise NotFound("no such message", field="seq")
        await self.audit.record(tenant_id, actor, "message.versions.read",
                                {"type": "message", "conversation_id": conversation_id, "seq": seq,
                                 "message_id": message["_id"]})
        rows = await self.db["message_versions"].find(
            {"tenant_id": tenant_id, "conversation_id": conversation_id, "seq": seq}).sort("version", 1).to_list()
        return {"message": message_view(message),
                "versions": [{**{k: r[k] for k in ("version", "body", "replaced_at", "replaced_by")},
                              "redacted_at": r.get("redacted_at")} for r in rows]}

    # --- export (admins; audited before the first line) ---------------------------------------

    async def export_one(self, tenant_id: str, actor: Actor, conversation_id: str) -> AsyncIterator[bytes]:
        if await self.store.conversation(tenant_id, conversation_id) is None:
            raise NotFound("no such conversation", field="conversation_id")
        await self.audit.record(tenant_id, actor, "export.conversation",
                                {"type": "conversation", "conversation_id": conversation_id})
        return export_conversation(self.db, tenant_id, conversation_id)

    async def export_range(self, tenant_id: str, actor: Actor, start: datetime, end: datetime
                           ) -> AsyncIterator[bytes]:
        if end <= start:
            raise Unprocessable("`to` must be after `from`", code="invalid_range", field="to")
        await self.audit.record(tenant_id, actor, "export.range",
                                {"type": "tenant", "from": to_rfc3339(start), "to": to_rfc3339(end)})
        return export_between(self.db, tenant_id, start, end)


# --- export -----------------------------------------------------------------------------------

EXPORT_PAGE = 500  # messages read per query: what an export holds in memory at once


def export_line(kind: str, doc: dict[str, Any]) -> bytes:
    return (json.dumps({"type": kind, **doc}, default=_json_default, ensure_ascii=False) + "\n").encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    raise TypeError(type(value).__name__)


def messages_after(db: AsyncDatabase, tenant_id: str, conversation_id: str, after: int):
    """A page of a thread's messages after seq `after` (the history index)."""
    return (db["messages"].find({"tenant_id": tenant_id, "conversation_id": conversation_id, "seq": {"$gt": after}})
            .sort("seq", ASCENDING).limit(EXPORT_PAGE))


def threads_from(db: AsyncDatabase, tenant_id: str, bound: dict[str, str]):
    """A page of the tenant's threads by last activity (the `by_activity` index)."""
    return (db["conversations"].find({"tenant_id": tenant_id, "list_key": bound})
            .sort("list_key", ASCENDING).limit(EXPORT_PAGE))


def conversation_export(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["_id"], "participants": doc["participants"], "related": doc.get("related"),
            "created_by": doc["created_by"], "created_at": doc["created_at"], "last_seq": doc["last_seq"],
            "teams": [t["name"] for t in (doc.get("team_request") or {}).get("teams", [])]}


async def export_conversation(db: AsyncDatabase, tenant_id: str, conversation_id: str) -> AsyncIterator[bytes]:
    """JSON lines: the thread, then its messages in seq order, read a page at a time (a thread of
    any length costs the memory of one page)."""
    conv = await db["conversations"].find_one({"_id": conversation_id, "tenant_id": tenant_id})
    if conv is None:
        return
    yield export_line("conversation", conversation_export(conv))
    after = 0
    while True:
        page = await messages_after(db, tenant_id, conversation_id, after).to_list()
        for m in page:
            yield export_line("message", message_view(m))
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1]["seq"]


async def export_between(db: AsyncDatabase, tenant_id: str, start: datetime, end: datetime) -> AsyncIterator[bytes]:
    """JSON lines: every thread of the tenant with a message posted in [start, end), each thread
    followed by those of its messages; threads in the order of their last activity, pages of them
    read in turn (a keyset walk on the list key), so the export holds one page at a time."""
    bound: dict[str, str] = {"$gte": list_key(start, "")}
    while True:
        page = await threads_from(db, tenant_id, bound).to_list()
        for conv in page:
            if conv["created_at"] >= end:
                continue
            lines = export_conversation_range(db, tenant_id, conv, start, end)
            first = True
            async for line in lines:
                if first:
                    yield export_line("conversation", conversation_export(conv))
                    first = False
                yield line
        if len(page) < EXPORT_PAGE:
            return
        bound = {"$gt": page[-1]["list_key"]}


async def export_conversation_range(db: AsyncDatabase, tenant_id: str, conv: dict, start: datetime,
                                    end: datetime) -> AsyncIterator[bytes]:
    after = 0
    while True:
        page = await messages_after(db, tenant_id, conv["_id"], after).to_list()
        for m in page:
            if start <= m["created_at"] < end:
                yield export_line("message", message_view(m))
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1]["seq"]
