"""OpenAI's Responses API: POST /v1/responses (sync, streamed as typed events, or in the background), and a
stored response's retrieve, delete, cancel and input items. docs/responses.md has the details."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep, SemanticCacheDep
from portico.api.deps import PrincipalDep, ResponsesDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.rendering import (
    GENERATION_ERRORS,
    RESPONSE_STREAM_DOC,
    error_responses,
    generated_response,
    json_response,
    typed_event_stream,
)
from portico.constants import Scope
from portico.schemas.responses import DeletedResponse, InputItemList, ResponseCreateRequest, ResponseObject
from portico.services.generation.types import ENDPOINT_RESPONSES

router = APIRouter(tags=["responses"], dependencies=[require_scope(Scope.INFERENCE)])


@router.post(
    ENDPOINT_RESPONSES,
    response_model=ResponseObject,
    responses={**GENERATION_ERRORS, 200: {"content": RESPONSE_STREAM_DOC}},
    dependencies=[Depends(require_json)],
)
async def create_response(
    body: ResponseCreateRequest,
    request: Request,
    responses: ResponsesDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cache: CacheModeDep,
    semantic: SemanticCacheDep,
) -> Response:
    """With `background: true` the response is queued as a job and answered at once (`status: "queued"`);
    with `stream: true` too, its events stream as it runs (resumable with GET ...?stream=true&starting_after=N)."""
    heartbeat_s = settings.heartbeat_interval_s
    if body.background:
        queued = await responses.create_background(principal, body)
        if not body.stream:
            return json_response(queued)
        return typed_event_stream(
            await responses.replay(principal, queued.id, starting_after=-1, heartbeat_s=heartbeat_s), heartbeat_s
        )
    if body.stream:
        return typed_event_stream(await responses.stream(principal, body), heartbeat_s)
    work = responses.create(principal, body, cache=cache, semantic=semantic)
    return generated_response(await cancel_on_disconnect(request, work))


@router.get(
    f"{ENDPOINT_RESPONSES}/{{response_id}}",
    response_model=ResponseObject,
    responses={**error_responses(400, 401, 403, 404), 200: {"content": RESPONSE_STREAM_DOC}},
)
async def get_response(
    response_id: str,
    responses: ResponsesDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1, description="With `stream=true`: resume after this event.")] = -1,
    include: Annotated[list[str] | None, Query(alias="include[]")] = None,
) -> Response:
    """The response as it stands; a background one also as its event stream (`stream=true`), from the event
    after sequence number `starting_after`."""
    if stream:
        typed = await responses.replay(
            principal, response_id, starting_after=starting_after, heartbeat_s=settings.heartbeat_interval_s
        )
        return typed_event_stream(typed, settings.heartbeat_interval_s)
    return json_response(await responses.get(principal, response_id))


@router.delete(
    f"{ENDPOINT_RESPONSES}/{{response_id}}", response_model=DeletedResponse, responses=error_responses(401, 403, 404)
)
async def delete_response(response_id: str, responses: ResponsesDep, principal: PrincipalDep) -> Response:
    await responses.delete(principal, response_id)
    return json_response(DeletedResponse(id=response_id))


@router.post(
    f"{ENDPOINT_RESPONSES}/{{response_id}}/cancel",
    response_model=ResponseObject,
    responses=error_responses(400, 401, 403, 404),
)
async def cancel_response(response_id: str, responses: ResponsesDep, principal: PrincipalDep) -> Response:
    """Cancel a background response; a queued one never starts, a running one stops within moments."""
    return json_response(await responses.cancel(principal, response_id))


@router.get(
    f"{ENDPOINT_RESPONSES}/{{response_id}}/input_items",
    response_model=InputItemList,
    responses=error_responses(401, 403, 404),
)
async def list_input_items(
    response_id: str,
    responses: ResponsesDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    order: Annotated[Literal["asc", "desc"], Query(description="`desc` (default: newest first) or `asc`.")] = "desc",
    include: Annotated[list[str] | None, Query(alias="include[]")] = None,
) -> Response:
    """The items the response was given as ``input`` (not those of the responses before it)."""
    page = await responses.input_items(principal, response_id, limit=limit, after=after, order=order)
    return json_response(InputItemList.of(page.items, has_more=page.has_more))
