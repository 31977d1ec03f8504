"""``[metrics]`` and ``[tracing]``: what Portico tells operators about itself (docs/observability.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    """``[metrics]``: the Prometheus endpoint (docs/observability.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Serve `GET /metrics` (Prometheus text, summed over every server process; no API key: "
        "keep the port private or filter the path at the proxy).",
    )


class TracingSettings(BaseModel):
    """``[tracing]``: OpenTelemetry spans over OTLP/HTTP (docs/observability.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="Export a span per request (auth, limits, queue wait, engine and upstream calls as children) "
        "to the OTLP endpoint in `OTEL_EXPORTER_OTLP_ENDPOINT`; needs the `otel` extra.",
    )
