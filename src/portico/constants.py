"""Names shared across layers: headers, ID prefixes and status enums have their one home here."""

from __future__ import annotations

import secrets
from enum import IntEnum, StrEnum

# Headers (lower-case: ASGI header names are compared lower-case).
HEADER_REQUEST_ID = "x-request-id"
HEADER_PROCESSING_MS = "x-processing-ms"
HEADER_RETRY_AFTER = "retry-after"
HEADER_SHOULD_RETRY = "x-should-retry"
HEADER_QUOTA_WARNING = "x-quota-warning"
HEADER_CONTENT_WARNING = "x-content-warning"  # a content policy's warning, e.g. prompt_injection
HEADER_REQUEST_COST = "x-request-cost"
HEADER_API_KEY = "api-key"  # Azure-style alternative to Authorization: Bearer
HEADER_X_API_KEY = "x-api-key"  # Anthropic's (the anthropic SDK's api_key= sends it)
HEADER_IDEMPOTENCY_KEY = "idempotency-key"
HEADER_IDEMPOTENT_REPLAYED = "idempotent-replayed"
HEADER_LAST_EVENT_ID = "last-event-id"
HEADER_LOCATION = "location"
HEADER_CACHE_CONTROL = "cache-control"
HEADER_CACHE_STATUS = "x-cache-status"  # hit | miss | bypass (docs/cache.md)
HEADER_SERVED_BY = "x-served-by"  # the deployment that answered (docs/gateway.md)
HEADER_SEMANTIC_CACHE = "x-semantic-cache"  # on | off: the request opts in to or out of the semantic cache
HEADER_CACHE_SIMILARITY = "x-cache-similarity"  # a semantic hit's cosine similarity, e.g. 0.9731
# Model versioning (docs/versioning.md): RFC 9745 Deprecation, RFC 8594 Sunset, RFC 8288 Link.
HEADER_DEPRECATION = "deprecation"
HEADER_SUNSET = "sunset"
HEADER_LINK = "link"
HEADER_MODEL_REPLACEMENT = "x-model-replacement"
# Standard Webhooks (https://www.standardwebhooks.com/) headers on every webhook Portico sends.
HEADER_WEBHOOK_ID = "webhook-id"
HEADER_WEBHOOK_TIMESTAMP = "webhook-timestamp"
HEADER_WEBHOOK_SIGNATURE = "webhook-signature"

# ID prefixes (DESIGN.md "Wire conventions").
PREFIX_CHAT_COMPLETION = "chatcmpl-"
PREFIX_COMPLETION = "cmpl-"
PREFIX_PREDICTION = "pred-"
PREFIX_MODERATION = "modr-"
PREFIX_TOOL_CALL = "call_"
PREFIX_REQUEST = "req_"
PREFIX_ORGANIZATION = "org_"
PREFIX_PROJECT = "proj_"
PREFIX_KEY = "key_"
PREFIX_TIER = "tier_"
PREFIX_LEASE = "lease_"  # a request's concurrency lease in the limiter
PREFIX_JOB = "job_"
PREFIX_BATCH = "batch_"
PREFIX_FILE = "file-"
PREFIX_BATCH_REQUEST = "batch_req_"  # one line of a batch's output or error file
PREFIX_CONVERSATION = "conv_"
PREFIX_MESSAGE = "msg_"
PREFIX_WEBHOOK = "msg_"  # Standard Webhooks message ids
PREFIX_WEBHOOK_SECRET = "whsec_"

# API keys read `pk-<key id>-<secret>`; the key id is public (it names the key in logs and the admin API).
API_KEY_PREFIX = "pk-"

# Client-supplied request ids are kept only when they look like this (no header injection, bounded length).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"

OWNED_BY = "portico"

# Texts up to this many characters (a few thousand tokens, milliseconds of work) are tokenized on the event
# loop; longer ones on a worker thread, so a multi-megabyte prompt (about 2 s for 4 MB) stalls no other request.
INLINE_TOKENIZE_CHARS = 16_384


def new_id(prefix: str) -> str:
    """A fresh prefixed identifier, e.g. ``chatcmpl-4f1c...``; 96 random bits, URL-safe."""
    return prefix + secrets.token_hex(12)


class FinishReason(StrEnum):
    STOP = "stop"  # the model ended its answer or a stop sequence matched
    LENGTH = "length"  # max_tokens (or the context window) was reached
    TOOL_CALLS = "tool_calls"  # the answer is one or more tool calls
    FUNCTION_CALL = "function_call"  # the same, for a request that used the legacy `functions`
    CONTENT_FILTER = "content_filter"  # an upstream's filter stopped the answer
    CANCELLED = "cancelled"  # the client went away or the request was cancelled; never sent on the wire


