"""The assistance-request rules: an AssistanceRequested opens (or reuses) the related thread and posts
its message as the requester, once per (tenant, request_id), through the same code path as HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from im_contracts.codec import RejectedRecord
from im_contracts.events import AssistanceRequested
from im_contracts.models import ASSISTANCE_CLIENT_MSG_PREFIX
from im_runtime.logs import log
from im_runtime.mongo import compound_id
from pymongo.errors import DuplicateKeyError

from .errors import ApiError
from .outbox import Transaction
from .service import Conversations, FirstMessage
from .store import Store, now

logger = logging.getLogger("im_api.assistance")


def client_msg_id_for(request_id: str) -> str:
    """Deterministic, so even without the request record a retry is the same send (and bounded:
    request_id may be 200 characters, a client_msg_id 128)."""
    return ASSISTANCE_CLIENT_MSG_PREFIX + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def fingerprint(request: AssistanceRequested) -> str:
    """What makes two deliveries the same request (a hash: the body is never stored twice)."""
    content: list = [request.requested_by, sorted(set(request.agent_ids)), request.related.type, request.related.id,
                     request.message]
    if request.team_ids:  # requests without teams keep the fingerprint they always had
        content.append(sorted(set(request.team_ids)))
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


@dataclass(frozen=True)
class Source:
    """Where the request came from (kept with its record, for operators)."""

    topic: str
    partition: int
    offset: int


@dataclass
class Assistance:
    store: Store
    conversations: Conversations

    async def handle(self, request: AssistanceRequested, source: Source) -> None:
        """Process one request; raise RejectedRecord for what can never succeed (dead-lettered)."""
        tenant_id, request_id = request.tenant_id, request.request_id
        done = await self.store.assistance_request(tenant_id, request_id)
        if done is not None:
            self._duplicate(request, done)
            return
        if not await self.store.has_agents(tenant_id):
            raise RejectedRecord("unknown_tenant", f"tenant {tenant_id} has no agents in the directory", tenant_id)
        named = list(dict.fromkeys([request.requested_by, *request.agent_ids]))
        cap = self.conversations.settings.max_participants
        if len(named) > cap:  # before any read: a request naming thousands costs nothing
            raise RejectedRecord("too_many_participants",
                                 f"a thread holds at most {cap} agents; the request names {len(named)}", tenant_id)
        # Before start's other rules: a request naming an unknown agent is `unknown_agent` whatever
        # else is wrong with it (start checks the body and a thread with oneself first).
        try:
            await self.conversations.require_active(tenant_id, named, named, "agent_ids")
        except ApiError as exc:
            raise RejectedRecord("unknown_agent", exc.message, tenant_id) from None

        record = {"_id": compound_id(tenant_id, request_id), "tenant_id": tenant_id, "request_id": request_id,
                  "fingerprint": fingerprint(request), "requested_by": request.requested_by,
                  "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset}}

        async def remember(tx: Transaction, message: dict) -> None:
            # In the message's own transaction: either both exist or neither (a redelivery re-runs).
            await self.store.record_assistance_request(
                {**record, "conversation_id": message["conversation_id"], "message_id": message["_id"],
                 "created_at": now()}, session=tx.session)

        client_msg_id = client_msg_id_for(request_id)
        try:
            view, created = await self.conversations.start(
                tenant_id, request.requested_by, request.agent_ids, request.related,
                FirstMessage(request.message, client_msg_id), also=remember, team_ids=request.team_ids)
        except ApiError as exc:  # the HTTP rules refused it: the same refusal, as a dead letter
            reason = {"unknown_agents": "unknown_agent", "too_many_participants": "too_many_participants",
                      "record_too_large": "record_too_large", "unknown_team": "unknown_team"}.get(exc.code, "invalid_event")
            raise RejectedRecord(reason, exc.message, tenant_id) from None
        await self._ensure_recorded(record, view["id"], client_msg_id)
        log(logger, logging.INFO, "assistance request processed", tenant_id=tenant_id, request_id=request_id,
            conversation_id=view["id"], thread_created=created, agents=len(request.agent_ids),
            teams=len(request.team_ids))

    async def _ensure_recorded(self, record: dict, conversation_id: str, client_msg_id: str) -> None:
        """Normally written with the message. If the message existed already (its client_msg_id was
        sent before without a record), the send was a replay: record the request now."""
        tenant_id = record["tenant_id"]
        if await self.store.assistance_request(tenant_id, record["request_id"]) is not None:
            return
        found = await self.store.messages_by_client_ids(
            [(tenant_id, conversation_id, record["requested_by"], client_msg_id)])
        message = next(iter(found.values()), None)
        try:
            await self.store.record_assistance_request(
                {**record, "conversation_id": conversation_id, "message_id": message["_id"] if message else None,
                 "created_at": now()})
        except DuplicateKeyError:
            pass  # a concurrent consumer of the same request recorded it

    def _duplicate(self, request: AssistanceRequested, done: dict) -> None:
        if done.get("fingerprint") != fingerprint(request):
            raise RejectedRecord("rejected", f"request_id {request.request_id} was already used for another "
                                 "request (agents, related item or message differ)", request.tenant_id)
        log(logger, logging.INFO, "assistance request already processed", tenant_id=request.tenant_id,
            request_id=request.request_id, conversation_id=done.get("conversation_id"))
