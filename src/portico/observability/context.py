"""What one HTTP request did, noted by the layers it passes through and read once when it ends.

``RequestContextMiddleware`` puts a fresh ``RequestRecord`` in a context variable; the metering and upstream
code note the model, the tokens and the time spent waiting on upstreams into it. Tasks the request starts (the
stream pump) copy the context, so they see the same record; the middleware reads it for the access log line
and the gateway overhead metric after the response's last byte.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestRecord:
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    upstream_s: float = 0.0  # time spent in calls to upstream deployments (all attempts)
    upstream_calls: int = 0


request_record_var: ContextVar[RequestRecord | None] = ContextVar("portico_request_record", default=None)


def note_usage(model: str, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> None:
    """The request's model and token counts (the last settlement wins: a fallback replaces a failed attempt)."""
    record = request_record_var.get()
    if record is not None:
        record.model = model
        record.prompt_tokens, record.completion_tokens = prompt_tokens, completion_tokens
        record.cached_tokens = cached_tokens


def note_upstream_call(seconds: float) -> None:
    record = request_record_var.get()
    if record is not None:
        record.upstream_s += seconds
        record.upstream_calls += 1
