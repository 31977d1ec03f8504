"""Limits: what the full check (auth + every limit + the usage record) adds to a request, in-process and with Redis.

Two measurements, one run:

- **Component** (the headline numbers): for each limiter backend (``memory``, ``redis``) a real control plane
  (``ControlPlane.open``: SQLite in a temporary data dir, the authenticator, the meter and its usage recorder) and
  one API key whose policy sets every limit (requests and tokens per minute with a burst, tokens per day,
  concurrency, daily and monthly budgets), all far above what the run uses. Each iteration does what a request
  does on its hot path: ``authenticate(token)``, ``meter.admit(...)`` (one atomic reserve against every limit),
  ``ticket.settle(...)`` (the usage record; the limiter's settle is spawned as a background task). That is the
  **request path** row. The **+ settle awaited** row also waits for that background settle (in Redis: the
  second round trip) before the clock stops. Background work runs when it would in the server (default settings):
  the usage flush (every 500 records or 1 s) and the key cache refresh (every 0.5 s) land in whichever iteration
  they interrupt, which shows in p99 and the mean. At the end the usage records are written; their count must be
  warm-up + ``--requests``, or the run fails. Runs on uvloop, as ``portico serve`` does.
- **HTTP**: three ``portico serve`` processes with the echo engine at once, (a) auth off and no limits (the
  baseline; it still records usage), (b) auth + every limit in memory, (c) auth + every limit in Redis. Small
  non-streamed ``/v1/completions`` requests (``max_tokens`` 1) go to them in turn, one at a time, each server
  over its own keep-alive connection, so drift on a shared machine hits all three alike. "added p50" is a
  server's p50 minus the baseline's.

Targets (component request-path p50): under 0.3 ms in-process, under 1 ms with Redis on loopback; the exit
status is 1 when one is missed. Redis must be running at ``--redis-url``; the run deletes the keys it made there.

Run from the repository root:

    .venv/bin/python benchmarks/limits.py --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import uvloop
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from portico.auth.principal import LIMIT_FIELDS
from portico.constants import REDIS_PREFIX_LIMITS, Scope
from portico.services.admin import AdminService
from portico.services.control_plane import ControlPlane, open_admin
from portico.settings import Settings
from portico.storage.database import Database
from portico.storage.models import UsageRecord
from portico.usage.meter import Meter
from portico.usage.tokens import TokenUsage
from processes import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
PORTICO = Path(sys.executable).with_name("portico")
BACKENDS = ("memory", "redis")
TARGET_P50_MS = {"memory": 0.3, "redis": 1.0}

ECHO_ALIAS = "echo"
ECHO_MODEL: dict[str, Any] = {
    "alias": ECHO_ALIAS,
    "snapshot": "echo-2026-01-01",
    "engine": "echo",
    "context_window": 256,
    "parallel_slots": 4,
    # A price, so the budgets have a cost to reserve and settle.
    "pricing": {"input_per_million": 0.15, "output_per_million": 0.60},
}
# Every limit set, far above a run's use. Bucket levels are capacity * 6e7 units and must stay below 2**53
# (Lua's exact integers), hence not simply 10**12 everywhere.
LIMITS: dict[str, Any] = {
    "requests_per_minute": 1_000_000,
    "request_burst": 1_000_000,
    "tokens_per_minute": 100_000_000,
    "tokens_per_day": 10**12,
    "max_concurrent": 1_000,
    "budget_per_day_usd": 1_000_000.0,
    "budget_per_month_usd": 1_000_000.0,
}
PROMPT_TOKENS, MAX_TOKENS, COMPLETION_TOKENS = 24, 16, 8
ENDPOINT = "/v1/completions"
COMPLETION_BODY = json.dumps({"model": ECHO_ALIAS, "prompt": "Hello there", "max_tokens": 1}).encode()
COLUMNS = ["measurement", "backend", "p50 ms", "p95 ms", "p99 ms", "mean ms", "added p50 ms", "p50 target ms", "met?"]

# Wide enough for the table when the output is a file or a pipe (rich assumes 80 columns there).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)


@dataclass(frozen=True, slots=True)
class Setup:
    requests: int
    warmup: int
    http_requests: int
    redis_url: str


@dataclass(frozen=True, slots=True)
class Series:
    """One row of the table: latencies in ms, and the target its p50 must meet, if any."""

    measurement: str
    backend: str
    samples_ms: list[float]
    target_ms: float | None = None
    baseline: Series | None = None  # for "added p50"

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def met(self) -> bool | None:
        return None if self.target_ms is None else self.p50 < self.target_ms

    def row(self) -> list[str]:
        added = "—" if self.baseline is None else f"{self.p50 - self.baseline.p50:+.3f}"
        target = "—" if self.target_ms is None else f"< {self.target_ms:g}"
        met = {None: "—", True: "yes", False: "NO"}[self.met]
        return [
            self.measurement,
            self.backend,
            f"{self.p50:.3f}",
            f"{self.quantile(0.95):.3f}",
            f"{self.quantile(0.99):.3f}",
            f"{statistics.fmean(self.samples_ms):.3f}",
            added,
            target,
            met,
        ]


# -- shared ----------------------------------------------------------------------------------------------
def require_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(
            f"Redis is not reachable at {url} ({exc}). Start it (e.g. `redis-server --daemonize yes`) "
            "or pass --redis-url."
        ) from exc
    finally:
        client.close()


def forget_redis_keys(url: str, key_ids: Sequence[str]) -> None:
    """Delete the limit state of the run's keys (all of a key's names share the ``{key id}`` hash tag)."""
    client = redis.Redis.from_url(url)
    try:
        for key_id in key_ids:
            names = list(client.scan_iter(match=f"{REDIS_PREFIX_LIMITS}{{{key_id}}}:*", count=1000))
            if names:
                client.delete(*names)
    finally:
        client.close()


def settings_overrides(data_dir: Path, backend: str | None, redis_url: str) -> dict[str, Any]:
    """``backend`` None: auth off, the local principal on the unlimited tier (the baseline)."""
    return {
        "data_dir": str(data_dir),
        "log_level": "warning",
        "models": [ECHO_MODEL],
        "auth": {"enabled": backend is not None},
        "limits": {"backend": backend or "memory"},
        "redis_url": redis_url,
    }


async def create_limited_key(admin: AdminService, organization_id: str) -> tuple[str, str]:
    """A key with every limit set; returns (key id, plaintext)."""
    created = await admin.create_key(
        organization_id,
        project="default",
        name="bench-limits",
        scopes=[Scope.INFERENCE],
        tier="unlimited",
        limits=LIMITS,
    )
    return created.key.id, created.plaintext


async def count_usage_records(settings: Settings, key_id: str | None) -> int:
    database = Database(settings.database)
    try:
        async with database.session() as session:
            query = select(func.count()).select_from(UsageRecord)
            query = query.where(UsageRecord.key_id == key_id if key_id else UsageRecord.key_id.is_(None))
            return int(await session.scalar(query) or 0)
    finally:
        await database.close()


@contextmanager
def data_dir(name: str) -> Iterator[Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"limits-{name}-", dir=WORK))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- component -------------------------------------------------------------------------------------------
async def settled(meter: Meter) -> None:
    """Wait for the limiter settles the meter spawned (what ``Meter.close`` waits for), here one request's."""
    for task in tuple(meter._settling):
        await task


