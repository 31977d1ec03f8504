"""The one place errors become HTTP: the envelope (Anthropic's shape under /v1/messages), its headers, and the
handlers that map foreign errors."""

from __future__ import annotations

import math
import re
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from portico.constants import HEADER_RETRY_AFTER, HEADER_SHOULD_RETRY
from portico.errors import (
    InvalidJSON,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PorticoError,
    UnknownParameter,
    UnsupportedMediaType,
)
from portico.observability.logging import request_id_var
from portico.schemas.anthropic import ErrorDetail, ErrorResponse
from portico.schemas.common import FieldError
from portico.services.generation.types import ENDPOINT_MESSAGES

Model = TypeVar("Model", bound=BaseModel)

# Anthropic's error type for each status Portico answers with; other statuses are invalid_request_error (4xx)
# or api_error (5xx). The HTTP status stays Portico's (a 503, where Anthropic would send 529 overloaded).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(exc: PorticoError) -> dict[str, Any]:
    return exc.envelope(request_id_var.get())


def anthropic_error_body(exc: PorticoError) -> dict[str, Any]:
    """Anthropic's error shape, for its Messages API (the SDK raises its exception classes from it). It has no
    ``param``: the message names the parameter, as Anthropic's do."""
    fallback = "invalid_request_error" if exc.status_code < 500 else "api_error"
    kind = _ANTHROPIC_TYPES.get(exc.status_code, fallback)
    named = exc.param is None or exc.param in exc.message
    message = exc.message if named else f"{exc.param}: {exc.message}"
    body = ErrorResponse(error=ErrorDetail(type=kind, message=message), request_id=request_id_var.get())
    return body.model_dump()


def error_headers(exc: PorticoError) -> dict[str, str]:
    headers = {**exc.headers, HEADER_SHOULD_RETRY: "true" if exc.retryable else "false"}
    if exc.retry_after is not None:
        headers[HEADER_RETRY_AFTER] = str(max(1, math.ceil(exc.retry_after)))
    return headers


def error_response(exc: PorticoError, *, path: str = "") -> Response:
    """``exc`` as the route at ``path`` answers it: in Anthropic's shape under /v1/messages, else the envelope."""
    body = anthropic_error_body(exc) if path.startswith(ENDPOINT_MESSAGES) else error_body(exc)
    return Response(
        orjson.dumps(body),
        status_code=exc.status_code,
        headers=error_headers(exc),
        media_type="application/json",
    )


# How pydantic names the member of a union it tried, in an error's location ('input', 'str'): not a field.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|dict\[.*|list\[.*|function-.*|json-or-python.*)$")


def _param(loc: tuple[Any, ...]) -> str | None:
    """('body', 'messages', 0, 'content') → 'messages[0].content'; ('body', 'input', 'list[...]', 0, 'role')
    → 'input[0].role'."""
    parts = [p for p in loc if p not in ("body", "query", "path") and not _UNION_MEMBER.match(str(p))]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def translate_validation_error(exc: RequestValidationError) -> PorticoError:
    # Of a union's errors (one per member tried), the one that got furthest says what is wrong.
    first = max(exc.errors(), key=lambda error: len(error.get("loc", ())))
    param = _param(tuple(first.get("loc", ())))
    if isinstance(problem := first.get("ctx", {}).get("error"), FieldError):
        param = f"{param}.{problem.field}" if param else problem.field
    kind = first.get("type", "")
    if kind == "json_invalid":
        return InvalidJSON(
            "The request body is not valid JSON. Send a JSON object with Content-Type: application/json."
        )
    if kind == "extra_forbidden":
        return UnknownParameter(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing" and param is None:
        return InvalidRequest("The request body is missing. Send a JSON object with Content-Type: application/json.")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    message = str(first.get("msg", "Invalid value"))
    return InvalidRequest(f"Invalid value for '{param}': {message}." if param else f"{message}.", param=param)


def translate_http_exception(exc: StarletteHTTPException) -> PorticoError:
    if exc.status_code == 404:
        return NotFound("No such endpoint. See /docs for the API this server offers.")
    if exc.status_code == 405:
        return MethodNotAllowed("This endpoint does not support that HTTP method. See /docs.")
    if exc.status_code == 413:
        return PayloadTooLarge(str(exc.detail))
    if exc.status_code == 415:
        return UnsupportedMediaType(str(exc.detail))
    if exc.status_code == 400:
        return InvalidJSON(
            "The request body could not be parsed. Send a JSON object encoded as UTF-8 "
            "with Content-Type: application/json."
        )
    if exc.status_code < 500:
        return InvalidRequest(str(exc.detail))
    return PorticoError("The server failed to handle this request.")


def validated(model: type[Model], value: object, *where: str) -> Model:
    """``value`` (a part of a body, e.g. a job's ``request``) checked as ``model``; errors name the parameter
    under ``where`` (``request.messages``), as the body's own validation errors do."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *where, *error["loc"])} for error in exc.errors()]
        raise translate_validation_error(RequestValidationError(errors)) from None


def allowed_methods(request: Request, first_route: str) -> str:
    """Every method the request's path answers to, for a 405's ``Allow``. Starlette names only those of the
    first route matching the path (``first_route``), and a path such as ``/v1/chat/completions`` has a route
    per method; the OpenAPI paths list them all."""
    methods = {method.strip() for method in first_route.split(",") if method.strip()}
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(request.url.path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    async def on_portico_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PorticoError)
        return error_response(exc, path=request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(translate_validation_error(exc), path=request.url.path)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        response = error_response(translate_http_exception(exc), path=request.url.path)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["allow"] = allowed_methods(request, response.headers.get("allow", ""))
        return response

    app.add_exception_handler(PorticoError, on_portico_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
