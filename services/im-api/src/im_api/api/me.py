"""HTTP: the caller's own things — the unread badge, related lookup and stream tickets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path

from .deps import ConversationsDep, CurrentPrincipal, ServicesDep, TicketMinter, audit_admin_read
from .schemas import RelatedConversations, Ticket, TicketRequest, Unread, errors_doc

router = APIRouter(tags=["me"])


@router.get("/v1/me/unread", response_model=Unread, summary="The unread badge", responses=errors_doc(401))
async def unread(principal: CurrentPrincipal, conversations: ConversationsDep) -> dict:
    return await conversations.unread(principal.tenant_id, principal.agent_id)


@router.get("/v1/related/{related_type}/{related_id}/conversations", response_model=RelatedConversations,
            summary="Threads about a ticket or chat (admins: all of the tenant's)", responses=errors_doc(401, 422))
async def related(related_type: Literal["ticket", "chat"],
                  related_id: Annotated[str, Path(min_length=1, max_length=200)],
                  principal: CurrentPrincipal, conversations: ConversationsDep, svc: ServicesDep) -> dict:
    """Admins get every thread of the tenant about it, with their last messages: that read is
    audited (`related.read`)."""
    items = await conversations.related(principal.tenant_id, principal.agent_id, principal.role == "admin",
                                        related_type, related_id, svc.settings.max_page_size)
    if principal.role == "admin" and items:
        await audit_admin_read(svc, principal, "related.read", {"type": related_type, "id": related_id},
                               {"conversations": len(items)})
    return {"items": items}


@router.post("/v1/stream/tickets", response_model=Ticket, status_code=201,
             summary="A single-use ticket for one WebSocket connect", responses=errors_doc(400, 401, 413, 422, 429))
async def stream_ticket(body: TicketRequest, principal: TicketMinter, svc: ServicesDep) -> dict:
    token, ticket = svc.verifier.mint_ticket(principal, body.device_id, svc.settings.ticket_ttl_s)
    return {"ticket": token, "url": f"{svc.settings.stream_public_url}?ticket={quote(token)}",
            "expires_at": datetime.fromtimestamp(ticket.expires_at, UTC)}