async def measure_component(backend: str, setup: Setup, directory: Path) -> tuple[Series, Series]:
    settings = Settings(**settings_overrides(directory, backend, setup.redis_url))
    control = await ControlPlane.open(settings)
    key_id = ""
    try:
        key_id, token = await create_limited_key(control.admin, control.local_principal.organization_id)
        authenticator, meter = control.authenticator, control.meter
        assert authenticator is not None
        pricing = settings.models[0].pricing
        request_path: list[float] = []
        with_settle: list[float] = []
        for index in range(setup.warmup + setup.requests):
            start = time.perf_counter()
            principal = await authenticator.authenticate(token)
            ticket = await meter.admit(
                principal,
                endpoint=ENDPOINT,
                model=ECHO_ALIAS,
                pricing=pricing,
                prompt_tokens=PROMPT_TOKENS,
                max_completion_tokens=MAX_TOKENS,
            )
            ticket.settle(TokenUsage(PROMPT_TOKENS, COMPLETION_TOKENS), status=200)
            answered = time.perf_counter()
            await settled(meter)
            done = time.perf_counter()
            if ticket.reservation is None or not ticket.reservation.enforced:
                raise SystemExit(f"{backend}: a request was admitted without checking its limits (Redis down?)")
            if index >= setup.warmup:
                request_path.append((answered - start) * 1000)
                with_settle.append((done - start) * 1000)
        unset = [name for name in LIMIT_FIELDS if getattr(principal.policy, name) is None]
        if unset:
            raise SystemExit(f"{backend}: the key's policy leaves limits unset: {', '.join(unset)}")
    finally:
        await control.close()
        if key_id:
            forget_redis_keys(setup.redis_url, [key_id])
    written = await count_usage_records(settings, key_id)
    if written != setup.warmup + setup.requests:
        raise SystemExit(f"{backend}: {written} usage records written, expected {setup.warmup + setup.requests}")
    return (
        Series("check: request path", backend, request_path, TARGET_P50_MS[backend]),
        Series("check: + settle awaited", backend, with_settle),
    )


