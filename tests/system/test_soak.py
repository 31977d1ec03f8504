"""Soak: mixed traffic against one `portico serve` for ``PORTICO_SOAK_S`` seconds (default 600, the issue's ten
minutes): plain and streamed chat, streams the client leaves half-way, requests it gives up on, jobs and
cancelled jobs. Afterwards the server's memory has not grown past a generous bound, no request waits for or
holds an engine slot, no stream is open, every job is finished, and nothing went wrong along the way.

The summary line it prints (requests by kind, RSS at the start and the end) is what docs/reliability.md quotes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from portico.storage.database import Database
from portico.storage.resources import Job
from tests.databases import POSTGRES_URL, postgres_schema
from tests.observability.support import parse, value
from tests.system.servers import PORTICO, free_port, portico_env, wait_ready

pytestmark = pytest.mark.slow

SOAK_S = float(os.environ.get("PORTICO_SOAK_S", "600"))
WARM_UP_S = min(30.0, SOAK_S / 4)  # caches, pools and allocator arenas fill up before the first RSS sample
CLIENTS = 6
RSS_GROWTH_BOUND_MB = 50.0
MODEL = "echo-2026-01-01"
CONFIG = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 1024
parallel_slots = 4
echo = { tokens_per_second = 100 }

[cache]
enabled = false
"""
SHORT = 16  # tokens: 0.16 s at the echo model's pace
LONG = 200  # tokens: 2 s, long enough to be left or cancelled half-way
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class Traffic:
    http: httpx.AsyncClient
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def prompt(self, tokens: int) -> str:
        """A prompt never sent before (so nothing is served from a cache), as long as the answer should be."""
        number = next(self.numbers)
        return " ".join(f"r{number}w{i}" for i in range(tokens))

    def chat_body(self, tokens: int, *, stream: bool) -> dict[str, object]:
        message = {"role": "user", "content": self.prompt(tokens)}
        return {"model": "echo", "messages": [message], "max_tokens": tokens, "stream": stream}

    def job_body(self, tokens: int) -> dict[str, object]:
        request = {"model": "echo", "prompt": self.prompt(tokens), "max_tokens": tokens}
        return {"type": "completion", "request": request}

    def expect(self, kind: str, ok: bool, what: object) -> None:
        self.counts[kind] += 1
        if not ok:
            self.failures.append(f"{kind}: {what}")

    async def sync(self) -> None:
        response = await self.http.post("/v1/chat/completions", json=self.chat_body(SHORT, stream=False))
        self.expect("sync", response.status_code == 200, response.text)

    async def stream(self) -> None:
        async with self.http.stream(
            "POST", "/v1/chat/completions", json=self.chat_body(SHORT, stream=True)
        ) as response:
            payloads = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        self.expect("stream", payloads[-1:] == ["data: [DONE]"], payloads[-1:])

    async def disconnect(self) -> None:
        """A stream the client leaves after three events."""
        events = 0
        async with self.http.stream("POST", "/v1/chat/completions", json=self.chat_body(LONG, stream=True)) as r:
            async for line in r.aiter_lines():
                events += line.startswith("data: ")
                if events == 3:
                    break
        self.expect("disconnect", events == 3, f"{r.status_code}, {events} events")

    async def abort(self) -> None:
        """A non-streamed request the client gives up on before the answer is ready."""
        try:
            response = await self.http.post(
                "/v1/chat/completions", json=self.chat_body(LONG, stream=False), timeout=0.5
            )
        except httpx.ReadTimeout:
            self.expect("abort", True, None)
            return
        self.expect("abort", False, f"answered before the client gave up: {response.status_code}")

    async def job(self) -> None:
        submitted = await self.http.post("/v1/jobs", json=self.job_body(SHORT))
        if submitted.status_code != 202:
            self.expect("job", False, submitted.text)
            return
        job = submitted.json()
        deadline = time.monotonic() + 60
        while job["status"] not in TERMINAL and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            job = (await self.http.get(f"/v1/jobs/{job['id']}")).json()
        self.expect("job", job["status"] == "succeeded", json.dumps(job)[:300])

    async def cancel(self) -> None:
        """A job cancelled while it is queued or running."""
        submitted = await self.http.post("/v1/jobs", json=self.job_body(LONG))
        if submitted.status_code != 202:
            self.expect("cancel", False, submitted.text)
            return
        await asyncio.sleep(0.3)
        cancelled = await self.http.post(f"/v1/jobs/{submitted.json()['id']}/cancel")
        self.expect("cancel", cancelled.status_code == 200, cancelled.text)

    def kinds(self) -> list[Callable[[], Awaitable[None]]]:
        return [self.sync, self.stream, self.disconnect, self.abort, self.job, self.cancel]


