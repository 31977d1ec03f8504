"""Typed responses. Every model accepts fields it does not know (``extra="allow"``), so a newer server's
additions never break an older client; they are readable as attributes and in ``model_dump()``."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class PorticoModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class Page(PorticoModel, Generic[T]):
    """One page of a list: pass ``last_id`` as ``after`` for the next while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class PromptTokensDetails(PorticoModel):
    cached_tokens: int = 0


class Usage(PorticoModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    cost: float | None = None  # USD


# -- chat and completions ------------------------------------------------------------------------------------
class ChatMessage(PorticoModel):
    role: str
    content: str | None = None


class ChatChoice(PorticoModel):
    index: int
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletion(PorticoModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(PorticoModel):
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(PorticoModel):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None


class ChatCompletionChunk(PorticoModel):
    """A streamed piece. The last chunk of a stream with usage has no choices and the ``usage``."""

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(PorticoModel):
    index: int
    text: str
    finish_reason: str | None = None


class Completion(PorticoModel):
    """A completion, or a streamed piece of one (``object: "text_completion"`` both)."""

    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(PorticoModel):
    object: str = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string with encoding_format="base64"


class EmbeddingUsage(PorticoModel):
    prompt_tokens: int
    total_tokens: int
    cost: float | None = None


class EmbeddingList(PorticoModel):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(PorticoModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str
    snapshot: str | None = None
    context_window: int | None = None
    capabilities: list[str] = []


class TokenCount(PorticoModel):
    model: str
    count: int
    max_model_len: int


# -- jobs, files, batches ------------------------------------------------------------------------------------
class ErrorEnvelope(PorticoModel):
    error: dict[str, Any]


class JobProgress(PorticoModel):
    completion_tokens: int = 0


class Job(PorticoModel):
    id: str
    object: str = "job"
    type: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
    priority: str = "job"
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    expires_at: int | None = None
    attempts: int = 0
    cancel_requested: bool = False
    progress: JobProgress | None = None
    partial_output: list[str] | None = None
    request: dict[str, Any] | None = None
    result: dict[str, Any] | None = None  # the sync endpoint's body, when succeeded
    usage: Usage | None = None
    error: ErrorEnvelope | None = None  # the sync endpoint's error envelope, when failed
    webhook_url: str | None = None
    metadata: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        return self.status in {"succeeded", "failed", "cancelled", "expired"}


class JobEvent(PorticoModel):
    """One event of a job: ``queued``, ``started``, ``delta``, then ``completed``, ``failed``, ``cancelled`` or
    ``expired``. A ``started`` event with ``attempt`` > 1 means the job restarted: drop the deltas before it."""

    id: int
    event: str
    data: dict[str, Any]


class WebhookSecret(PorticoModel):
    object: str = "webhook.secret"
    secret: str


class FileObject(PorticoModel):
    id: str
    object: str = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"


class Deleted(PorticoModel):
    id: str
    object: str
    deleted: bool


class BatchRequestCounts(PorticoModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class Batch(PorticoModel):
    id: str
    object: str = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: Literal[
        "validating", "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled", "expired"
    ]
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None
    created_at: int
    expires_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None = None


# -- conversations -------------------------------------------------------------------------------------------
class ConversationUsage(PorticoModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float


class Conversation(PorticoModel):
    id: str
    object: str = "conversation"
    created_at: int
    model: str
    system: str | None = None
    metadata: dict[str, str] = {}
    context_strategy: str
    usage: ConversationUsage


class ConversationMessage(PorticoModel):
    id: str
    object: str = "conversation.message"
    conversation_id: str
    created_at: int
    role: Literal["user", "assistant", "summary"]
    content: str
    tokens: int
    in_context: bool
    status: str
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


class ContextReport(PorticoModel):
    dropped_message_ids: list[str] = []
    summarized_message_ids: list[str] = []
    summary_message_id: str | None = None


class Turn(ConversationMessage):
    """The assistant's answer to a posted message, with the id of that message and what left the context."""

    user_message_id: str
    context: ContextReport


# -- usage and keys ------------------------------------------------------------------------------------------
class UsageTotals(PorticoModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: float
    cancelled: int


class UsageBucket(UsageTotals):
    key: str | None


class UsageReport(PorticoModel):
    object: str = "usage"
    start: float | None = None
    end: float | None = None
    group_by: str | None = None
    project: str | None = None
    totals: UsageTotals
    buckets: list[UsageBucket] = []


class ApiKey(PorticoModel):
    id: str
    object: str = "organization.project.api_key"
    name: str
    project_id: str
    scopes: list[str]
    tier: str
    limits: dict[str, int | float | None] = {}
    redacted_value: str
    created_at: int
    last_used_at: int | None = None
    expires_at: int | None = None
    revoked_at: int | None = None
    previous_secret_valid_until: int | None = None


class CreatedApiKey(ApiKey):
    value: str  # the key itself: shown only when created or rotated
