"""HTTP: editing, deleting and redacting messages, what tenant admins may read of their past (earlier
versions, the audit log) and the tenant's message settings."""

from __future__ import annotations

from typing import Annotated

from datetime import datetime

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from ..errors import Unprocessable
from .conversations import ConversationPath, known_shape
from .deps import Sender, ServicesDep, actor, with_role
from .agents import AgentPath
from .schemas import (AuditPage, Erasure, ErasureRequest, Message, MessageEdit, MessageRedaction, MessageSettings,
                      MessageSettingsBody, MessageVersions, errors_doc)

router = APIRouter(tags=["message lifecycle"])
SeqPath = Annotated[int, Path(ge=1, le=2**53, description="The message's seq in its conversation.")]


TenantAdmin = with_role(("admin",), "only tenant admins read this")


@router.patch("/v1/conversations/{conversation_id}/messages/{seq}", response_model=Message,
              summary="Edit one's own message within the tenant's window",
              responses=errors_doc(400, 401, 403, 404, 409, 413, 422, 429))
async def edit_message(conversation_id: ConversationPath, seq: SeqPath, body: MessageEdit, principal: Sender,
                       svc: ServicesDep) -> dict:
    """403 `edit_window_passed` after the window (`GET /v1/admin/message-settings`), 403
    `not_author` for someone else's; participants get a `message.updated` frame."""
    return await svc.lifecycle.edit(principal.tenant_id, actor(principal), known_shape(conversation_id), seq, body.body)


@router.delete("/v1/conversations/{conversation_id}/messages/{seq}", response_model=Message,
               summary="Delete a message: its author within the window, a tenant admin any time",
               responses=errors_doc(401, 403, 404, 409, 429))
async def delete_message(conversation_id: ConversationPath, seq: SeqPath, principal: Sender,
                         svc: ServicesDep) -> dict:
    """The message becomes a tombstone everywhere (history, the thread's preview, frames); its
    last body stays among its versions, for admins, until it is redacted."""
    return await svc.lifecycle.delete(principal.tenant_id, actor(principal), known_shape(conversation_id), seq)


@router.post("/v1/admin/conversations/{conversation_id}/messages/{seq}/redact", response_model=Message,
             summary="Redact a message: its body goes from everywhere the product keeps it (tenant admins)",
             responses=errors_doc(400, 401, 403, 404, 409, 422))
async def redact_message(conversation_id: ConversationPath, seq: SeqPath, body: MessageRedaction,
                         principal: TenantAdmin, svc: ServicesDep) -> dict:
    """For text pasted by mistake: the message becomes a tombstone (`deleted_at`, `redacted_at`)
    and its body is removed from its earlier versions, the thread's preview and team question, the
    outbox, every agent's delivery queue (former participants' too) and the notifier's previews.
    The audit log keeps who, when and `reason`. Kafka keeps the records already published until
    the topics' retention (README, "Redaction"). 409 `redacted` when it was redacted already; 403
    `system_message` for a system line."""
    return await svc.lifecycle.redact(principal.tenant_id, actor(principal), known_shape(conversation_id), seq,
                                      body.reason.strip())


@router.post("/v1/admin/agents/{agent_id}/erase", response_model=Erasure, status_code=202,
             summary="Erase an agent's personal data (tenant admins)", responses=errors_doc(400, 401, 403, 404, 409, 422))
async def erase_agent(agent_id: AgentPath, body: ErasureRequest, principal: TenantAdmin, svc: ServicesDep) -> dict:
    """At once, in one transaction with the audit record (`agent.erase`): the directory entry's
    display name becomes "Erased agent", its email goes, the agent is deactivated (its tokens stop
    working), and `AgentChanged` carries that to delivery and the notifier. Then in the
    background (`GET .../erasure`): each of their messages is kept or redacted (`messages`), the
    system lines naming them are reworded, and the outbox records naming them rewritten; a record
    `agent.erase.finished` closes it. 409 `erased` when it was erased already (an upsert of the
    agent afterwards makes a new entry); 422 `cannot_erase_self`."""
    return await svc.erasures.erase(principal.tenant_id, actor(principal), agent_id, body.messages,
                                    body.reason.strip())


