"""GET /metrics: every metric in the Prometheus text format, summed over all server processes."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import PlainTextResponse, Response

from portico.observability import metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics() -> Response:
    """Open like /healthz: for the scraper on the private network, never for API clients (`metrics.enabled`)."""
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)
