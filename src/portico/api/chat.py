"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.deps import InferenceDep, MeterDep, PrincipalDep, SettingsDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.responses import (
    GENERATION_ERRORS,
    STREAM_DOC,
    admit,
    json_response,
    metered_headers,
    usage_chunk_extras,
    wire_usage,
)
from portico.api.streaming import sse_response
from portico.constants import PREFIX_CHAT_COMPLETION, Scope, new_id
from portico.schemas.chat import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest
from portico.services.inference import ChoiceDelta, ChoiceEnd, StreamEvent
from portico.services.metering import Ticket

ENDPOINT = "/v1/chat/completions"
router = APIRouter(tags=["chat"], dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)])


@router.post(
    ENDPOINT,
    response_model=ChatCompletion,
    responses={**GENERATION_ERRORS, 200: {"content": STREAM_DOC}},
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    service: InferenceDep,
    settings: SettingsDep,
    meter: MeterDep,
    principal: PrincipalDep,
) -> Response:
    prepared = await service.prepare_chat(body)
    completion_id = new_id(PREFIX_CHAT_COMPLETION)
    created = int(time.time())
    model = prepared.served.snapshot
    if body.stream:
        service.ensure_room(prepared)
        ticket = await admit(meter, principal, prepared, ENDPOINT)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = service.stream(prepared, ticket)
        chunks = _chunks(events, ticket, completion_id, created, model, body.n, include_usage)
        return sse_response(
            chunks,
            heartbeat_s=settings.heartbeat_interval_s,
            headers=ticket.headers(),
            on_close=ticket.settle_unstarted,
        )
    ticket = await admit(meter, principal, prepared, ENDPOINT)
    result = await cancel_on_disconnect(request, service.complete(prepared, ticket))
    return json_response(
        ChatCompletion(
            id=completion_id,
            created=created,
            model=model,
            choices=[
                ChatChoice(index=i, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason.value)
                for i, c in enumerate(result.choices)
            ],
            usage=wire_usage(result.usage, ticket),
        ),
        headers=metered_headers(ticket),
    )


async def _chunks(
    events: AsyncIterator[StreamEvent],
    ticket: Ticket,
    completion_id: str,
    created: int,
    model: str,
    n: int,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's chunk sequence: a role chunk per choice, content deltas, a finish chunk, then usage if asked."""

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
            yield chunk([], **usage_chunk_extras(event.usage, ticket))
