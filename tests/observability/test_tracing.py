"""Tracing: one server span per request continuing the caller's trace, stage spans under it, and the trace passed
on to upstreams."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from portico.observability import tracing
from tests.conftest import asgi_client, auth_settings, bearer, echo_settings, make_key
from tests.upstream_mock import UPSTREAM_ALIAS, MockUpstream, upstream_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
CHAT = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


async def test_a_request_is_one_trace_continuing_the_callers(spans: InMemorySpanExporter) -> None:
    async with asgi_client(auth_settings()) as (client, app):
        key = await make_key(app, limits={"requests_per_minute": 100})
        headers = {**bearer(key), "traceparent": TRACEPARENT}
        response = await client.post("/v1/chat/completions", json={"model": "echo", **CHAT}, headers=headers)
        assert response.status_code == 200

    named = _by_name(spans.get_finished_spans())
    server = named["POST /v1/chat/completions"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    for stage in ("portico.auth", "portico.limits", "portico.queue_wait", "portico.engine"):
        span = named[stage]
        assert span.context.trace_id == server.context.trace_id
        assert span.parent is not None and span.parent.span_id == server.context.span_id, stage


async def test_the_trace_is_propagated_to_the_upstream(spans: InMemorySpanExporter) -> None:
    with MockUpstream() as upstream:
        async with asgi_client(upstream_settings(upstream)) as (client, _):
            body = {"model": UPSTREAM_ALIAS, **CHAT}
            sync = await client.post("/v1/chat/completions", json=body, headers={"traceparent": TRACEPARENT})
            assert sync.is_success
            streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
            assert streamed.is_success

    calls = [span for span in spans.get_finished_spans() if span.name == "portico.upstream"]
    sent = [request.headers["traceparent"] for request in upstream.requests]
    assert len(calls) == len(sent) == 2
    assert sent[0] == f"00-{TRACE_ID}-{calls[0].context.span_id:016x}-01"
    assert sent[1].split("-")[2] == f"{calls[1].context.span_id:016x}"


async def test_no_traceparent_is_sent_upstream_while_tracing_is_off() -> None:
    with MockUpstream() as upstream:
        async with asgi_client(upstream_settings(upstream)) as (client, _):
            body = {"model": UPSTREAM_ALIAS, **CHAT}
            sync = await client.post("/v1/chat/completions", json=body, headers={"traceparent": TRACEPARENT})
            assert sync.is_success

    assert "traceparent" not in upstream.requests[0].headers


async def test_the_server_span_names_the_model_that_answered(spans: InMemorySpanExporter) -> None:
    async with asgi_client(echo_settings()) as (client, _):
        assert (await client.post("/v1/chat/completions", json={"model": "echo", **CHAT})).is_success

    named = _by_name(spans.get_finished_spans())
    assert named["POST /v1/chat/completions"].attributes["gen_ai.request.model"] == "echo-2026-01-01"  # type: ignore[index]


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver on loopback: keeps each export's path and protobuf body."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        """Quiet: the test reads what was received."""


async def test_spans_are_exported_over_otlp_to_the_endpoint_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector) as collector:
        threading.Thread(target=collector.serve_forever, daemon=True).start()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "portico-under-test")
        async with asgi_client(echo_settings(tracing={"enabled": True})) as (client, _):
            assert (await client.post("/v1/chat/completions", json={"model": "echo", **CHAT})).is_success
        collector.shutdown()

    exported = b"".join(body for path, body in _Collector.received if path == "/v1/traces")
    for expected in (b"portico-under-test", b"POST /v1/chat/completions", b"portico.queue_wait", b"portico.engine"):
        assert expected in exported