async def _client(traffic: Traffic, offset: int, until: float) -> None:
    kinds = traffic.kinds()
    for turn in itertools.count(offset):
        if time.monotonic() >= until:
            return
        try:
            await kinds[turn % len(kinds)]()
        except httpx.HTTPError as exc:
            traffic.failures.append(f"{kinds[turn % len(kinds)].__name__}: {exc!r}")


async def _unfinished_jobs(schema: str) -> int:
    database = Database(POSTGRES_URL, schema=schema)
    try:
        async with database.session() as session:
            query = select(func.count()).select_from(Job).where(Job.status.in_(["queued", "running"]))
            return int(await session.scalar(query) or 0)
    finally:
        await database.close()


@dataclass
class Server:
    url: str
    pid: int
    schema: str
    log: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "portico.toml").write_text(CONFIG)
    with postgres_schema("soak") as schema:
        env = portico_env(
            tmp_path,
            PORTICO_DATABASE_URL=POSTGRES_URL,
            PORTICO_DATABASE_SCHEMA=schema,
            PORTICO_AUTH__ENABLED="false",
            PORTICO_JOBS__POLL_INTERVAL_S="0.2",
            PORTICO_LOG_LEVEL="warning",  # an access log line per request would only fill the disk
        )
        port = free_port()
        log = (tmp_path / "serve.log").open("w")
        process = subprocess.Popen(
            [str(PORTICO), "serve", "--port", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(process, url, timeout_s=60)
            yield Server(url, process.pid, schema, tmp_path / "serve.log")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            log.close()


@pytest.mark.timeout(SOAK_S + 300)
async def test_mixed_traffic_leaves_no_leaks(server: Server) -> None:
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        traffic = Traffic(http)
        started = time.monotonic()
        clients = [asyncio.create_task(_client(traffic, offset, started + SOAK_S)) for offset in range(CLIENTS)]
        await asyncio.sleep(WARM_UP_S)
        rss_start = _rss_mb(server.pid)
        await asyncio.gather(*clients)

        deadline = time.monotonic() + 60  # cancelled jobs settle, left streams finish unwinding
        while (unfinished := await _unfinished_jobs(server.schema)) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)
        samples = parse((await http.get("/metrics")).text)
        rss_end = _rss_mb(server.pid)

    total = sum(traffic.counts.values())
    by_kind = " ".join(f"{kind}={count}" for kind, count in sorted(traffic.counts.items()))
    print(
        f"\nsoak: {SOAK_S:g} s, {CLIENTS} clients, {total} requests ({by_kind}); "
        f"RSS after {WARM_UP_S:g} s warm-up {rss_start:.1f} MB, at the end {rss_end:.1f} MB "
        f"({rss_end - rss_start:+.1f} MB)"
    )
    assert not traffic.failures, f"{len(traffic.failures)} failures, first ones: {traffic.failures[:5]}"
    assert set(traffic.counts) == {"sync", "stream", "disconnect", "abort", "job", "cancel"}
    assert unfinished == 0, f"{unfinished} jobs are still queued or running"
    assert value(samples, "portico_queue_depth", model=MODEL) == 0
    busy_slots = ("portico_engine_busy_slots", frozenset({("model", MODEL)}))
    assert samples[busy_slots] == 0  # the series exists: slots were taken, and all were given back
    assert value(samples, "portico_active_streams") == 0
    errors = [line for line in server.log.read_text().splitlines() if '"level":"error"' in line]
    assert not errors, f"the server logged {len(errors)} errors, the first: {errors[0][:500]}"
    assert rss_end - rss_start < RSS_GROWTH_BOUND_MB, f"RSS grew from {rss_start:.1f} MB to {rss_end:.1f} MB"
