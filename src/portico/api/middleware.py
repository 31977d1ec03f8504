"""Pure ASGI middleware (no buffering of streams, cancellation intact). ``create_app`` states the order."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico.api.errors import error_response
from portico.api.versioning import deprecation_headers
from portico.constants import (
    HEADER_PROCESSING_MS,
    HEADER_REQUEST_ID,
    PREFIX_REQUEST,
    REQUEST_ID_PATTERN,
    new_id,
)
from portico.engines.versions import noting_named_versions
from portico.errors import PayloadTooLarge, PorticoError, RequestTimeout
from portico.observability import metrics, tracing
from portico.observability.context import RequestRecord, request_record_var
from portico.observability.logging import request_id_var

logger = logging.getLogger("portico.access")
_SANE_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER_REQUEST_ID.encode():
            candidate = value.decode("latin-1")
            return candidate if _SANE_REQUEST_ID.match(candidate) else None
    return None


class RequestContextMiddleware:
    """Request id (kept when the client's is sane), X-Processing-Ms, the access log line, and a clean 500.

    Outermost of ours, so every response — errors and streams too — carries the headers, and an unexpected
    exception becomes the error envelope rather than a stack trace.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or new_id(PREFIX_REQUEST)
        token = request_id_var.set(request_id)
        record = RequestRecord()
        record_token = request_record_var.set(record)
        started = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[HEADER_REQUEST_ID] = request_id
                headers[HEADER_PROCESSING_MS] = f"{(time.perf_counter() - started) * 1000:.1f}"
            await send(message)

        with tracing.server_span(scope["method"], scope["path"], scope["headers"]) as span:
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception:
                logger.exception("unhandled error")
                if status == 0:
                    unexpected = PorticoError(
                        "The server hit an unexpected error while handling this request. "
                        "Retry it; if it keeps failing, report the request id."
                    )
                    await error_response(unexpected, path=scope["path"])(scope, receive, send_with_headers)
            finally:
                duration_s = time.perf_counter() - started
                route = _route_template(scope)
                tracing.finish_server_span(span, route=route, status=status, model=record.model)
                _observe(record, route, scope["method"], status, duration_s)
                logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(duration_s * 1000, 1),
                        "key_id": scope.get("state", {}).get("key_id"),
                        "model": record.model,
                        "prompt_tokens": record.prompt_tokens,
                        "completion_tokens": record.completion_tokens,
                        "cached_tokens": record.cached_tokens,
                    },
                )
                request_record_var.reset(record_token)
                request_id_var.reset(token)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/jobs/{job_id}``): a bounded label, unlike the raw path."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def _observe(record: RequestRecord, route: str, method: str, status: int, duration_s: float) -> None:
    metrics.observe_http(route, method, status, duration_s)
    if record.upstream_calls:
        metrics.observe_gateway_overhead(route, duration_s - record.upstream_s)


class ModelVersionMiddleware:
    """Deprecation, Sunset and successor Link headers when the request named a deprecated model snapshot.

    The registry notes each snapshot it resolves during the request (``engines.versions``). Innermost, so the
    headers are part of the response an idempotent replay stores and repeats.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with noting_named_versions() as named:

            async def send_with_versions(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = MutableHeaders(scope=message)
                    for name, value in deprecation_headers(named):
                        headers.append(name, value)
                await send(message)

            await self.app(scope, receive, send_with_versions)


class BodyLimitMiddleware:
    """Reads a request body up to ``max_bytes`` within ``timeout_s`` before the app sees it; a larger one is a
    413, a slower one (a slowloris client holding a connection open) a 408 that closes the connection.

    ``streamed`` maps upload paths (``POST /v1/files``) to their own, larger limit: their bodies are not
    buffered but passed on as they arrive (the route writes them to disk), and reading past that limit raises
    ``PayloadTooLarge`` (413). A large upload may take longer than ``timeout_s``, so there it bounds each wait
    for the next chunk instead.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, timeout_s: float, streamed: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.streamed = dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        if (stream_limit := self.streamed.get(scope["path"])) is not None:
            await self._pass_streamed(scope, receive, send, stream_limit)
            return
        too_large = PayloadTooLarge(
            f"The request body exceeds this server's limit of {self.max_bytes} bytes. "
            "Send a smaller request (shorten the prompt or split the work)."
        )
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(too_large, path=scope["path"])(scope, receive, send)
                return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await _read_body(receive, self.max_bytes, too_large)
        except PayloadTooLarge:
            await error_response(too_large, path=scope["path"])(scope, receive, send)
            return
        except TimeoutError:
            too_slow = _too_slow(
                f"The request body did not arrive within {self.timeout_s:g} seconds. "
                "Send the body at once, right after the headers."
            )
            await error_response(too_slow, path=scope["path"])(scope, receive, send)
            return
        if body is not None:
            await self.app(scope, _replay(body, receive), send)

    async def _pass_streamed(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        too_large = PayloadTooLarge(
            f"The upload exceeds this server's limit of {limit} bytes. Split it into several smaller files."
        )
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(too_large, path=scope["path"])(scope, receive, send)
                return
        size = 0
        started = False
        too_slow = _too_slow(
            f"The upload paused for more than {self.timeout_s:g} seconds. Send the file without pausing."
        )

        async def counted() -> Message:
            nonlocal size
            try:
                async with asyncio.timeout(self.timeout_s):
                    message = await receive()
            except TimeoutError:
                raise too_slow from None
            size += len(message.get("body", b""))
            if size > limit:
                raise too_large
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, send_tracked)
        except (PayloadTooLarge, RequestTimeout) as exc:
            # A route renders it itself; this answers for a reader that let it escape (before any response).
            if exc not in (too_large, too_slow) or started:
                raise
            await error_response(exc, path=scope["path"])(scope, receive, send)


async def _read_body(receive: Receive, max_bytes: int, too_large: PayloadTooLarge) -> bytes | None:
    """The whole body, or None when the client left before sending it; raises ``too_large`` past ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _too_slow(message: str) -> RequestTimeout:
    """A 408 that also closes the connection: a client this slow may be holding it open on purpose."""
    refused = RequestTimeout(message)
    refused.headers["connection"] = "close"
    return refused


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the buffered body once, then passes through (so disconnects still arrive)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
