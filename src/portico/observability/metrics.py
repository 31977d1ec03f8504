"""Every Prometheus metric Portico exports, defined once, and the small functions the instrumented code calls.

Names follow the OpenTelemetry GenAI semantic conventions where they define one (``gen_ai_*``, with their
attribute names as labels: ``gen_ai_request_model``, ``gen_ai_token_type``, ``gen_ai_operation_name``), and
Prometheus conventions (``portico_*``, base units, ``_total`` counters) for the rest. docs/observability.md lists
them all.

Several server processes (``portico serve --workers N``) share one view: ``serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, each worker's prometheus-client then
writes its samples to files there, and ``/metrics`` in any worker adds up every process's files. prometheus-client
decides the mode once, when it is first imported; ``render`` asks it which mode it chose rather than reading the
variable again, so the two never disagree.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Buckets recommended by the GenAI semantic conventions for these histograms.
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

_MODEL = "gen_ai_request_model"
_OPERATION = "gen_ai_operation_name"

# The GenAI conventions' gen_ai.operation.name for each endpoint whose usage is metered.
_OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion", "/v1/embeddings": "embeddings"}

HTTP_REQUESTS = Counter(
    "portico_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "portico_http_request_duration_seconds",
    "Time from a request's arrival to its response's end (a stream's last byte), by route template.",
    ["route", "method", "status"],
    buckets=_DURATION_BUCKETS,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per request by model and type (input, output); the _sum series are the token totals.",
    [_OPERATION, _MODEL, "gen_ai_token_type"],
    buckets=_TOKEN_BUCKETS,
)
REQUEST_DURATION = Histogram(
    "gen_ai_server_request_duration_seconds",
    "Time from admission to the end of a metered request (generation or embeddings), by model and status.",
    [_OPERATION, _MODEL, "status"],
    buckets=_DURATION_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time from admission to the first generated token, by model.",
    [_OPERATION, _MODEL],
    buckets=_TTFT_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "Mean time between output tokens after the first, per request, by model.",
    [_OPERATION, _MODEL],
    buckets=_TPOT_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "portico_queue_depth",
    "Requests waiting for an engine slot, by model snapshot.",
    ["model"],
    multiprocess_mode="livesum",
)
QUEUE_WAIT = Histogram(
    "portico_queue_wait_seconds",
    "Time a request waited for an engine slot (0 when one was free), by model snapshot.",
    ["model"],
    buckets=_TTFT_BUCKETS,
)
BUSY_SLOTS = Gauge(
    "portico_engine_busy_slots",
    "Engine slots generating right now, by model snapshot (0 once idle: a slot is never leaked).",
    ["model"],
    multiprocess_mode="livesum",
)
ACTIVE_STREAMS = Gauge("portico_active_streams", "SSE responses being sent right now.", multiprocess_mode="livesum")
BATCH_SIZE = Histogram(
    "portico_engine_batch_size",
    "Tokens decoded together in one step of the embedded engine (prompt chunks and generating sequences).",
    buckets=_BATCH_BUCKETS,
)
CACHE_LOOKUPS = Counter(
    "portico_cache_lookups",
    "Response cache lookups by cache (exact, semantic) and result (hit, miss, bypass).",
    ["cache", "result"],
)
RATE_LIMITED = Counter(
    "portico_rate_limited_requests", "Requests refused by a key's limit, by the limit that tripped.", ["limit"]
)
CONTENT_POLICY = Counter(
    "portico_content_policy_actions",
    "Content policy actions, by side (input, output), action (blocked, stopped, failed, warned) and category.",
    ["side", "action", "category"],
)
MODERATION_TEXTS = Counter("portico_moderation_texts", "Texts scored by a moderation model, by model.", ["model"])
UPSTREAM_ERRORS = Counter(
    "portico_upstream_errors",
    "Failed calls to upstream deployments, by deployment and error code.",
    ["deployment", "code"],
)
CIRCUIT_OPEN = Gauge(
    "portico_upstream_circuit_open",
    "1 while an upstream deployment's circuit is open (or half-open) in any server process, else 0.",
    ["deployment"],
    multiprocess_mode="livemax",
)
GATEWAY_OVERHEAD = Histogram(
    "portico_gateway_overhead_seconds",
    "Portico's own share of a request sent upstream: its total time minus the time spent in upstream calls.",
    ["route"],
    buckets=_OVERHEAD_BUCKETS,
)


@contextmanager
def shared_across_processes() -> Iterator[None]:
    """While inside, server processes started from here write their samples to one fresh directory, which
    ``/metrics`` in any of them sums up; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="portico-metrics-") as directory:
        os.environ[MULTIPROCESS_ENV] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_ENV]


def multiprocess_enabled() -> bool:
    """Whether prometheus-client writes this process's samples to the shared directory."""
    return values.ValueClass is not values.MutexValue


def render() -> bytes:
    """The exposition text of every metric: summed over all server processes when there are several."""
    if not multiprocess_enabled():
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exiting() -> None:
    """Drop this process's live gauges (queue depth, streams, circuits) from the shared view."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# -- what the instrumented code calls ------------------------------------------------------------------


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_DURATION.labels(route, method, str(status)).observe(seconds)


def observe_usage(
    *,
    endpoint: str,
    model: str,
    status: int,
    prompt_tokens: int,
    completion_tokens: int,
    seconds: float,
    first_token_s: float | None,
) -> None:
    """One settled request: its tokens, its duration and, when it made tokens, TTFT and time per output token."""
    operation = _OPERATIONS.get(endpoint, endpoint)
    TOKEN_USAGE.labels(operation, model, "input").observe(prompt_tokens)
    if operation != "embeddings":
        TOKEN_USAGE.labels(operation, model, "output").observe(completion_tokens)
    REQUEST_DURATION.labels(operation, model, str(status)).observe(seconds)
    if first_token_s is None:
        return
    TIME_TO_FIRST_TOKEN.labels(operation, model).observe(first_token_s)
    if completion_tokens > 1:
        TIME_PER_OUTPUT_TOKEN.labels(operation, model).observe((seconds - first_token_s) / (completion_tokens - 1))


def queue_depth(model: str, waiting: int) -> None:
    QUEUE_DEPTH.labels(model).set(waiting)


def busy_slots(model: str, busy: int) -> None:
    BUSY_SLOTS.labels(model).set(busy)


def observe_queue_wait(model: str, seconds: float) -> None:
    QUEUE_WAIT.labels(model).observe(seconds)


def stream_opened() -> None:
    ACTIVE_STREAMS.inc()


def stream_closed() -> None:
    ACTIVE_STREAMS.dec()


def observe_batch(tokens: int) -> None:
    BATCH_SIZE.observe(tokens)


def cache_lookup(cache: str, result: str) -> None:
    CACHE_LOOKUPS.labels(cache, result).inc()


def rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


def content_policy_acted(side: str, action: str, categories: list[str]) -> None:
    for category in categories:
        CONTENT_POLICY.labels(side, action, category).inc()


def texts_moderated(model: str, count: int) -> None:
    MODERATION_TEXTS.labels(model).inc(count)


def upstream_failed(deployment: str, code: str) -> None:
    UPSTREAM_ERRORS.labels(deployment, code).inc()


def circuit_state(deployment: str, *, is_open: bool) -> None:
    CIRCUIT_OPEN.labels(deployment).set(1 if is_open else 0)


def observe_gateway_overhead(route: str, seconds: float) -> None:
    GATEWAY_OVERHEAD.labels(route).observe(max(0.0, seconds))
