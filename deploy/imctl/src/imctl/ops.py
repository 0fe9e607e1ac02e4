"""Operator commands that touch the product's data: `migrate` (every service's indexes), and the
audited reading of message bodies (`tail`, `dead-letters --bodies`, `export`): an admin token of
the tenant is verified and an audit record written BEFORE anything is shown."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ContextManager

from aiokafka import AIOKafkaConsumer, TopicPartition
from im_contracts.codec import RejectedRecord, decode_record
from im_contracts.events import MessagePosted
from im_contracts.topics import MESSAGES
from im_runtime.auth import AuthError, Principal, TokenVerifier
from im_runtime.settings import CommonSettings
from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from .topics import kafka_options

from .kafka_tools import topic_partitions
from .text import json_escaped, printable

# imctl's own collection: who read which tenant's bodies, when, and how.
AUDIT = "operator_audit"


class Refused(Exception):
    """The operator may not do this (the message says why); nothing was shown."""


def _client(uri: str) -> AsyncMongoClient:
    return AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5_000)


async def migrate(uri: str, db_name: str, progress: Callable[[str], None]) -> list[str]:
    """Creates every index of every service (idempotent; the same code each service runs at start)."""
    from im_api.store import Store
    from im_delivery.store import QueueStore
    from im_delivery.worker.projections import Projections
    from im_api.notifications import Notifications, WebhookPolicy
    from im_api.lifecycle import create_indexes as lifecycle_indexes
    from im_api.retention import create_indexes as retention_indexes
    from im_api.teams import Teams
    from im_notifier.store import NotifierStore
    from im_presence.store import PresenceStore

    client = _client(uri)
    try:
        db = client[db_name]
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("im-api: agents, conversations, messages, outbox, assistance requests",
             lambda: Store(db, outbox_retention_s=7 * 24 * 3600).create_indexes()),
            ("delivery: queues, heads, devices, connections, tickets", lambda: QueueStore(db).ensure_indexes()),
            ("delivery: worker projections", lambda: Projections(db).ensure_indexes()),
            ("im-api: notification preferences",
             lambda: Notifications(db, WebhookPolicy(allow_http=False, allowed=[])).create_indexes()),
            ("im-api: teams", lambda: Teams(db, Store(db, outbox_retention_s=7 * 24 * 3600), lambda t, a: "offline",
                                           members_max=1, teams_max=1).create_indexes()),
            ("presence: agents, gateways", lambda: PresenceStore(db).ensure_indexes()),
            ("notifier: agents by due time", lambda: NotifierStore(db).ensure_indexes()),
            ("imctl: operator audit", lambda: db[AUDIT].create_indexes([
                IndexModel([("tenant_id", ASCENDING), ("at", ASCENDING)], name="by_tenant_time")])),
            ("im-api: message versions, audit log, erasures", lambda: lifecycle_indexes(db)),
            ("im-api: retention (messages by age, versions by message, sent outbox by tenant)",
             lambda: retention_indexes(db)),
        ]
        done = []
        for i, (what, step) in enumerate(steps, 1):
            progress(f"[{i}/{len(steps)}] {what} ...")
            await step()
            done.append(what)
        names = {name: sorted((await db[name].index_information()).keys())
                 for name in sorted(await db.list_collection_names())}
        for name, indexes in names.items():
            progress(f"  {name}: {', '.join(indexes)}")
        return done
    finally:
        await client.close()


@dataclass(frozen=True)
class Access:
    principal: Principal
    audit_id: Any


async def authorize(token: str, tenant: str) -> Principal:
    """An admin token of `tenant` (verified with IM_JWT_SECRET or IM_JWKS_URL), else Refused."""
    settings = CommonSettings()
    try:
        verifier = TokenVerifier(settings)
        await verifier.start()  # with IM_JWKS_URL: the key set, fetched before the token is read
        principal = verifier.verify(token)
    except (AuthError, SystemExit) as exc:
        raise Refused(f"the token was not accepted: {exc}") from None
    if principal.role != "admin" or principal.tenant_id != tenant:
        raise Refused(f"an admin token of tenant {tenant!r} is required (got role {principal.role!r} "
                      f"of tenant {principal.tenant_id!r})")
    return principal


async def record_access(db: AsyncDatabase, principal: Principal, tenant: str, action: str,
                        details: dict[str, Any]) -> Any:
    """imctl's own audit record (`operator_audit`); its id. Refused when it cannot be written."""
    try:
        record = {"tenant_id": tenant, "at": datetime.now(UTC), "actor": principal.subject, "role": principal.role,
                  "action": action, "details": details, "host": socket.gethostname(), "pid": os.getpid()}
        return (await db[AUDIT].insert_one(record)).inserted_id
    except Exception as exc:  # noqa: BLE001 - no audit record, no access
        raise Refused(f"could not write the audit record ({type(exc).__name__}): nothing shown") from None


async def authorize_and_audit(token: str, tenant: str, action: str, details: dict[str, Any],
                              uri: str, db_name: str) -> Access:
    """An admin token of `tenant`, then the audit record; refused when either fails — bodies are
    never shown without a record that they were."""
    principal = await authorize(token, tenant)
    client = _client(uri)
    try:
        audit_id = await record_access(client[db_name], principal, tenant, action, details)
    finally:
        await client.close()
    return Access(principal, audit_id)


