"""``portico usage``: tokens, requests and cost per day and model, from a server's ``GET /v1/usage``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from portico.cli.common import out
from portico.cli.remote import ApiKeyOption, UrlOption
from portico_client import Portico
from portico_client._params import UsageParams

DAY_S = 86_400


def usage(
    days: Annotated[int, typer.Option(min=1, max=366, help="How many days back, today included.")] = 7,
    project: Annotated[str | None, typer.Option(help="A project id (keys:admin keys may name any).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """A table per day and model: requests, tokens and cost (needs a key with usage:read)."""
    today = int(time.time()) // DAY_S * DAY_S
    start = today - (days - 1) * DAY_S
    table = Table("day (UTC)", "model", "requests", "prompt", "completion", "cached", "cost (USD)", title="Usage")
    with Portico(base_url=url, api_key=api_key) as client:
        days_params: UsageParams = {"start": start, "group_by": "day"}
        if project:
            days_params["project"] = project
        report = client.usage.get(**days_params)
        for day in report.buckets:
            if day.key is None:
                continue
            begin = int(datetime.strptime(day.key, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
            day_params: UsageParams = {**days_params, "start": begin, "end": begin + DAY_S, "group_by": "model"}
            models = client.usage.get(**day_params)
            for bucket in models.buckets:
                table.add_row(
                    day.key,
                    bucket.key or "-",
                    str(bucket.requests),
                    f"{bucket.prompt_tokens:,}",
                    f"{bucket.completion_tokens:,}",
                    f"{bucket.cached_tokens:,}",
                    f"{bucket.cost_usd:.6f}",
                )
    totals = report.totals
    table.add_section()
    table.add_row(
        "total",
        "",
        str(totals.requests),
        f"{totals.prompt_tokens:,}",
        f"{totals.completion_tokens:,}",
        f"{totals.cached_tokens:,}",
        f"{totals.cost_usd:.6f}",
    )
    out.print(table)
