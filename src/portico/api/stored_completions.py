"""Stored chat completions (made with `store: true`): retrieve, list, messages, update metadata, delete.

OpenAI's paths and shapes, so the openai SDK's ``chat.completions.retrieve/list/update/delete`` and
``chat.completions.messages.list`` work. They need the ``inference`` scope, like creating them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from portico.api.deps import PrincipalDep, StoredCompletionsDep, require_json, require_scope
from portico.api.rendering import error_responses, json_response
from portico.constants import Scope
from portico.schemas.stored_completions import (
    StoredChatCompletion,
    StoredCompletionDeleted,
    StoredCompletionList,
    StoredCompletionUpdateRequest,
    StoredMessageList,
)
from portico.services.stored_completions import stored_view

router = APIRouter(
    prefix="/v1/chat/completions",
    tags=["chat"],
    dependencies=[require_scope(Scope.INFERENCE)],
    responses=error_responses(401, 403, 404),
)
Limit = Annotated[int, Query(ge=1, le=100)]
SortOrder = Annotated[Literal["asc", "desc"], Query(description="By creation: `asc` (oldest first) or `desc`.")]
_METADATA_FILTER = re.compile(r"^metadata\[(.+)\]$")


@router.get("", response_model=StoredCompletionList)
async def list_stored_completions(
    request: Request,
    stored: StoredCompletionsDep,
    principal: PrincipalDep,
    model: str | None = None,
    limit: Limit = 20,
    after: str | None = None,
    order: SortOrder = "asc",
) -> Response:
    """Filter by `model` (alias or snapshot) and by metadata pairs: `?metadata[topic]=billing&metadata[k]=v`."""
    metadata = {
        match.group(1): value
        for name, value in request.query_params.multi_items()
        if (match := _METADATA_FILTER.match(name)) is not None
    }
    page = await stored.list_completions(
        principal, model=model, metadata=metadata, limit=limit, after=after, order=order
    )
    return json_response(StoredCompletionList.of([stored_view(row) for row in page.items], has_more=page.has_more))


@router.get("/{completion_id}", response_model=StoredChatCompletion)
async def get_stored_completion(completion_id: str, stored: StoredCompletionsDep, principal: PrincipalDep) -> Response:
    return json_response(stored_view(await stored.get(principal, completion_id)))


@router.get("/{completion_id}/messages", response_model=StoredMessageList)
async def list_stored_messages(
    completion_id: str,
    stored: StoredCompletionsDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    after: str | None = None,
    order: SortOrder = "asc",
) -> Response:
    """The messages of the stored request; `after` takes a message id (`<completion id>-<index>`)."""
    page = await stored.messages(principal, completion_id, limit=limit, after=after, order=order)
    return json_response(StoredMessageList.of(page.items, has_more=page.has_more))


@router.post("/{completion_id}", response_model=StoredChatCompletion, dependencies=[Depends(require_json)])
async def update_stored_completion(
    completion_id: str, body: StoredCompletionUpdateRequest, stored: StoredCompletionsDep, principal: PrincipalDep
) -> Response:
    """Replace the metadata (the only field that can change), as OpenAI does. PATCH does the same."""
    return json_response(stored_view(await stored.update(principal, completion_id, body.metadata)))


router.add_api_route(
    "/{completion_id}",
    update_stored_completion,
    methods=["PATCH"],
    response_model=StoredChatCompletion,
    dependencies=[Depends(require_json)],
    name="patch_stored_completion",
)


@router.delete("/{completion_id}", response_model=StoredCompletionDeleted)
async def delete_stored_completion(
    completion_id: str, stored: StoredCompletionsDep, principal: PrincipalDep
) -> Response:
    await stored.delete(principal, completion_id)
    return json_response(StoredCompletionDeleted(id=completion_id))
