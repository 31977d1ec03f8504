"""/v1/conversations: create, read, list and delete conversations; post a message and get the answer (or its
stream); read the history. Writes need conversations:write, reads conversations:read."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from portico.api.deps import ConversationsDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.rendering import (
    GENERATION_ERRORS,
    STREAM_DOC,
    error_responses,
    generation_stream,
    json_response,
    metered_headers,
)
from portico.constants import Scope
from portico.schemas.conversations import (
    ConversationCreateRequest,
    ConversationDeleted,
    ConversationList,
    ConversationObject,
    MessageCreateRequest,
    MessageList,
    TurnObject,
)
from portico.services.conversation_views import conversation_view, message_view, turn_view

router = APIRouter(prefix="/v1/conversations", tags=["conversations"], responses=error_responses(401, 403, 404))
READ = [require_scope(Scope.CONVERSATIONS_READ)]
WRITE = [require_scope(Scope.CONVERSATIONS_WRITE)]
WRITE_JSON = [*WRITE, Depends(require_json)]
Limit = Annotated[int, Query(ge=1, le=100)]
SortOrder = Annotated[Literal["asc", "desc"], Query(description="By creation: `asc` (oldest first) or `desc`.")]


@router.post("", response_model=ConversationObject, status_code=201, dependencies=WRITE_JSON)
async def create_conversation(
    body: ConversationCreateRequest, conversations: ConversationsDep, principal: PrincipalDep
) -> Response:
    return json_response(conversation_view(await conversations.create(principal, body)), status_code=201)


@router.get("", response_model=ConversationList, dependencies=READ)
async def list_conversations(
    conversations: ConversationsDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    after: str | None = None,
    order: SortOrder = "asc",
) -> Response:
    page = await conversations.list_conversations(principal, limit=limit, after=after, order=order)
    return json_response(ConversationList.of([conversation_view(row) for row in page.items], has_more=page.has_more))


@router.get("/{conversation_id}", response_model=ConversationObject, dependencies=READ)
async def get_conversation(conversation_id: str, conversations: ConversationsDep, principal: PrincipalDep) -> Response:
    """The conversation with its token and cost totals (every turn and summary so far)."""
    return json_response(conversation_view(await conversations.get(principal, conversation_id)))


@router.delete("/{conversation_id}", response_model=ConversationDeleted, dependencies=WRITE)
async def delete_conversation(
    conversation_id: str, conversations: ConversationsDep, principal: PrincipalDep
) -> Response:
    await conversations.delete(principal, conversation_id)
    return json_response(ConversationDeleted(id=conversation_id))


@router.get("/{conversation_id}/messages", response_model=MessageList, dependencies=READ)
async def list_messages(
    conversation_id: str,
    conversations: ConversationsDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    after: str | None = None,
    order: SortOrder = "asc",
) -> Response:
    """The whole history, oldest first, including messages no longer in the model's context (`in_context`)."""
    page = await conversations.list_messages(principal, conversation_id, limit=limit, after=after, order=order)
    return json_response(MessageList.of([message_view(row) for row in page.items], has_more=page.has_more))


@router.post(
    "/{conversation_id}/messages",
    response_model=TurnObject,
    dependencies=WRITE_JSON,
    responses={**GENERATION_ERRORS, **error_responses(409), 200: {"content": STREAM_DOC}},
)
async def post_message(
    conversation_id: str,
    body: MessageCreateRequest,
    request: Request,
    conversations: ConversationsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Response:
    """Append the user message, generate the answer and store both. With `stream: true`: chat completion chunks
    (id: the answer's message id), the last one with `usage`, the message ids and `context`, then `[DONE]`."""
    if not body.stream:
        turn = await cancel_on_disconnect(request, conversations.post(principal, conversation_id, body))
        return json_response(turn_view(turn), headers=metered_headers(turn.charge))
    opened = await cancel_on_disconnect(request, conversations.open_turn(principal, conversation_id, body))
    assert opened.streamed is not None
    chunks = conversations.chunks(opened)
    return generation_stream(
        opened.streamed, settings.heartbeat_interval_s, chunks, on_close=lambda: conversations.close_unstarted(opened)
    )
