"""What the client raises: one class per kind of failure, each carrying what the server said about it.

```
PorticoError                      request_id, code, param, retryable
 ├── APIConnectionError           no answer: refused, reset, or a stream cut before its end (retryable)
 │    └── APITimeoutError         no answer within the client's timeout
 └── APIError                     the server's error envelope; status_code is None for a mid-stream error event
      ├── BadRequestError             400 invalid_request_error
      ├── AuthenticationError         401 authentication_error
      ├── PermissionDeniedError       403 permission_error
      ├── NotFoundError               404 not_found_error
      ├── MethodNotAllowedError       405
      ├── ConflictError               409 conflict_error
      ├── ModelRetiredError           410 (model_retired; ``replacement`` names what to use)
      ├── PayloadTooLargeError        413
      ├── UnsupportedMediaTypeError   415
      ├── RateLimitError              429 rate_limit_error
      ├── InternalServerError         500 server_error
      ├── UpstreamError               502 upstream_error
      ├── ServiceUnavailableError     503 service_unavailable
      │    └── OverloadedError        503 overloaded_error
      └── GatewayTimeoutError         504 timeout_error
```

A mid-stream error event has no status of its own (the stream already answered 200), so its class comes from
the envelope's ``type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class PorticoError(Exception):
    """Base of everything the client raises."""

    request_id: str | None = None
    code: str | None = None
    param: str | None = None
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIConnectionError(PorticoError):
    """The server could not be reached, or the connection broke before the answer was complete."""

    retryable = True


class APITimeoutError(APIConnectionError):
    """No answer within the client's ``timeout``."""


class APIError(PorticoError):
    """An error the server answered with (the ``{"error": {...}}`` envelope)."""

    def __init__(
        self,
        error: Mapping[str, Any],
        *,
        status_code: int | None,
        headers: httpx.Headers | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(str(error.get("message") or f"HTTP {status_code}"))
        self.status_code = status_code
        self.type: str | None = error.get("type")
        self.code = error.get("code")
        self.param = error.get("param")
        self.request_id = error.get("request_id") or (headers.get("x-request-id") if headers is not None else None)
        self.retryable = bool(error.get("retryable")) if retryable is None else retryable
        self.body: dict[str, Any] = dict(error)
        self.headers = headers or httpx.Headers()

    def __str__(self) -> str:
        where = f"HTTP {self.status_code}" if self.status_code is not None else "Error event in the stream"
        code = f" {self.code}" if self.code else ""
        request = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{where}{code}: {self.message}{request}"


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class PermissionDeniedError(APIError):
    pass


class NotFoundError(APIError):
    pass


class MethodNotAllowedError(APIError):
    pass


class ConflictError(APIError):
    pass


class ModelRetiredError(APIError):
    @property
    def replacement(self) -> str | None:
        """The model to use instead, as the server names it."""
        value = self.body.get("replacement")
        return value if isinstance(value, str) else None


class PayloadTooLargeError(APIError):
    pass


class UnsupportedMediaTypeError(APIError):
    pass


class RateLimitError(APIError):
    pass


class InternalServerError(APIError):
    pass


class UpstreamError(APIError):
    pass


class ServiceUnavailableError(APIError):
    pass


class OverloadedError(ServiceUnavailableError):
    pass


class GatewayTimeoutError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    410: ModelRetiredError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: RateLimitError,
    500: InternalServerError,
    502: UpstreamError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}

_BY_TYPE: dict[str, type[APIError]] = {
    "invalid_request_error": BadRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "conflict_error": ConflictError,
    "rate_limit_error": RateLimitError,
    "server_error": InternalServerError,
    "upstream_error": UpstreamError,
    "overloaded_error": OverloadedError,
    "service_unavailable": ServiceUnavailableError,
    "timeout_error": GatewayTimeoutError,
}


def error_class(status_code: int | None, error_type: str | None) -> type[APIError]:
    if status_code == 503 and error_type == "overloaded_error":
        return OverloadedError
    if status_code is not None:
        fallback = InternalServerError if status_code >= 500 else APIError
        return _BY_STATUS.get(status_code, fallback)
    return _BY_TYPE.get(error_type or "", APIError)


def error_from_envelope(
    body: Any, *, status_code: int | None, headers: httpx.Headers | None = None, retryable: bool | None = None
) -> APIError:
    """The exception for an ``{"error": {...}}`` body (or for anything else a failing server or proxy sent)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        error = {"message": f"HTTP {status_code}: {str(body)[:500]}"}
    return error_class(status_code, error.get("type"))(
        error, status_code=status_code, headers=headers, retryable=retryable
    )
