"""Portico's one exception hierarchy. Routes and services raise these; ``api/errors.py`` renders them.

Each class sets its HTTP status, OpenAI error ``type``, ``code`` and whether a retry may succeed
(``retryable``); docs/errors.md lists every code a client can see, with its status and meaning. Abstract bases
(``AuthenticationFailed``, ``RateLimited``) are never raised themselves: each subclass names its reason.

Messages say what was wrong and how to fix it. They never carry a stack trace, a prompt or a secret.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class PorticoError(Exception):
    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        # Structured, safe-to-show fields added to the error object (e.g. ``limit`` and ``requested``).
        self.details = details or {}
        # Response headers that belong with this error (e.g. the x-ratelimit-* state on a 429).
        self.headers: dict[str, str] = {}

    def envelope(self, request_id: str | None) -> dict[str, Any]:
        """The wire form, ``{"error": {...}}``: what an endpoint answers, and what a job or batch line stores."""
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "retryable": self.retryable,
                "request_id": request_id,
                **self.details,
            }
        }


class InvalidRequest(PorticoError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class TooManyMessages(InvalidRequest):
    def __init__(
        self, count: int, limit: int, *, param: str = "messages", hint: str = "Drop or summarize older turns."
    ) -> None:
        message = f"{param} holds {count} messages; this server accepts at most {limit} per request. {hint}"
        super().__init__(message, param=param)


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"

    def __init__(self, *, limit: int, prompt_tokens: int, max_tokens: int = 0, param: str = "messages") -> None:
        """``max_tokens`` is the room asked for the completion; 0 for a request that generates nothing
        (an embeddings input), whose ``param`` then names the input that is too long."""
        requested = prompt_tokens + max_tokens
        if max_tokens:
            message = (
                f"This model's context window is {limit} tokens, but {requested} were requested "
                f"({prompt_tokens} in the prompt and {max_tokens} for the completion). "
                "Shorten the prompt or lower max_tokens."
            )
        else:
            message = (
                f"This model's context window is {limit} tokens, but {param} is {requested} tokens long. "
                "Shorten it, or split it into parts and send them as separate inputs."
            )
        super().__init__(message, param=param, details={"limit": limit, "requested": requested})


class ContentPolicyViolation(InvalidRequest):
    """Input (or, under ``on_output: fail``, output) that the project's content policy blocks. It names the
    categories, never the scores or what would have passed."""

    code = "content_policy_violation"

    def __init__(self, categories: list[str], *, output: bool = False) -> None:
        side = "The generated output" if output else "This request"
        message = f"{side} was flagged by the project's content policy ({', '.join(categories)})."
        super().__init__(message, param=None if output else "input", details={"categories": categories})


class UpstreamContextExceeded(InvalidRequest):
    """An upstream refused a prompt as longer than its context window (it counts tokens; Portico estimates)."""

    code = "context_length_exceeded"


class AuthenticationFailed(PorticoError):
    status_code = 401
    type = "authentication_error"
    code = "authentication_failed"


class MissingApiKey(AuthenticationFailed):
    code = "missing_api_key"

    def __init__(self) -> None:
        super().__init__(
            "No API key was sent. Send it as 'Authorization: Bearer pk-...' (or the 'api-key' header). "
            "An administrator creates keys with 'portico keys create' or POST /v1/admin/keys."
        )


class InvalidApiKey(AuthenticationFailed):
    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__("The API key is not valid. Check that it was copied whole; keys look like pk-key_...-....")


class ExpiredApiKey(AuthenticationFailed):
    code = "expired_api_key"

    def __init__(self) -> None:
        super().__init__("This API key has expired. Ask an administrator for a new key or to rotate this one.")


class RevokedApiKey(AuthenticationFailed):
    code = "revoked_api_key"

    def __init__(self) -> None:
        super().__init__("This API key was revoked (or its project archived). Ask an administrator for a new key.")


class InsufficientScope(PorticoError):
    status_code = 403
    type = "permission_error"
    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"This API key lacks the '{scope}' scope needed here. Use a key with that scope, or ask an "
            "administrator to create one.",
            details={"required_scope": scope},
        )


class NotFound(PorticoError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist. GET /v1/models lists the models this server serves.",
            param="model",
        )


class ModelRetired(PorticoError):
    """A snapshot that was served once and is no longer: 410, naming what to use instead."""

    status_code = 410
    type = "invalid_request_error"
    code = "model_retired"

    def __init__(self, model: str, replacement: str | None) -> None:
        advice = (
            f"Use '{replacement}' instead."
            if replacement is not None
            else "GET /v1/models lists the models this server serves."
        )
        super().__init__(
            f"The model '{model}' has been retired and no longer answers. {advice}",
            param="model",
            details={"replacement": replacement},
        )


class MethodNotAllowed(PorticoError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(PorticoError):
    status_code = 409
    type = "conflict_error"
    code = "conflict"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request. Use a new key for a new request.",
            param="Idempotency-Key",
        )


class IdempotencyKeyInProgress(Conflict):
    code = "idempotency_key_in_progress"
    retryable = True

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed. Retry after it finishes to get its "
            "response.",
            param="Idempotency-Key",
            retry_after=retry_after,
        )


class ConversationBusy(Conflict):
    """Another message of the same conversation is being answered, or was added while this one was answered."""

    code = "conversation_busy"
    retryable = True


class RequestTimeout(PorticoError):
    status_code = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(PorticoError):
    status_code = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaType(PorticoError):
    status_code = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(PorticoError):
    """A limit of the key tripped; ``code`` names it and ``retry_after`` says when the request could pass."""

    status_code = 429
    type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        details = {"retry_after": math.ceil(retry_after)} if retry_after is not None else {}
        super().__init__(message, retry_after=retry_after, details=details)


class RequestRateLimited(RateLimited):
    code = "requests_per_minute"
    retryable = True


class TokenRateLimited(RateLimited):
    code = "tokens_per_minute"
    retryable = True


class DailyTokensExhausted(RateLimited):
    code = "tokens_per_day"


class ConcurrencyLimited(RateLimited):
    code = "concurrency"
    retryable = True


class TooManyStreams(RateLimited):
    """The key already holds ``max_streams_per_key`` open event streams in this server process."""

    code = "too_many_streams"
    retryable = True


class BudgetExhausted(RateLimited):
    code = "budget"


class UpstreamRateLimited(RateLimited):
    """An upstream provider answered 429; its Retry-After is passed on."""

    code = "upstream_rate_limited"
    retryable = True


class ClientDisconnected(PorticoError):
    """The client left before its response was ready; nobody receives this, but the access log shows it."""

    status_code = 499
    type = "client_closed_request"
    code = "client_closed_request"


class EngineError(PorticoError):
    code = "engine_error"


class WorkerLost(PorticoError):
    """A job's worker stopped renewing its lease (it died) on every one of its allowed attempts."""

    code = "worker_lost"
    retryable = True


class EngineOverloaded(PorticoError):
    status_code = 503
    type = "overloaded_error"
    code = "engine_overloaded"
    retryable = True


class EngineUnavailable(PorticoError):
    status_code = 503
    type = "overloaded_error"
    code = "engine_unavailable"
    retryable = True


class GenerationTimeout(PorticoError):
    status_code = 504
    type = "timeout_error"
    code = "timeout"
    retryable = True


class LimitsUnavailable(PorticoError):
    status_code = 503
    type = "service_unavailable"
    code = "limits_unavailable"
    retryable = True


class StorageUnavailable(PorticoError):
    status_code = 503
    type = "service_unavailable"
    code = "storage_unavailable"
    retryable = True


class UpstreamError(PorticoError):
    """An upstream provider failed (5xx, a broken connection, an answer that is not OpenAI's shape)."""

    status_code = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class UpstreamUnavailable(PorticoError):
    """An upstream provider could not be reached at all."""

    status_code = 503
    type = "service_unavailable"
    code = "upstream_unavailable"
    retryable = True


class CircuitOpen(UpstreamUnavailable):
    """Every deployment of a model has an open circuit: none is sent requests until its cooldown ends."""

    code = "circuit_open"
