"""The transport both clients share: what a call is, how it becomes an HTTP request, when to retry it and how
long to wait, and how a failed response becomes an exception. Only the loops that send and sleep (in
``_client.py``) differ between the sync and the async client.

A logical call draws one ``Idempotency-Key`` (POST only) and keeps it on every retry, so a retry after a lost
answer replays the first response instead of running, and billing, the request again.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, Unpack, cast

import httpx
from pydantic import BaseModel

from portico_client._exceptions import APIConnectionError, APIError, APITimeoutError, PorticoError, error_from_envelope

if TYPE_CHECKING:
    from portico_client._streaming import EventReader

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
API_KEY_ENV = "PORTICO_API_KEY"
BASE_URL_ENV = "PORTICO_BASE_URL"
USER_AGENT = "portico-client/0.1.0"

# Statuses worth retrying when the server did not say (its x-should-retry header says it on every error).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
# A Retry-After longer than this (a daily quota's "until midnight") is not waited for: the error is raised.
MAX_RETRY_AFTER_S = 60.0


class RequestOptions(TypedDict, total=False):
    """Per-call options, accepted by every method next to its parameters."""

    idempotency_key: str  # default: a new UUID per call (POST), kept on its retries
    extra_headers: Mapping[str, str]
    extra_query: Mapping[str, Any]
    extra_body: Mapping[str, Any]  # fields this client does not know yet
    timeout: float


OPTION_NAMES = RequestOptions.__optional_keys__


def split_options(params: Mapping[str, Any]) -> tuple[dict[str, Any], RequestOptions]:
    """A method's keyword arguments as (the request's fields, the call's options)."""
    fields = {name: value for name, value in params.items() if name not in OPTION_NAMES}
    options = {name: value for name, value in params.items() if name in OPTION_NAMES}
    return fields, cast(RequestOptions, options)


@dataclass(frozen=True, kw_only=True)
class Request:
    method: str
    path: str
    body: Mapping[str, Any] | None = None
    query: Mapping[str, Any] | None = None
    files: Mapping[str, Any] | None = None  # multipart parts, as httpx takes them
    form: Mapping[str, str] | None = None
    options: RequestOptions = field(default_factory=lambda: RequestOptions())


@dataclass(frozen=True, kw_only=True)
class Call(Request, Generic[T]):
    """A request answered in one piece: ``parse`` turns the successful response into the result."""

    parse: Callable[[httpx.Response], T]


@dataclass(frozen=True, kw_only=True)
class StreamCall(Request, Generic[T]):
    """A request answered with server-sent events; ``reader`` turns them into items. A ``resumable`` stream
    (a job's events) reconnects with ``Last-Event-ID`` wherever it broke; another one only before its first item."""

    reader: Callable[[], EventReader[T]]
    resumable: bool = False


def parse_model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def post(path: str, params: Mapping[str, Any], answer: type[M]) -> Call[M]:
    """A POST of a method's keyword arguments as its JSON body."""
    fields, options = split_options(params)
    return Call(method="POST", path=path, body=fields, options=options, parse=parse_model(answer))


def get(path: str, answer: type[M], params: Mapping[str, Any] | None = None) -> Call[M]:
    """A GET with a method's keyword arguments as its query."""
    fields, options = split_options(params or {})
    return Call(method="GET", path=path, query=fields, options=options, parse=parse_model(answer))


def without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


class RetryBudget:
    """The retries left to one logical call, and how long to wait before the next."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.retries = 0

    def delay_for(self, error: PorticoError) -> float | None:
        """Seconds to wait before retrying after ``error``; None when it must be raised."""
        if not error.retryable or self.retries >= self.max_retries:
            return None
        self.retries += 1
        retry_after = retry_after_s(error)
        if retry_after is not None and 0 <= retry_after <= MAX_RETRY_AFTER_S:
            return retry_after
        return backoff_s(self.retries)

    def restart(self) -> None:
        """A resumable stream made progress: the next break gets the full budget again."""
        self.retries = 0


def backoff_s(retry: int) -> float:
    """Exponential with jitter: 0.5 s, 1 s, 2 s, ... (at most 8 s), each less up to a quarter at random, so
    clients that failed together do not come back together."""
    ceiling = min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2.0 ** (retry - 1))
    return ceiling * (1 - 0.25 * random.random())


def retry_after_s(error: PorticoError) -> float | None:
    """The server's ``Retry-After`` (seconds or an HTTP date), or the ``retry_after`` of a mid-stream error."""
    if not isinstance(error, APIError):
        return None
    header = error.headers.get("retry-after")
    if header is None:
        value = error.body.get("retry_after")
        return float(value) if isinstance(value, int | float) else None
    try:
        return float(header)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(header).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for a failed response whose body has been read."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    should_retry = response.headers.get("x-should-retry")
    envelope = body.get("error") if isinstance(body, dict) else None
    if should_retry in {"true", "false"}:
        retryable = should_retry == "true"
    elif isinstance(envelope, dict) and isinstance(envelope.get("retryable"), bool):
        retryable = envelope["retryable"]
    else:
        retryable = response.status_code in RETRY_STATUSES
    return error_from_envelope(body, status_code=response.status_code, headers=response.headers, retryable=retryable)


def connection_error(exc: httpx.TransportError) -> APIConnectionError:
    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    error = kind(f"Could not get an answer from the server: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class ClientOptions(TypedDict, total=False):
    base_url: str | None  # default: $PORTICO_BASE_URL, else http://127.0.0.1:8000/v1
    api_key: str | None  # default: $PORTICO_API_KEY
    max_retries: int
    timeout: float  # seconds, per attempt
    default_headers: Mapping[str, str]


HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class BaseClient(Generic[HttpT]):
    """Settings both clients share; the HTTP client they send with (their own, or one given)."""

    def __init__(self, http: HttpT, **options: Unpack[ClientOptions]) -> None:
        base_url = options.get("base_url") or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        api_key = options.get("api_key")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.max_retries = options.get("max_retries", DEFAULT_MAX_RETRIES)
        self._http: HttpT = http
        self._http.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self._http.timeout = httpx.Timeout(options.get("timeout", DEFAULT_TIMEOUT_S))
        self._http.headers.update({"user-agent": USER_AGENT, **options.get("default_headers", {})})
        if self.api_key:
            self._http.headers["authorization"] = f"Bearer {self.api_key}"

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)


class Attempts:
    """One logical call: its request, its idempotency key and its retry budget, shared by all its attempts."""

    def __init__(self, request: Request, max_retries: int) -> None:
        self.request = request
        self.budget = RetryBudget(max_retries)
        self.idempotency_key = request.options.get("idempotency_key") or (
            str(uuid.uuid4()) if request.method == "POST" else None
        )

    def build(self, http: httpx.Client | httpx.AsyncClient, last_event_id: str | None = None) -> httpx.Request:
        request, options = self.request, self.request.options
        all_headers = dict(options.get("extra_headers", {}))
        if self.idempotency_key is not None:
            all_headers["idempotency-key"] = self.idempotency_key
        if last_event_id is not None:
            all_headers["last-event-id"] = last_event_id
        body = None if request.body is None else {**request.body, **options.get("extra_body", {})}
        query = {**without_none(request.query or {}), **options.get("extra_query", {})}
        return http.build_request(
            request.method,
            request.path.lstrip("/"),
            json=body,
            params=query or None,
            files=request.files,
            data=request.form,
            headers=all_headers,
            timeout=options.get("timeout", http.timeout),
        )
