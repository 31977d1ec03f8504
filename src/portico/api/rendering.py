"""Response helpers shared by routes: fast JSON bodies, generation streams, and the OpenAPI description of
errors and streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from portico.api.errors import error_body
from portico.api.streaming import Failure, NamedEvent, SSEEvent, named_by_type, sse_response
from portico.constants import (
    HEADER_CACHE_SIMILARITY,
    HEADER_CACHE_STATUS,
    HEADER_CONTENT_WARNING,
    HEADER_REQUEST_COST,
    HEADER_SERVED_BY,
    CacheStatus,
)
from portico.errors import PorticoError
from portico.schemas.errors import ErrorEnvelope
from portico.services.generation.pipeline import Generated, Streamed
from portico.services.responses import ResponseEvents
from portico.usage.meter import Charge


def json_response(body: BaseModel, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json")


def metered_headers(charge: Charge) -> dict[str, str]:
    """A finished request's headers: rate-limit state, quota warning and its cost in USD."""
    headers = charge.headers()
    if (settlement := charge.settlement) is not None:
        headers[HEADER_REQUEST_COST] = f"{settlement.cost_usd:.10f}".rstrip("0").rstrip(".") or "0"
    return headers


def generated_headers(generated: Generated) -> dict[str, str]:
    """A generation's headers: metered ones, ``X-Cache-Status``, ``X-Served-By`` unless a cache answered, and a
    semantic hit's ``X-Cache-Similarity``."""
    headers = {**metered_headers(generated.charge), HEADER_CACHE_STATUS: generated.cache.value}
    if generated.served_by is not None:
        headers[HEADER_SERVED_BY] = generated.served_by
    if generated.similarity is not None:
        headers[HEADER_CACHE_SIMILARITY] = f"{generated.similarity:.4f}"
    if generated.warnings:
        headers[HEADER_CONTENT_WARNING] = ", ".join(generated.warnings)
    return headers


def generated_response(generated: Generated) -> Response:
    return json_response(generated.body, headers=generated_headers(generated))


def generation_stream(
    streamed: Streamed,
    heartbeat_s: float,
    chunks: AsyncIterator[SSEEvent] | None = None,
    on_close: Callable[[], None] | None = None,
    *,
    done_frame: bool = True,
    failure: Failure = error_body,
) -> StreamingResponse:
    """A generation's SSE response (``chunks``, default: the stream's own). Its headers go out before it runs:
    rate-limit state and ``X-Served-By``; streams are never cached. Its end runs ``on_close`` (default: the
    stream's ``close``, which settles a stream whose body never ran); ``done_frame`` and ``failure`` as for
    ``sse_response``."""
    headers = {
        **streamed.charge.headers(),
        HEADER_CACHE_STATUS: CacheStatus.BYPASS.value,
        HEADER_SERVED_BY: streamed.served_by,
    }
    if streamed.warning is not None:
        headers[HEADER_CONTENT_WARNING] = streamed.warning.code
    return sse_response(
        chunks or streamed.chunks(),
        heartbeat_s=heartbeat_s,
        headers=headers,
        on_close=on_close or streamed.close,
        done_frame=done_frame,
        failure=failure,
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorEnvelope} for status in statuses}


GENERATION_ERRORS = error_responses(400, 401, 403, 404, 410, 413, 415, 429, 500, 503, 504)

# Any route may answer any error status (a body over the limit, a key over its rate, storage down), always with
# the envelope; these ranges say so once. They also replace FastAPI's 422, which Portico never sends (invalid
# requests are 400s). Routes still name the statuses they are known for.
ERROR_RANGES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorEnvelope, "description": "A client error; `error.code` says which (docs/errors.md)."},
    "5XX": {"model": ErrorEnvelope, "description": "A server-side failure; `error.retryable` says whether to retry."},
}

STREAM_DOC: dict[str, Any] = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "description": "With `stream: true`: `data: {chunk}` events, `: heartbeat` comments, then "
        '`data: [DONE]` on success or one `data: {"error": ...}` event on failure.',
    }
}


RESPONSE_STREAM_DOC = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "description": "With `stream: true`: OpenAI's typed events (`event: response.created`, "
        "`response.output_text.delta`, `response.function_call_arguments.delta`, ..., `response.completed`); "
        "a failure ends the stream with `error` and `response.failed`.",
    }
}


def typed_event_stream(typed: ResponseEvents, heartbeat_s: float) -> StreamingResponse:
    """A Responses API stream: its typed events as named SSE events; no ``[DONE]`` (the last event says the
    response ended)."""

    def failure(exc: PorticoError) -> SSEEvent:
        return NamedEvent("error", typed.stream.error_event(exc))

    events = named_by_type(typed.events)
    if typed.streamed is None:
        return sse_response(events, heartbeat_s=heartbeat_s, done_frame=False, failure=failure)
    return generation_stream(typed.streamed, heartbeat_s, events, done_frame=False, failure=failure)
