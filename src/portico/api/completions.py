"""POST /v1/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep, SemanticCacheDep
from portico.api.deps import GenerationDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.responses import (
    GENERATION_ERRORS,
    STREAM_DOC,
    generated_headers,
    generation_stream,
    json_response,
    usage_chunk_extras,
)
from portico.constants import PREFIX_COMPLETION, Scope, new_id
from portico.engines.upstream import UpstreamEngine
from portico.schemas.completions import Completion, CompletionRequest
from portico.services.generation import ENDPOINT_COMPLETIONS
from portico.services.inference import ChoiceDelta, ChoiceEnd, StreamEvent
from portico.services.metering import Ticket
from portico.services.routing import Route

router = APIRouter(tags=["completions"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT_COMPLETIONS,
    response_model=Completion,
    responses={**GENERATION_ERRORS, 200: {"content": STREAM_DOC}},
)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    generation: GenerationDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cache: CacheModeDep,
    semantic: SemanticCacheDep,
) -> Response:
    if not body.stream:
        generated = await cancel_on_disconnect(
            request, generation.completion(body, principal, cache=cache, semantic=semantic)
        )
        return json_response(generated.body, headers=generated_headers(generated))

    async def stream(way: Route) -> Response:
        """The stream from the route's current model; failures before it starts may fall back to the next."""
        served = way.served
        if isinstance(served.engine, UpstreamEngine):
            upstream = await generation.upstream.stream_completion(way, body, principal)
            return generation_stream(
                upstream.chunks,
                ticket=upstream.ticket,
                served_by=upstream.served_by,
                heartbeat_s=settings.heartbeat_interval_s,
                on_close=upstream.on_close,
            )
        service = generation.inference
        prepared = await service.prepare_completion(body, served)
        service.ensure_room(prepared)
        ticket = await way.ticket_for(lambda: generation.admit(principal, prepared, ENDPOINT_COMPLETIONS))
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        completion_id, created, model = new_id(PREFIX_COMPLETION), int(time.time()), served.snapshot
        chunks = _chunks(service.stream(prepared, ticket), ticket, completion_id, created, model, include_usage)
        return generation_stream(
            chunks,
            ticket=ticket,
            served_by=served.alias,
            heartbeat_s=settings.heartbeat_interval_s,
            on_close=ticket.settle_unstarted,
        )

    return await generation.route(body.model).run(stream)


async def _chunks(
    events: AsyncIterator[StreamEvent],
    ticket: Ticket,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
        return {**body, "choices": choices, **extra}

    async for event in events:
        if isinstance(event, ChoiceDelta):
            yield chunk([{"index": event.index, "text": event.text, "finish_reason": None, "logprobs": None}])
        elif isinstance(event, ChoiceEnd):
            finish = event.finish_reason.value
            yield chunk([{"index": event.index, "text": "", "finish_reason": finish, "logprobs": None}])
        elif include_usage:
            yield chunk([], **usage_chunk_extras(event.usage, ticket))
