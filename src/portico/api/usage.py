"""GET /v1/usage: tokens, cost and request counts for a time window, totalled and bucketed."""

from __future__ import annotations

from fastapi import APIRouter, Query
from starlette.responses import Response

from portico.api.deps import PrincipalDep, UsageDep, require_scope
from portico.api.rendering import error_responses, json_response
from portico.constants import Scope
from portico.schemas.usage import UsageBucketObject, UsageReport, UsageTotalsObject
from portico.storage.usage import UsageGroupBy, UsageTotals

router = APIRouter(tags=["usage"], dependencies=[require_scope(Scope.USAGE_READ)])


def _totals(totals: UsageTotals) -> dict[str, int | float]:
    return {
        "requests": totals.requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cached_tokens": totals.cached_tokens,
        "total_tokens": totals.prompt_tokens + totals.completion_tokens,
        "cost_usd": totals.cost_usd,
        "cancelled": totals.cancelled,
    }


@router.get("/v1/usage", response_model=UsageReport, responses=error_responses(400, 401, 403, 404))
async def get_usage(
    principal: PrincipalDep,
    service: UsageDep,
    start: float | None = Query(default=None, description="Unix seconds, inclusive."),
    end: float | None = Query(default=None, description="Unix seconds, exclusive."),
    group_by: UsageGroupBy | None = None,
    project: str | None = Query(
        default=None, description="A project id; default: the key's project (all projects with keys:admin)."
    ),
) -> Response:
    summary = await service.summarize(principal, project=project, start=start, end=end, group_by=group_by)
    return json_response(
        UsageReport(
            start=start,
            end=end,
            group_by=group_by,
            project=project,
            totals=UsageTotalsObject(**_totals(summary.totals)),
            buckets=[UsageBucketObject(key=bucket.key, **_totals(bucket)) for bucket in summary.buckets],
        )
    )
