"""The keyword arguments of the client's methods, as TypedDicts: written once, typed for both clients, and
sent as given (a field the server adds later can go in ``extra_body``). Each also takes ``RequestOptions``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Required

from portico_client._base_client import RequestOptions

Message = Mapping[str, Any]  # {"role": "user", "content": "..."}; content may be a list of {"type": "text", ...}


class SamplingParams(RequestOptions, total=False):
    max_tokens: int
    temperature: float
    top_p: float
    stop: str | Sequence[str]
    seed: int
    presence_penalty: float
    frequency_penalty: float


class GenerationParams(SamplingParams, total=False):
    model: Required[str]
    n: int
    user: str
    metadata: Mapping[str, str]
    stream_options: Mapping[str, bool]  # {"include_usage": True} for a final usage chunk


class ChatCompletionParams(GenerationParams, total=False):
    messages: Required[Sequence[Message]]
    max_completion_tokens: int
    response_format: Mapping[str, Any]
    store: bool


class CompletionParams(GenerationParams, total=False):
    prompt: Required[str | Sequence[str]]


class EmbeddingParams(RequestOptions, total=False):
    model: Required[str]
    input: Required[str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]]
    encoding_format: Literal["float", "base64"]
    dimensions: int
    user: str


class TokenizeParams(RequestOptions, total=False):
    model: Required[str]
    prompt: str
    messages: Sequence[Message]


class ListParams(RequestOptions, total=False):
    limit: int
    after: str


class OrderedListParams(ListParams, total=False):
    order: Literal["asc", "desc"]


class JobCreateParams(RequestOptions, total=False):
    type: Required[Literal["chat.completion", "completion", "embedding"]]
    request: Required[Mapping[str, Any]]  # the body of the sync endpoint
    webhook_url: str
    metadata: Mapping[str, str]
    priority: Literal["job", "batch"]


class JobListParams(ListParams, total=False):
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]


class FileListParams(OrderedListParams, total=False):
    purpose: str


class BatchCreateParams(RequestOptions, total=False):
    input_file_id: Required[str]
    endpoint: Required[Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]]
    completion_window: Literal["24h"]
    metadata: Mapping[str, str]


class ConversationCreateParams(RequestOptions, total=False):
    model: Required[str]
    system: str
    metadata: Mapping[str, str]
    context_strategy: Literal["truncate_oldest", "summarize", "error"]


class MessageCreateParams(SamplingParams, total=False):
    content: Required[str | Sequence[Mapping[str, str]]]


class UsageParams(RequestOptions, total=False):
    start: float  # Unix seconds, inclusive
    end: float  # Unix seconds, exclusive
    group_by: Literal["model", "key", "endpoint", "day", "outcome"]
    project: str


class KeyCreateParams(RequestOptions, total=False):
    project: Required[str]  # a project id or name
    name: str
    scopes: Sequence[str]
    tier: str
    limits: Mapping[str, int | float | None]
    expires_at: int


class KeyListParams(ListParams, total=False):
    project_id: str
