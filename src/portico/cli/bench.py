"""``portico bench``: a quick throughput and time-to-first-token check against a running server, via the SDK."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from portico.cli.common import out
from portico.cli.remote import ApiKeyOption, UrlOption, percentile
from portico_client import AsyncPortico, PorticoError


@dataclass(slots=True)
class Results:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def _one(client: AsyncPortico, model: str, prompt: str, max_tokens: int, results: Results) -> None:
    """One streamed request: its latency, time to first token and tokens, or its error code."""
    started, first = time.perf_counter(), None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
    except PorticoError as exc:
        code = getattr(exc, "code", None) or type(exc).__name__
        results.errors[code] = results.errors.get(code, 0) + 1
        return
    results.latencies.append(time.perf_counter() - started)
    if first is not None:
        results.ttfts.append(first - started)
    if stream.usage is not None:
        results.completion_tokens += stream.usage.completion_tokens


async def _run(
    url: str | None, api_key: str | None, model: str, prompt: str, requests: int, concurrency: int, max_tokens: int
) -> tuple[Results, float]:
    results = Results()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(requests):
        queue.put_nowait(number)
    async with AsyncPortico(base_url=url, api_key=api_key, max_retries=0) as client:
        with Progress(console=out, transient=True) as progress:
            task = progress.add_task("requests", total=requests)

            async def worker() -> None:
                while not queue.empty():
                    queue.get_nowait()
                    await _one(client, model, prompt, max_tokens, results)
                    progress.advance(task)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return results, time.perf_counter() - started


def bench(
    model: Annotated[str, typer.Option(help="The model to load.")] = "smollm2",
    requests: Annotated[int, typer.Option(min=1, help="Requests in all.")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once (closed loop).")] = 4,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of each request.")] = 64,
    prompt: Annotated[str, typer.Option(help="The user message sent.")] = "Write a short story about a lighthouse.",
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Streamed chat requests at a fixed concurrency: requests/s, output tokens/s, latency and TTFT."""
    results, elapsed = asyncio.run(_run(url, api_key, model, prompt, requests, concurrency, max_tokens))
    table = Table("metric", "value", title=f"portico bench: {model}, {requests} requests, concurrency {concurrency}")
    done = len(results.latencies)
    table.add_row("succeeded / failed", f"{done} / {sum(results.errors.values())}")
    for code, count in sorted(results.errors.items()):
        table.add_row(f"  {code}", str(count))
    table.add_row("requests/s", f"{done / elapsed:.2f}")
    table.add_row("output tokens/s", f"{results.completion_tokens / elapsed:.1f}")
    for name, values in (("latency", results.latencies), ("time to first token", results.ttfts)):
        table.add_row(
            f"{name} p50 / p95 (ms)", f"{percentile(values, 0.5) * 1000:.0f} / {percentile(values, 0.95) * 1000:.0f}"
        )
    out.print(table)
    if results.errors and not done:
        raise typer.Exit(1)