async def measure_components(setup: Setup) -> list[Series]:
    rows: list[Series] = []
    for backend in BACKENDS:
        with data_dir(backend) as directory:
            rows += await measure_component(backend, setup, directory)
    return rows


# -- HTTP ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Server:
    name: str
    backend: str | None  # None: the baseline (auth off)
    directory: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client
    settings: Settings
    key_id: str | None


def server_environment(overrides: dict[str, Any]) -> dict[str, str]:
    """The settings as ``PORTICO_*`` variables, nested ones as JSON (``main`` cleared the caller's)."""
    env = dict(os.environ)
    for name, value in overrides.items():
        env[f"PORTICO_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


async def prepare_key(settings: Settings) -> tuple[str, str]:
    database, admin = await open_admin(settings)
    try:
        organization = await admin.default_organization()
        return await create_limited_key(admin, organization.id)
    finally:
        await database.close()


@contextmanager
def running_server(name: str, backend: str | None, setup: Setup, directory: Path) -> Iterator[Server]:
    """A ``portico serve`` subprocess (not yet known to be ready); stopped with SIGTERM on the way out."""
    overrides = settings_overrides(directory, backend, setup.redis_url)
    settings = Settings(**overrides)
    key_id, headers = None, {"content-type": "application/json"}
    if backend is not None:
        key_id, token = asyncio.run(prepare_key(settings))  # in its data dir, before the server opens it
        headers["authorization"] = f"Bearer {token}"
    port = free_port()
    with (directory / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [str(PORTICO), "serve", "--port", str(port)], env=server_environment(overrides), stdout=log, stderr=log
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30, trust_env=False) as client:
            yield Server(name, backend, directory, process, client, settings, key_id)
    finally:
        stop(process)
        if key_id is not None:
            forget_redis_keys(setup.redis_url, [key_id])


def wait_until_ready(server: Server, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.directory / "server.log").read_text(errors="replace")
            raise SystemExit(f"the {server.name} server exited with status {server.process.returncode}:\n{log}")
        try:
            if server.client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the {server.name} server was not ready within {timeout_s:g} s")


def post_completion(server: Server) -> httpx.Response:
    response = server.client.post(ENDPOINT, content=COMPLETION_BODY)
    if response.status_code != 200:
        raise SystemExit(f"{server.name}: {response.status_code} {response.text}")
    return response


def interleaved_latencies(servers: Sequence[Server], setup: Setup) -> list[list[float]]:
    """Requests to each server in turn (the first one rotating), so drift on the machine hits all alike."""
    for server in servers:
        limited = "x-ratelimit-limit-requests" in post_completion(server).headers
        if limited != (server.backend is not None):
            raise SystemExit(f"{server.name}: rate-limit headers {'present' if limited else 'missing'}")
    for _ in range(http_warmup(setup)):
        for server in servers:
            post_completion(server)
    samples: list[list[float]] = [[] for _ in servers]
    for round_index in range(setup.http_requests):
        for offset in range(len(servers)):
            position = (round_index + offset) % len(servers)
            start = time.perf_counter()
            post_completion(servers[position])
            samples[position].append((time.perf_counter() - start) * 1000)
    return samples


def http_warmup(setup: Setup) -> int:
    return max(1, setup.warmup // 5)


def measure_http(setup: Setup) -> list[Series]:
    configurations = [
        ("HTTP: auth off, no limits", None),
        ("HTTP: auth + all limits", "memory"),
        ("HTTP: auth + all limits", "redis"),
    ]
    with ExitStack() as directories:
        with ExitStack() as processes:
            servers = [
                processes.enter_context(
                    running_server(name, backend, setup, directories.enter_context(data_dir(backend or "none")))
                )
                for name, backend in configurations
            ]
            for server in servers:
                wait_until_ready(server)
            samples = interleaved_latencies(servers, setup)
        # Stopped (SIGTERM): each server has written its usage records. One per request, or the run fails.
        expected = 1 + http_warmup(setup) + setup.http_requests
        for server in servers:
            written = asyncio.run(count_usage_records(server.settings, server.key_id))
            if written != expected:
                raise SystemExit(f"{server.name}: {written} usage records written, expected {expected}")
    baseline = Series(servers[0].name, "—", samples[0])
    return [baseline] + [
        Series(server.name, server.backend or "—", server_samples, baseline=baseline)
        for server, server_samples in zip(servers[1:], samples[1:], strict=True)
    ]


# -- report ----------------------------------------------------------------------------------------------
def print_rich(rows: list[Series], title: str) -> None:
    table = Table(title=title)
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 2 else "right")
    for series in rows:
        table.add_row(*series.row(), style="red" if series.met is False else None)
    console.print(table)


def print_markdown(rows: list[Series]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join([":---", ":---"] + ["---:"] * (len(COLUMNS) - 2)) + "|")
    for series in rows:
        print("| " + " | ".join(series.row()) + " |")


def parse_args() -> tuple[Setup, bool]:
    parser = argparse.ArgumentParser(description="Latency added by auth + every limit + the usage record.")
    parser.add_argument("--requests", type=int, default=5000, help="timed component iterations per backend")
    parser.add_argument("--warmup", type=int, default=500, help="untimed component iterations first (default: 500)")
    parser.add_argument(
        "--http-requests", type=int, default=1000, help="timed HTTP requests per server; 0 skips HTTP (default: 1000)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the redis backend")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the docs)")
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    return Setup(args.requests, args.warmup, args.http_requests, args.redis_url), args.markdown


def main() -> None:
    setup, markdown = parse_args()
    require_redis(setup.redis_url)
    # Only the settings made here apply, in this process and in the servers: no PORTICO_* or portico.toml.
    for name in [name for name in os.environ if name.startswith("PORTICO_")]:
        del os.environ[name]
    os.environ["PORTICO_CONFIG"] = str(WORK / "absent.toml")
    logging.getLogger("portico").setLevel(logging.ERROR)  # e.g. the "no API keys yet" hint on a fresh database
    load_before = os.getloadavg()[0]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the server's loop
        rows = runner.run(measure_components(setup))
    if setup.http_requests > 0:
        rows += measure_http(setup)
    title = f"Added latency of auth + limits + usage record ({setup.requests} component iterations per backend)"
    if markdown:
        print_markdown(rows)
    else:
        print_rich(rows, title)
    console.print(
        f"usage records written = warm-up + timed iterations ({setup.warmup + setup.requests}) per backend; "
        f"HTTP: {setup.http_requests} requests per server, interleaved; 1-min load average at start {load_before:.2f}",
        style="dim",
    )
    if any(series.met is False for series in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
