"""OpenTelemetry tracing: a span per request, child spans for its stages, ``traceparent`` in and out.

Off unless ``tracing.enabled`` is set, and then it needs the ``otel`` extra (``pip install 'portico[otel]'``).
While off, ``span`` hands back one shared do-nothing context manager and ``trace_headers`` an empty dict: the
instrumented code pays a function call and nothing else. When on, spans go to the OTLP/HTTP exporter, which reads
the standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER``…) itself. The tracer is per process: each server worker sets up its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from portico.errors import PorticoError

SERVICE_NAME = "portico"
_OFF: AbstractContextManager[Any] = nullcontext()
_tracer: Any = None  # an opentelemetry Tracer while tracing is on (the package is optional, hence Any)
_provider: Any = None


class TracingUnavailable(PorticoError):
    """``tracing.enabled`` without the OpenTelemetry SDK installed."""


def configure_tracing(enabled: bool) -> None:
    """Turn tracing on with the OTLP exporter configured from ``OTEL_*``, or leave it off."""
    if not enabled:
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "tracing.enabled is set but the OpenTelemetry SDK is not installed. "
            "Install it with: pip install 'portico[otel]' (or set PORTICO_TRACING__ENABLED=false)."
        ) from exc
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use_tracer_provider(provider)


def use_tracer_provider(provider: Any) -> None:
    """Send spans to ``provider`` (an SDK ``TracerProvider``; tests pass one with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("portico")


def shutdown_tracing() -> None:
    """Export the spans still buffered, then stop tracing."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def span(name: str, **attributes: str | int | float | bool) -> AbstractContextManager[Any]:
    """A child span of the current one, around a stage of the request (auth, limits, queue wait, engine call)."""
    if _tracer is None:
        return _OFF
    started: AbstractContextManager[Any] = _tracer.start_as_current_span(name, attributes=attributes)
    return started


def server_span(method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> AbstractContextManager[Any]:
    """The request's own span, continuing the client's trace when it sent a W3C ``traceparent``; yields the span
    (None while tracing is off) for ``finish_server_span``."""
    if _tracer is None:
        return _OFF
    return _server_span(method, path, headers)


@contextmanager
def _server_span(method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> Iterator[Any]:
    from opentelemetry import propagate, trace

    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    attributes = {"http.request.method": method, "url.path": path}
    with _tracer.start_as_current_span(
        f"{method} {path}", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER, attributes=attributes
    ) as current:
        yield current


def finish_server_span(current: Any, *, route: str, status: int, model: str | None) -> None:
    """Name the span after the route template and record how the request ended."""
    if current is None:
        return
    from opentelemetry.trace import StatusCode

    current.update_name(f"{current.attributes['http.request.method']} {route}")
    current.set_attribute("http.route", route)
    current.set_attribute("http.response.status_code", status)
    if model is not None:
        current.set_attribute("gen_ai.request.model", model)
    if status >= 500:
        current.set_status(StatusCode.ERROR)


def trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, for a call to an upstream; empty while off."""
    if _tracer is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
