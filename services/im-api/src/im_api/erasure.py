"""Erasing an agent's personal data (a tenant admin's act): the directory entry loses its display
name and email at once, in one transaction with the audit record and the `AgentChanged` that
carries the erased entry to delivery and the notifier; then a background job, bounded per round
and resumable from its state in MongoDB, goes through what the agent left behind:

- their messages, by the `by_sender` index: kept as they are (shown as from the erased agent,
  since every reader resolves names from the directory) or redacted, as the tenant chose; their
  system lines ("Ana left the conversation") say "Erased agent" instead of their name;
- each thread they took part in: the system lines of others that name them ("Ben added Ana"),
  and the participant names inside the thread's outbox records (thread snapshots, team requests);
- the outbox records of their own directory changes (their name and email).

Collection `erasures`: `{_id: compound_id(tenant, agent), tenant_id, agent_id, requested_by,
messages: keep|redact, reason, status: running|done, phase: messages|threads|directory, after
and after_ids (the walk's position: the time of the last message done, the ids done at it), threads (ids to visit), thread_index, thread_seq, name (the former
display name: needed to find it in system lines, unset when done), counts, started_at,
finished_at, lease_until}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from im_contracts.events import ERASED_NAME, MessageChanged
from im_contracts.topics import MESSAGES, conversation_key
from im_runtime.logs import log
from im_runtime.mongo import compound_id
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from . import redaction
from .committer import StaleConversation
from .directory import publish_agent
from .errors import Conflict, NotFound, Unprocessable
from .lifecycle import Actor, Lifecycle
from .outbox import Transaction
from .store import now
from .views import message_model

logger = logging.getLogger("im_api.erasure")

OUTBOX_TRIES = 5  # rereads of a thread's outbox records rewritten by someone else meanwhile
EPOCH = datetime(1970, 1, 1)
MessagesChoice = Literal["keep", "redact"]


# --- pure -------------------------------------------------------------------------------------

def without_name(text: str, name: str) -> str | None:
    """`text` with `name`, wherever it stands as a whole name, as "Erased agent"; None when it has
    none (erasing "Al" leaves "Bob added Alice" alone)."""
    if not name:
        return None
    whole = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
    changed = whole.sub(ERASED_NAME, text)
    return changed if changed != text else None


def erase_in(node: Any, agent_id: str) -> bool:
    """Replaces, in place, the agent's name (and email) wherever a stored event names them: a
    participant or team request party `{id, display_name}`, or a directory entry `{agent_id,
    display_name, email}`. Whether anything changed."""
    changed = False
    if isinstance(node, dict):
        if node.get("id") == agent_id and "display_name" in node and node["display_name"] != ERASED_NAME:
            node["display_name"] = ERASED_NAME
            changed = True
        if node.get("agent_id") == agent_id and "display_name" in node:
            if node["display_name"] != ERASED_NAME or node.get("email") is not None:
                node["display_name"], node["email"] = ERASED_NAME, None
                changed = True
        values = list(node.values())
    elif isinstance(node, list):
        values = list(node)
    else:
        return False
    for value in values:
        changed = erase_in(value, agent_id) or changed
    return changed


def erasure_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"agent_id": doc["agent_id"], "messages": doc["messages"], "status": doc["status"],
            "requested_by": doc["requested_by"], "started_at": doc["started_at"],
            "finished_at": doc.get("finished_at"), "counts": doc.get("counts", {})}


# --- the act and its job ------------------------------------------------------------------------

@dataclass
class Erasures:
    lifecycle: Lifecycle
    db: AsyncDatabase
    lease_s: float = 60.0
    # How long after the erasure the walk of their messages stays open: every im-api refuses the
    # agent within its directory recheck, so nothing they post can come later than this.
    settle_s: float = 5.0
    # Told after the erasure commits: the auth check's cache forgets the agent (now inactive) at once.
    on_change: Callable[[str, str], None] = lambda tenant_id, agent_id: None

    @property
    def store(self):
        return self.lifecycle.store

    @property
    def jobs(self):
        return self.db["erasures"]

    async def erase(self, tenant_id: str, actor: Actor, agent_id: str, messages: MessagesChoice,
                    reason: str) -> dict[str, Any]:
        """The directory entry erased and the job recorded, in one transaction with the audit
        record and the AgentChanged; the job then runs in the background (`status`)."""
        if agent_id == actor.agent_id:
            raise Unprocessable("an admin cannot erase themselves", code="cannot_erase_self", field="agent_id")
        job_id = compound_id(tenant_id, agent_id)

        async def work(tx: Transaction) -> dict:
            agent = await self.store.agent(tenant_id, agent_id, session=tx.session)
            if agent is None:
                raise NotFound("no such agent", field="agent_id")
            if agent.get("erased_at") is not None:
                raise Conflict("the agent was erased already", code="erased", field="agent_id")
            at = now()
            doc = await self.store.save_agent(tenant_id, agent_id, {
                "display_name": ERASED_NAME, "name_lc": ERASED_NAME.casefold(), "email": None, "active": False,
                "erased_at": at, "erased_by": actor.agent_id}, at, tx.session)
            await self.store.count_directory_change(tenant_id, agent_id, tx.session)
            publish_agent(tx, doc)
            job = {"_id": job_id, "tenant_id": tenant_id, "agent_id": agent_id, "requested_by": actor.agent_id,
                   "messages": messages, "reason": reason, "status": "running", "phase": "messages", "after": None,
                   "after_ids": [],
                   "threads": [], "thread_index": 0, "thread_seq": 0, "name": agent["display_name"],
                   "counts": {"messages_redacted": 0, "lines_rewritten": 0, "records_rewritten": 0},
                   "started_at": at, "finished_at": None, "lease_until": EPOCH}
            await self.jobs.replace_one({"_id": job_id, "tenant_id": tenant_id}, job, upsert=True, session=tx.session)
            await self.lifecycle.audit.record(tenant_id, actor, "agent.erase", {"type": "agent", "agent_id": agent_id},
                                              {"messages": messages, "reason": reason}, session=tx.session)
            return job

        await self.store.make_directory_buckets(tenant_id)
        job = await self.lifecycle.conversations.uow.run(work)
        self.on_change(tenant_id, agent_id)
        return erasure_view(job)

    async def status(self, tenant_id: str, agent_id: str) -> dict[str, Any]:
        doc = await self.jobs.find_one({"_id": compound_id(tenant_id, agent_id), "tenant_id": tenant_id})
        if doc is None:
            raise NotFound("no erasure of this agent", field="agent_id")
        return erasure_view(doc)

    # --- the background job ---------------------------------------------------------------------

    async def run(self, interval_s: float, batch: int) -> None:
        """Every `interval_s`, until cancelled: one round of at most `batch` items for each running
        erasure this process holds the lease of (every im-api runs it; the lease keeps one per job)."""
        while True:
            try:
                await self.round(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed round is retried at the next one
                log(logger, logging.WARNING, "erasure round failed", error=type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def round(self, batch: int) -> int:
        """One round over the running erasures; how many are still running after it. One that
        fails (a thread too busy to redact in, MongoDB away) is left for the next round and the
        others go on."""
        running = 0
        async for job in self.jobs.find({"status": "running"}, {"_id": 1, "tenant_id": 1}):
            running += 1
            token = uuid.uuid4().hex
            if not await self._lease(job, token):
                continue
            key = {"_id": job["_id"], "tenant_id": job["tenant_id"]}
            try:
                if not await self._step(await self.jobs.find_one(key), batch):
                    running -= 1
            except Exception as exc:  # noqa: BLE001 - retried at the next round
                log(logger, logging.WARNING, "erasure step failed", tenant_id=job["tenant_id"],
                    error=type(exc).__name__)
            finally:  # the next round (here or in another im-api) takes it again at once
                await self.jobs.update_one({**key, "lease_token": token}, {"$set": {"lease_until": EPOCH}})
        return running

    async def _lease(self, job: dict, token: str) -> bool:
        """Holds the job for one round (`token` names this hold); a holder that died lets go after
        `lease_s`, and one that outlived its lease cannot release another's."""
        at = now()
        result = await self.jobs.update_one(
            {"_id": job["_id"], "tenant_id": job["tenant_id"], "status": "running", "lease_until": {"$lt": at}},
            {"$set": {"lease_until": at + timedelta(seconds=self.lease_s), "lease_token": token}})
        return bool(result.modified_count)

    async def _save(self, job: dict, fields: dict[str, Any], counts: dict[str, int]) -> None:
        inc = {f"counts.{k}": v for k, v in counts.items() if v}
        await self.jobs.update_one({"_id": job["_id"], "tenant_id": job["tenant_id"]},
                                   {"$set": fields, **({"$inc": inc} if inc else {})})

    async def _step(self, job: dict, batch: int) -> bool:
        """Up to `batch` items of the job's current phase; its progress saved after them (a kill
        in between repeats them, and each is idempotent). Whether the job goes on."""
        tenant_id, agent_id = job["tenant_id"], job["agent_id"]
        actor = Actor(job["requested_by"], "admin")
        counts = {"messages_redacted": 0, "lines_rewritten": 0, "records_rewritten": 0}
        if job["phase"] == "messages":
            seen = set(job.get("after_ids") or [])
            page = [m for m in await messages_by(self.db, tenant_id, agent_id, job["after"], batch + len(seen))
                    .to_list() if m["_id"] not in seen][:batch]
            threads = sorted({m["conversation_id"] for m in page})
            for m in page:
                if m["kind"] == "system":
                    counts["lines_rewritten"] += await self._rewrite_line(tenant_id, actor, m, job["name"])
                elif job["messages"] == "redact" and m.get("redacted_at") is None:
                    counts["messages_redacted"] += await self._redact(tenant_id, actor, m, job["reason"])
            fields: dict[str, Any] = {}
            if page:  # where the walk goes on: after this time, but for the ids of it done already
                last = page[-1]["created_at"]
                done_at_last = [m["_id"] for m in page if m["created_at"] == last]
                fields = {"after": last, "after_ids": done_at_last + (list(seen) if last == job["after"] else [])}
            # The last page, once anything they could still post (another im-api accepts their
            # token until its directory check) would be in the walk: on to the threads.
            if len(page) < batch and now() >= job["started_at"] + timedelta(seconds=self.settle_s):
                fields["phase"] = "threads"
                threads += await self.store.conversation_ids_of(tenant_id, agent_id)
            await self.jobs.update_one({"_id": job["_id"], "tenant_id": tenant_id},
                                       {"$addToSet": {"threads": {"$each": sorted(set(threads))}}})
            await self._save(job, fields, counts)
            return True
        if job["phase"] == "threads":
            index = job["thread_index"]
            if index >= len(job["threads"]):
                await self._save(job, {"phase": "directory"}, counts)
                return True
            conversation_id = job["threads"][index]
            page = await self.db["messages"].find(
                {"tenant_id": tenant_id, "conversation_id": conversation_id, "seq": {"$gt": job["thread_seq"]}}
            ).sort("seq", ASCENDING).limit(batch).to_list()
            for m in page:
                if m["kind"] == "system" and m["sender_id"] != agent_id:
                    counts["lines_rewritten"] += await self._rewrite_line(tenant_id, actor, m, job["name"])
            if len(page) == batch:
                await self._save(job, {"thread_seq": page[-1]["seq"]}, counts)
                return True
            counts["records_rewritten"] += await self._erase_in_outbox(tenant_id, conversation_id, agent_id)
            await self._save(job, {"thread_index": index + 1, "thread_seq": 0}, counts)
            return True
        # phase "directory": the records of the agent's own directory changes, the erased entry
        # announced again (delivery looks at every frame queued for the agent's threads once
        # more: some were on their way at the erasure), then done.
        counts["records_rewritten"] += await self._erase_in_outbox(tenant_id, f"agent:{tenant_id}:{agent_id}",
                                                                   agent_id)
        await self._announce(tenant_id, agent_id)
        await self.jobs.update_one({"_id": job["_id"], "tenant_id": tenant_id},
                                   {"$set": {"status": "done", "finished_at": now(), "threads": []},
                                    "$unset": {"name": ""}, "$inc": {f"counts.{k}": v for k, v in counts.items()}})
        done = await self.jobs.find_one({"_id": job["_id"], "tenant_id": tenant_id})
        await self.lifecycle.audit.record(tenant_id, actor, "agent.erase.finished",
                                          {"type": "agent", "agent_id": agent_id}, done["counts"])
        log(logger, logging.INFO, "erasure finished", tenant_id=tenant_id, **done["counts"])
        return False

    async def _announce(self, tenant_id: str, agent_id: str) -> None:
        """The erased entry's AgentChanged once more (unless an upsert made a new entry since)."""

        async def work(tx: Transaction) -> None:
            agent = await self.store.agent(tenant_id, agent_id, session=tx.session)
            if agent is None or agent.get("erased_at") is None:
                return
            doc = await self.store.save_agent(tenant_id, agent_id, {}, now(), tx.session)
            publish_agent(tx, doc)

        await self.lifecycle.conversations.uow.run(work)

    async def _redact(self, tenant_id: str, actor: Actor, message: dict, reason: str) -> int:
        try:
            await self.lifecycle.redact(tenant_id, actor, message["conversation_id"], message["seq"],
                                        f"erasure of its author: {reason}")
            return 1
        except (Conflict, NotFound):  # redacted meanwhile (or by a repeated round), or gone
            return 0

    async def _rewrite_line(self, tenant_id: str, actor: Actor, line: dict, name: str) -> int:
        """A system line that names the agent, reworded ("Erased agent left the conversation")
        the way an edit goes: its copies in the outbox and (through a `MessageChanged`) in the
        delivery queues and previews follow. 0 when it does not name them (any more)."""
        if without_name(line["body"], name) is None:
            return 0
        conversation_id, seq = line["conversation_id"], line["seq"]

        async def work(tx: Transaction) -> int:
            conv = await self.store.conversation(tenant_id, conversation_id, session=tx.session)
            message = await self.store.message_at(tenant_id, conversation_id, seq, session=tx.session)
            body = without_name(message["body"], name) if conv and message else None
            if body is None:
                return 0
            if not await self.store.change_message(message, {"body": body}, session=tx.session):
                raise StaleConversation(conversation_id)
            changed = {**message, "body": body}
            replacement = message_model(changed).model_dump(mode="json")
            reached = await self.lifecycle.replace_in_outbox(tenant_id, conversation_id, message, replacement,
                                                              False, tx.session)
            order = conv.get("outbox_seq", 0) + 1
            also = {"last_message": changed} if (conv.get("last_message") or {}).get("seq") == seq else {}
            if not await self.store.touch_conversation(conv, order, also, session=tx.session):
                raise StaleConversation(conversation_id)
            tx.publish(MESSAGES, MessageChanged(
                tenant_id=tenant_id, change="reworded", message=message_model(changed), changed_by=actor.agent_id,
                version=message.get("version", 1) + 1, recipients=sorted(set(conv["participants"]) | reached)),
                key=conversation_key(conversation_id), order_key=conversation_id, order=order)
            return 1

        return await self.lifecycle.conversations.retrying(work)

    async def _erase_in_outbox(self, tenant_id: str, order_key: str, agent_id: str) -> int:
        """The agent's name and email out of every outbox record kept under `order_key` (a thread,
        or the agent's own directory changes). Outside a transaction, so each rewrite is a
        compare-and-set on the value it read: a record a redaction or another erasure rewrote in
        between is read again, never written back as it was. A repeat finds nothing to change."""
        rewritten = 0
        for _ in range(OUTBOX_TRIES):
            swaps = []
            for record in await self.store.outbox_since(tenant_id, order_key, EPOCH, None):
                event = json.loads(record["value"])
                if erase_in(event, agent_id):
                    swaps.append((record["_id"], record["value"], redaction.encode(event)))
            if not swaps:
                return rewritten
            matched = await self.store.swap_outbox_values(tenant_id, swaps)
            rewritten += matched
            if matched == len(swaps):
                return rewritten
        raise RuntimeError("outbox records kept changing under the erasure")  # the next round retries


def messages_by(db: AsyncDatabase, tenant_id: str, agent_id: str, since: datetime | None, limit: int):
    """A page of the agent's messages, any thread, by the time they were posted from `since` on
    (ids are random: only the time orders them; the caller skips those at `since` it has done)."""
    query: dict[str, Any] = {"tenant_id": tenant_id, "sender_id": agent_id}
    if since is not None:
        query["created_at"] = {"$gte": since}
    return db["messages"].find(query).sort("created_at", ASCENDING).limit(limit)


async def create_indexes(db: AsyncDatabase) -> None:
    """The erasure walk's index on messages (by sender, in insertion order); the jobs are few."""
    from pymongo import IndexModel

    await db["messages"].create_indexes([
        IndexModel([("tenant_id", ASCENDING), ("sender_id", ASCENDING), ("created_at", ASCENDING)],
                   name="by_sender")])
    await db["erasures"].create_indexes([IndexModel([("status", ASCENDING)], name="running")])