class Capability(StrEnum):
    CHAT = "chat"  # /v1/chat/completions and /v1/models/{model}/predict
    COMPLETIONS = "completions"  # /v1/completions
    TOKENIZE = "tokenize"  # /v1/tokenize
    JSON_MODE = "json_mode"  # response_format json_object / json_schema is enforced
    TOOLS = "tools"  # tool calls (grammar-constrained on the embedded engine)
    LOGPROBS = "logprobs"  # logprobs / top_logprobs from the engine's token probabilities
    EMBEDDINGS = "embeddings"  # /v1/embeddings
    MODERATION = "moderation"  # /v1/moderations, and the content policies' checks


class Scope(StrEnum):
    """What an API key may do; every route requires one."""

    MODELS_READ = "models:read"  # list and describe models
    INFERENCE = "inference"  # chat, completions, predict, tokenize, embeddings
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    CONVERSATIONS_READ = "conversations:read"
    CONVERSATIONS_WRITE = "conversations:write"
    FILES_READ = "files:read"
    FILES_WRITE = "files:write"
    USAGE_READ = "usage:read"  # the key's project's usage; every project's with keys:admin
    KEYS_ADMIN = "keys:admin"  # projects, keys and tiers of the key's organization


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker
    RUNNING = "running"  # a worker holds its lease and is generating
    SUCCEEDED = "succeeded"  # result and usage are set
    FAILED = "failed"  # error is set (the envelope the sync endpoint would have returned)
    CANCELLED = "cancelled"  # cancelled by its owner; partial usage billed
    EXPIRED = "expired"  # finished longer ago than the retention; result erased


class JobType(StrEnum):
    """What a job runs: the body of the sync endpoint of the same name."""

    CHAT_COMPLETION = "chat.completion"  # POST /v1/chat/completions
    COMPLETION = "completion"  # POST /v1/completions
    EMBEDDING = "embedding"  # POST /v1/embeddings


class JobEventType(StrEnum):
    """The SSE events of GET /v1/jobs/{id}/events (all but heartbeat are rows of ``job_events``)."""

    QUEUED = "queued"  # the job was created
    STARTED = "started"  # a worker began an attempt; attempt > 1 means earlier deltas are void
    DELTA = "delta"  # text made since the previous delta, per choice (batched, not one per token)
    HEARTBEAT = "heartbeat"  # nothing happened for a while; never stored
    COMPLETED = "completed"  # terminal: succeeded, with result, usage (with cost) and timing
    FAILED = "failed"  # terminal: the error envelope, partial usage and timing
    CANCELLED = "cancelled"  # terminal: partial usage and timing
    EXPIRED = "expired"  # terminal: the retention passed; the earlier events were erased


class BatchStatus(StrEnum):
    VALIDATING = "validating"  # the input file is being read and checked
    FAILED = "failed"  # the input file could not be used at all
    IN_PROGRESS = "in_progress"  # requests are running
    FINALIZING = "finalizing"  # output and error files are being written
    COMPLETED = "completed"
    EXPIRED = "expired"  # the completion window passed first
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class FilePurpose(StrEnum):
    BATCH = "batch"  # uploaded: a batch's input (JSONL, one request per line)
    BATCH_OUTPUT = "batch_output"  # written by a batch: its output or error file


class IdempotencyStatus(StrEnum):
    IN_PROGRESS = "in_progress"  # the first request is still running
    COMPLETED = "completed"  # its response is stored for replay


class CacheStatus(StrEnum):
    """What the response cache did for a request (the X-Cache-Status header)."""

    HIT = "hit"  # answered from the cache: no engine work, cost 0
    MISS = "miss"  # cacheable, generated now (and stored)
    BYPASS = "bypass"  # not cacheable (sampling, a stream), `Cache-Control: no-store`, or the cache is off


class CacheMode(StrEnum):
    """What the client allows the cache to do (from its Cache-Control header)."""

    USE = "use"  # read, and store a fresh answer
    REFRESH = "refresh"  # no-cache: don't read, but store the fresh answer
    SKIP = "skip"  # no-store: neither read nor store


class Priority(IntEnum):
    """Admission order in front of an engine: a lower value is served first."""

    INTERACTIVE = 0  # a client is waiting on the response (chat, completions, predict)
    JOB = 1  # asynchronous jobs: someone polls or listens for the result
    BATCH = 2  # batch files: throughput matters, latency does not


# Response compression: smaller bodies gain too little; level 6 is zlib's default, near level 9's size at a
# fraction of its CPU.
GZIP_MINIMUM_BYTES = 1024
GZIP_LEVEL = 6

# Redis key prefixes (each backend adds its own structure below its prefix).
REDIS_PREFIX_LIMITS = "portico:lim:"
REDIS_PREFIX_CACHE = "portico:cache:"


class SnapshotStatus(StrEnum):
    """Where a model snapshot is in its life (docs/versioning.md)."""

    ACTIVE = "active"  # served, no end announced
    DEPRECATED = "deprecated"  # served, with Deprecation/Sunset headers naming the replacement
    RETIRED = "retired"  # refused: 410 model_retired