async def audit_records(uri: str, db_name: str, tenant: str, action: str | None, limit: int) -> list[dict[str, Any]]:
    """The tenant's audit records, newest first: im-api's (`audit_log`: edits, deletions, admin
    reads, settings, exports) and imctl's own (`operator_audit`: tail, dead letters with bodies,
    export, audit)."""
    client = _client(uri)
    try:
        db = client[db_name]
        query: dict[str, Any] = {"tenant_id": tenant, **({"action": action} if action else {})}
        found = []
        # Each on its own index: im-api's log newest first by id (ObjectIds start with their time).
        for source, name, order in (("im-api", "audit_log", "_id"), ("imctl", AUDIT, "at")):
            rows = await db[name].find(query).sort(order, -1).limit(limit).to_list()
            found += [{"source": source, "at": r["at"], "actor": r.get("actor"), "role": r.get("role"),
                       "action": r["action"], "target": r.get("target") or {}, "request_id": r.get("request_id"),
                       "details": r.get("details") or {}} for r in rows]
        return sorted(found, key=lambda r: r["at"], reverse=True)[:limit]
    finally:
        await client.close()


class Unknown(Exception):
    """What the operator named does not exist in the tenant (nothing shown, nothing recorded)."""


@dataclass(frozen=True)
class Exported:
    access: Access
    conversations: int
    messages: int


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A file that appears whole or not at all: written beside `path` under a temporary name (mode
    0600: an export holds message bodies), synced, then renamed over `path`; on any failure,
    Ctrl-C included, the temporary file is removed and `path` left as it was."""
    target = Path(path)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


async def export(token: str, tenant: str, uri: str, db_name: str, sink: Callable[[], ContextManager[BinaryIO]], *,
                 conversation: str | None = None, start: datetime | None = None, end: datetime | None = None,
                 out: str = "-") -> Exported:
    """A thread (`conversation`) or the tenant's threads with messages posted in [start, end), as
    im-api exports them over HTTP: the same JSON lines from the same generators, written to
    `sink()` line by line as they are read (one page of 500 messages in memory at a time); the
    control and format characters of a body written as JSON escapes (the same documents).

    The admin token first; then, for a thread, that it exists; then two audit records — imctl's
    (`operator_audit`, action `export`) and im-api's (`audit_log`, `export.conversation` or
    `export.range`, as the HTTP export writes, detail `via: imctl`) — and only then is `sink`
    opened. Refused, or Unknown, before anything is written or recorded."""
    from im_api.lifecycle import Actor, Audit, export_between, export_conversation
    from im_contracts.models import to_rfc3339

    if conversation is None and (start is None or end is None or end <= start):
        raise ValueError("a conversation, or a start before an end")
    principal = await authorize(token, tenant)
    client = _client(uri)
    try:
        db = client[db_name]
        if conversation is not None:
            if await db["conversations"].find_one({"_id": conversation, "tenant_id": tenant}, {"_id": 1}) is None:
                raise Unknown(f"no conversation {printable(conversation)!r} in tenant {printable(tenant)!r}: "
                              "nothing exported")
            action, target = "export.conversation", {"type": "conversation", "conversation_id": conversation}
            details: dict[str, Any] = {"conversation": conversation}
            lines = export_conversation(db, tenant, conversation)
        else:
            assert start is not None and end is not None
            action, target = "export.range", {"type": "tenant", "from": to_rfc3339(start), "to": to_rfc3339(end)}
            details = {"from": target["from"], "to": target["to"]}
            lines = export_between(db, tenant, start, end)
        audit_id = await record_access(db, principal, tenant, "export", {**details, "out": out})
        try:
            await Audit(db).record(tenant, Actor(principal.subject, principal.role), action, target,
                                   {"via": "imctl", "operator_audit_id": str(audit_id), "host": socket.gethostname()})
        except Exception as exc:  # noqa: BLE001 - no audit record, no export
            raise Refused(f"could not write im-api's audit record ({type(exc).__name__}): nothing exported") from None
        conversations = messages = 0
        with sink() as f:
            async for line in lines:
                f.write(json_escaped(line))  # a body cannot drive the terminal it is shown on
                if line.startswith(b'{"type": "conversation"'):
                    conversations += 1
                else:
                    messages += 1
        return Exported(Access(principal, audit_id), conversations, messages)
    finally:
        await client.close()


def describe_message(event: MessagePosted) -> str:
    m = event.message
    return (f"{m.created_at:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z" +
            f" {printable(m.conversation_id)} #{m.seq} {printable(m.sender_id)}: {printable(m.body)}")


async def tail(bootstrap: str, prefix: str, tenant: str, on_message: Callable[[MessagePosted], None], *,
               conversation: str | None = None, from_beginning: bool = False, follow: bool = True,
               limit: int | None = None, idle_timeout_s: float = 1.0) -> int:
    """Follows `tenant`'s messages on im.messages.v1 (no consumer group: reads every partition,
    commits nothing). From the end by default; `follow=False` stops at the end as it stood."""
    topic = MESSAGES.name(prefix)
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False, group_id=None)
    await consumer.start()
    shown = 0
    try:
        partitions = await topic_partitions(bootstrap, topic)
        if not partitions:
            raise Refused(f"topic {topic} does not exist (imctl topics create)")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        end = await consumer.end_offsets(tps)
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout_s * 1000))
            for records in batch.values():
                for record in records:
                    try:
                        event = decode_record(MESSAGES, record.value)
                    except RejectedRecord:
                        continue  # the consumers dead-letter it; a tail only shows messages
                    if not isinstance(event, MessagePosted) or event.tenant_id != tenant:
                        continue
                    if conversation and event.message.conversation_id != conversation:
                        continue
                    on_message(event)
                    shown += 1
                    if limit is not None and shown >= limit:
                        return shown
            if not follow and all([await consumer.position(tp) >= offset for tp, offset in end.items()]):
                return shown
    finally:
        await consumer.stop()
