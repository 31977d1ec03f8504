"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.caching import CacheModeDep, SemanticCacheDep
from portico.api.deps import (
    GenerationDep,
    PrincipalDep,
    SettingsDep,
    StoredCompletionsDep,
    require_json,
    require_scope,
)
from portico.api.disconnect import cancel_on_disconnect
from portico.api.responses import (
    GENERATION_ERRORS,
    STREAM_DOC,
    generated_headers,
    generation_stream,
    json_response,
    usage_chunk_extras,
)
from portico.constants import PREFIX_CHAT_COMPLETION, Scope, new_id
from portico.engines.upstream import UpstreamEngine
from portico.errors import InvalidRequest, UnsupportedParameter
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.services.generation import ENDPOINT_CHAT
from portico.services.inference import ChoiceDelta, ChoiceEnd, StreamEvent
from portico.services.metering import Ticket
from portico.services.routing import Route

router = APIRouter(tags=["chat"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT_CHAT,
    response_model=ChatCompletion,
    responses={**GENERATION_ERRORS, 200: {"content": STREAM_DOC}},
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    generation: GenerationDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    stored: StoredCompletionsDep,
    cache: CacheModeDep,
    semantic: SemanticCacheDep,
) -> Response:
    if len(body.messages) > settings.max_messages:
        raise InvalidRequest(
            f"messages holds {len(body.messages)} messages; this server accepts at most {settings.max_messages} "
            "per request. Drop or summarize older turns.",
            param="messages",
        )
    if not body.stream:
        generated = await cancel_on_disconnect(
            request, generation.chat(body, principal, cache=cache, semantic=semantic)
        )
        if body.store:
            await stored.save(principal, body, cast(ChatCompletion, generated.body))
        return json_response(generated.body, headers=generated_headers(generated))

    async def stream(way: Route) -> Response:
        """The stream from the route's current model; failures before it starts may fall back to the next."""
        served = way.served
        if isinstance(served.engine, UpstreamEngine):
            if body.store:
                raise UnsupportedParameter(
                    "store is not supported with stream for a model served by an upstream; send stream: false.",
                    param="store",
                )
            upstream = await generation.upstream.stream_chat(way, body, principal)
            return generation_stream(
                upstream.chunks,
                ticket=upstream.ticket,
                served_by=upstream.served_by,
                heartbeat_s=settings.heartbeat_interval_s,
                on_close=upstream.on_close,
            )
        service = generation.inference
        prepared = await service.prepare_chat(body, served)
        service.ensure_room(prepared)
        ticket = await way.ticket_for(lambda: generation.admit(principal, prepared, ENDPOINT_CHAT))
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        completion_id, created, model = new_id(PREFIX_CHAT_COMPLETION), int(time.time()), served.snapshot
        events = service.stream(prepared, ticket)
        if body.store:
            events = stored.recorded(
                events, principal, body, ticket, completion_id=completion_id, created=created, model=model
            )
        chunks = chat_chunks(events, ticket, completion_id, created, model, body.n, include_usage)
        return generation_stream(
            chunks,
            ticket=ticket,
            served_by=served.alias,
            heartbeat_s=settings.heartbeat_interval_s,
            on_close=ticket.settle_unstarted,
        )

    return await generation.route(body.model).run(stream)


async def chat_chunks(
    events: AsyncIterator[StreamEvent],
    ticket: Ticket,
    completion_id: str,
    created: int,
    model: str,
    n: int,
    include_usage: bool,
    usage_extras: dict[str, Any] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's chunk sequence: a role chunk per choice, content deltas, a finish chunk, then usage if asked
    (with ``usage_extras`` added to that last chunk)."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        return {**body, "choices": choices, **extra}

    for index in range(n):
        yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    async for event in events:
        if isinstance(event, ChoiceDelta):
            yield chunk([{"index": event.index, "delta": {"content": event.text}, "finish_reason": None}])
        elif isinstance(event, ChoiceEnd):
            yield chunk([{"index": event.index, "delta": {}, "finish_reason": event.finish_reason.value}])
        elif include_usage:
            yield chunk([], **usage_chunk_extras(event.usage, ticket), **(usage_extras or {}))