@router.get("/v1/admin/agents/{agent_id}/erasure", response_model=Erasure,
            summary="How an agent's erasure is going (tenant admins)", responses=errors_doc(401, 403, 404))
async def erasure_status(agent_id: AgentPath, principal: TenantAdmin, svc: ServicesDep) -> dict:
    return await svc.erasures.status(principal.tenant_id, agent_id)


@router.get("/v1/admin/conversations/{conversation_id}/messages/{seq}/versions", response_model=MessageVersions,
            summary="A message's earlier bodies (tenant admins; the read is audited)", responses=errors_doc(401, 403, 404))
async def message_versions(conversation_id: ConversationPath, seq: SeqPath, principal: TenantAdmin,
                           svc: ServicesDep) -> dict:
    return await svc.lifecycle.versions(principal.tenant_id, actor(principal), known_shape(conversation_id), seq)


@router.get("/v1/admin/audit", response_model=AuditPage, summary="The tenant's audit log, newest first (admins)",
            responses=errors_doc(400, 401, 403, 422))
async def audit_log(principal: TenantAdmin, svc: ServicesDep,
                    action: Annotated[str | None, Query(max_length=64)] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: Annotated[str | None, Query(max_length=64)] = None) -> dict:
    return await svc.lifecycle.audit.page(principal.tenant_id, action, limit, cursor)


@router.get("/v1/admin/message-settings", response_model=MessageSettings, summary="The tenant's message settings (admins)",
            responses=errors_doc(401, 403))
async def get_message_settings(principal: TenantAdmin, svc: ServicesDep) -> dict:
    return await svc.lifecycle.settings(principal.tenant_id)


@router.put("/v1/admin/message-settings", response_model=MessageSettings,
            summary="Change the tenant's message settings (admins; audited)", responses=errors_doc(400, 401, 403, 422))
async def put_message_settings(body: MessageSettingsBody, principal: TenantAdmin, svc: ServicesDep) -> dict:
    """The settings given change, the others keep their value; the audit record
    (`settings.change`) holds each given one's value before and after. `retention_days` starts
    the deletion of older messages within a round of the retention job (`IM_API_RETENTION_INTERVAL_S`)."""
    return await svc.lifecycle.replace_settings(principal.tenant_id, actor(principal),
                                                body.model_dump(exclude_unset=True))


NDJSON = "application/x-ndjson"
EXPORT_DOC = {200: {"content": {NDJSON: {"schema": {"type": "string"}}}, "description": (
    "JSON lines: a `{\"type\": \"conversation\", ...}` line, then its `{\"type\": \"message\", ...}` lines "
    "in seq order (the API's Message), for each thread; streamed as it is read.")}}


@router.get("/v1/admin/conversations/{conversation_id}/export", response_class=StreamingResponse,
            summary="Export a thread as JSON lines (tenant admins; audited)",
            responses={**EXPORT_DOC, **errors_doc(401, 403, 404)})
async def export_conversation(conversation_id: ConversationPath, principal: TenantAdmin,
                              svc: ServicesDep) -> StreamingResponse:
    lines = await svc.lifecycle.export_one(principal.tenant_id, actor(principal), known_shape(conversation_id))
    return StreamingResponse(lines, media_type=NDJSON)


@router.get("/v1/admin/export", response_class=StreamingResponse,
            summary="Export the tenant's threads with messages posted between two times, as JSON lines (admins; audited)",
            responses={**EXPORT_DOC, **errors_doc(401, 403, 422)})
async def export_range(principal: TenantAdmin, svc: ServicesDep,
                       start: Annotated[datetime, Query(alias="from", description="RFC 3339, inclusive.")],
                       end: Annotated[datetime, Query(alias="to", description="RFC 3339, exclusive.")]
                       ) -> StreamingResponse:
    if start.tzinfo is None or end.tzinfo is None:
        raise Unprocessable("times need a zone (RFC 3339, e.g. 2026-11-27T00:00:00Z)", code="invalid_time",
                            field="from" if start.tzinfo is None else "to")
    lines = await svc.lifecycle.export_range(principal.tenant_id, actor(principal), start, end)
    return StreamingResponse(lines, media_type=NDJSON)
