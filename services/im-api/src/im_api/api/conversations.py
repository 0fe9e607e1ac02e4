"""HTTP: conversations, their messages, participants and read markers."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from im_contracts.models import Related

from ..errors import NotFound
from ..service import FirstMessage
from .deps import ConversationsDep, CurrentPrincipal, Sender, ServicesDep, audit_admin_read
from .schemas import (
    Conversation,
    ConversationPage,
    ConversationStart,
    Message,
    MessagePage,
    MessagePost,
    ParticipantsAdd,
    ReadMarker,
    ReadMarkerMove,
    errors_doc,
)

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
_ID = re.compile(r"^[0-9a-f]{32}$")
ConversationPath = Annotated[str, Path(max_length=200, description="A conversation id.")]


def known_shape(conversation_id: str) -> str:
    """An id this server could not have made cannot exist: 404 like any unknown id."""
    if not _ID.match(conversation_id):
        raise NotFound("no such conversation", field="conversation_id")
    return conversation_id


@router.post("", response_model=Conversation, status_code=201,
             summary="Start an IM (or get the thread this set of agents already started: 200)",
             responses={200: {"model": Conversation, "description": "The existing thread"},
                        **errors_doc(400, 401, 409, 413, 422, 429)})
async def start_conversation(body: ConversationStart, principal: Sender, response: Response,
                             conversations: ConversationsDep) -> dict:
    first = body.first_message
    view, created = await conversations.start(
        principal.tenant_id, principal.agent_id, body.participant_ids,
        Related.model_validate(body.related.model_dump()) if body.related else None,
        FirstMessage(first.body, first.client_msg_id) if first else None, team_ids=body.team_ids)
    response.status_code = 201 if created else 200
    return view


@router.get("", response_model=ConversationPage, summary="The caller's threads, most recent first",
            responses=errors_doc(400, 401, 422))
async def list_conversations(
    principal: CurrentPrincipal, conversations: ConversationsDep, svc: ServicesDep,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict:
    return await conversations.threads(principal.tenant_id, principal.agent_id,
                                       limit or svc.settings.default_page_size, cursor)


@router.get("/{conversation_id}", response_model=Conversation, summary="One conversation",
            responses=errors_doc(401, 404))
async def get_conversation(conversation_id: ConversationPath, principal: CurrentPrincipal,
                           conversations: ConversationsDep, svc: ServicesDep) -> dict:
    """A tenant admin may read any thread of the tenant; outside their own, the read (its last
    message is a body) is audited (`conversation.read`)."""
    view = await conversations.view(principal.tenant_id, principal.agent_id, known_shape(conversation_id),
                                    admin=principal.role == "admin")
    if principal.role == "admin" and principal.agent_id not in {p["id"] for p in view["participants"]}:
        await audit_admin_read(svc, principal, "conversation.read",
                               {"type": "conversation", "conversation_id": view["id"]})
    return view


@router.get("/{conversation_id}/messages", response_model=MessagePage,
            summary="History, ascending by seq (default: the newest 50)", responses=errors_doc(401, 404, 422))
async def history(
    conversation_id: ConversationPath, principal: CurrentPrincipal, conversations: ConversationsDep,
    svc: ServicesDep,
    before_seq: Annotated[int | None, Query(ge=1, le=2**53)] = None,
    after_seq: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> dict:
    items = await conversations.history(principal.tenant_id, principal.agent_id, known_shape(conversation_id),
                                        before_seq, after_seq, limit or svc.settings.default_page_size)
    return {"items": items}


@router.post("/{conversation_id}/messages", response_model=Message, status_code=201, summary="Post a message",
             responses={200: {"model": Message, "description": "A retry: the original message"},
                        **errors_doc(400, 401, 404, 409, 413, 422, 429)})
async def post_message(conversation_id: ConversationPath, body: MessagePost, principal: Sender,
                       response: Response, conversations: ConversationsDep) -> dict:
    message, created = await conversations.post(principal.tenant_id, principal.agent_id,
                                                 known_shape(conversation_id), body.body, body.client_msg_id)
    response.status_code = 201 if created else 200
    return message


@router.post("/{conversation_id}/participants", response_model=Conversation, summary="Add agents",
             responses=errors_doc(400, 401, 404, 413, 422))
async def add_participants(conversation_id: ConversationPath, body: ParticipantsAdd, principal: CurrentPrincipal,
                           conversations: ConversationsDep) -> dict:
    return await conversations.add_participants(principal.tenant_id, principal.agent_id,
                                                known_shape(conversation_id), body.agent_ids)


@router.delete("/{conversation_id}/participants/me", status_code=204, summary="Leave the conversation",
               responses=errors_doc(401, 404))
async def leave(conversation_id: ConversationPath, principal: CurrentPrincipal,
                conversations: ConversationsDep) -> Response:
    await conversations.leave(principal.tenant_id, principal.agent_id, known_shape(conversation_id))
    return Response(status_code=204)


@router.post("/{conversation_id}/read", response_model=ReadMarker, summary="Move the read marker forward",
             responses=errors_doc(400, 401, 404, 413, 422))
async def mark_read(conversation_id: ConversationPath, body: ReadMarkerMove, principal: CurrentPrincipal,
                    conversations: ConversationsDep) -> dict:
    return await conversations.mark_read(principal.tenant_id, principal.agent_id, known_shape(conversation_id),
                                         body.seq)


@router.post("/{conversation_id}/claim", response_model=Conversation,
             summary="Take a team request offered to you: you join the thread (one claim wins)",
             responses=errors_doc(401, 404, 409, 429))
async def claim(conversation_id: ConversationPath, principal: Sender, svc: ServicesDep) -> dict:
    """409 `already_claimed` when someone else took it first: `details.claimed_by` names them.
    Claiming one's own claim again answers 200 and changes nothing."""
    return await svc.team_requests.claim(principal.tenant_id, principal.agent_id, known_shape(conversation_id))


@router.post("/{conversation_id}/release", response_model=Conversation,
             summary="Give a taken team request back to its teams (the asker, or the member who took it)",
             responses=errors_doc(401, 403, 404, 409, 429))
async def release(conversation_id: ConversationPath, principal: Sender, svc: ServicesDep) -> dict:
    """The member who took it leaves the thread; it is offered again and its timeout restarts.
    409 `not_claimed` when nobody holds it."""
    return await svc.team_requests.release(principal.tenant_id, principal.agent_id, known_shape(conversation_id))
