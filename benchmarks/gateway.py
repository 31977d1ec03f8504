"""Gateway: Portico proxying an upstream vs LiteLLM's proxy vs the upstream called directly, in one run.

A fast mock OpenAI-compatible upstream (``benchmarks/mock_upstream.py``, its own process) answers every arm:

- **direct**: the mock itself, the baseline.
- **Portico**: ``portico serve --workers 1`` with the mock as an ``upstream`` model, auth on, one API key whose
  tier sets every limit (requests and tokens per minute, tokens per day, concurrency, daily and monthly budgets)
  far above what the run uses, so each is checked and none trips; limits in memory (one process); usage records
  on (the default). After the arm, the usage records written must equal the requests sent, or the run fails.
- **LiteLLM**: ``litellm --num_workers 1`` (``litellm[proxy]``, installed by this script into its own virtualenv
  in ``benchmarks/.work/``, never a project dependency), the mock as ``openai/mock-gpt``, called with its master
  key. Its virtual keys need a database through Prisma, whose engine binaries are downloaded on first use; on an
  offline machine they cannot be, so this arm runs without a database, virtual keys or spend tracking (less work
  than Portico does). Telemetry and the remote model-cost map are off.

One load generator for every arm: a closed loop of C keep-alive HTTP/1.1 connections (asyncio on uvloop, the
responses parsed by httptools: cheaper than an HTTP library on a machine the client shares with the servers),
each sending ``POST /v1/chat/completions`` back to back until the fixed number of requests is done, after a
warm-up. Non-stream requests and stream requests (32 content chunks, ``stream_options.include_usage``) are
measured separately at each concurrency. A request counts as an error unless it answers 200 with the whole
text (and, streamed, ``data: [DONE]``). Per arm: requests/s, p50/p99 latency (streams: to the last byte), the
added p50/p99 over direct, time to the first content chunk (streams), and the server's process tree's CPU
seconds per 1,000 requests and peak resident memory (read from ``/proc``; for a proxy its own tree, without
the mock). Targets, per mode and concurrency: Portico ≥ 5x LiteLLM's requests/s and Portico's added p99 at most
a fifth of LiteLLM's; the exit status is 1 when one is missed.

Run from the repository root (about 5 minutes; the first run also installs LiteLLM):

    .venv/bin/python benchmarks/gateway.py --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httptools
import httpx
import uvloop
from rich.console import Console
from rich.table import Table

from mock_upstream import CONTENT_CHUNKS
from processes import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
PORTICO = Path(sys.executable).with_name("portico")
MOCK = Path(__file__).resolve().with_name("mock_upstream.py")
LITELLM_VENV = WORK / "litellm-venv"
LITELLM = LITELLM_VENV / "bin" / "litellm"
ARMS = ("direct", "portico", "litellm")
MODES = ("non-stream", "stream")
ALIAS = "mock-gpt"
LITELLM_MASTER_KEY = "sk-bench-master-key"
REQUEST_TIMEOUT_S = 60
# Every limit set, far above a run's use (as in benchmarks/limits.py), so each is checked and none trips.
BENCH_TIER = {
    "name": "bench",
    "requests_per_minute": 1_000_000,
    "request_burst": 1_000_000,
    "tokens_per_minute": 100_000_000,
    "tokens_per_day": 10**12,
    "max_concurrent": 1_000,
    "budget_per_day_usd": 1_000_000.0,
    "budget_per_month_usd": 1_000_000.0,
}
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
FIRST_WORD = b"tok0 "
LAST_WORD = f"tok{CONTENT_CHUNKS - 1} ".encode()
DONE = b"data: [DONE]"
COLUMNS = [
    "arm",
    "mode",
    "conc.",
    "req/s",
    "p50 ms",
    "p99 ms",
    "added p50 ms",
    "added p99 ms",
    "first chunk p50 ms",
    "CPU s / 1k req",
    "peak RSS MB",
    "errors",
]
TARGET_THROUGHPUT_RATIO = 5.0
TARGET_P99_OVERHEAD_RATIO = 0.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
progress = Console(stderr=True)  # progress and problems, so that stdout holds only the tables


# -- the load generator ----------------------------------------------------------------------------------
class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time (a closed-loop client)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.body = bytearray()
        self.first_word_at: float | None = None
        self.keep_alive = True
        self._answered: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCP transport is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        self._fail(ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if self._answered is not None and not self._answered.done():
            self._answered.set_exception(exc)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body += body
        if self.first_word_at is None and FIRST_WORD in body:
            self.first_word_at = time.perf_counter()

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(self.parser.get_status_code())

    async def send(self, request: bytes) -> int:
        """Send ``request``; its status once the whole response is in ``body``."""
        assert self.transport is not None
        self.body.clear()
        self.first_word_at = None
        self._answered = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            return await self._answered

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(Connection, "127.0.0.1", port)
    return connection


def raw_request(port: int, token: str | None, stream: bool) -> bytes:
    body: dict[str, object] = {"model": ALIAS, "messages": MESSAGES, "max_tokens": 64}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    payload = json.dumps(body).encode()
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass(slots=True)
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    first_chunk_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    wall_s: float = 0.0


def complete(connection: Connection, status: int, stream: bool) -> bool:
    return status == 200 and LAST_WORD in connection.body and (not stream or DONE in connection.body)


async def closed_loop(port: int, request: bytes, stream: bool, concurrency: int, total: int) -> Load:
    """``concurrency`` connections sending ``request`` back to back until ``total`` have been sent."""
    load = Load()
    issued = 0

    async def client() -> None:
        nonlocal issued
        connection = await connect(port)
        try:
            while issued < total:
                issued += 1
                start = time.perf_counter()
                try:
                    status = await connection.send(request)
                except (ConnectionError, TimeoutError) as exc:
                    load.errors += 1
                    load.first_error = load.first_error or repr(exc)
                    connection.close()
                    connection = await connect(port)
                    continue
                if complete(connection, status, stream):
                    load.latencies_ms.append((time.perf_counter() - start) * 1000)
                    if stream and connection.first_word_at is not None:
                        load.first_chunk_ms.append((connection.first_word_at - start) * 1000)
                else:
                    load.errors += 1
                    load.first_error = load.first_error or f"{status}: {bytes(connection.body[:300])!r}"
                if not connection.keep_alive:
                    connection.close()
                    connection = await connect(port)
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    load.wall_s = time.perf_counter() - start
    return load


# -- the server's process tree ---------------------------------------------------------------------------
def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (uvicorn's supervisor and workers, LiteLLM's helpers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def resident_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
        except OSError:
            continue
    return total


class TreeMonitor:
    """CPU seconds used by a process tree between ``__enter__`` and ``__exit__``, and its peak RSS (sampled)."""

    def __init__(self, root: int) -> None:
        self.pids = process_tree(root)
        self.peak_bytes = resident_bytes(self.pids)
        self.cpu_s = 0.0
        self._start_cpu = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_bytes = max(self.peak_bytes, resident_bytes(self.pids))

    def __enter__(self) -> TreeMonitor:
        self._start_cpu = cpu_seconds(self.pids)
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._sampler.join()
        self.cpu_s = cpu_seconds(self.pids) - self._start_cpu
        self.peak_bytes = max(self.peak_bytes, resident_bytes(self.pids))


# -- arms ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    """A server to load: where it listens, the key it wants, the process tree that does its work."""

    arm: str
    port: int
    token: str | None
    root_pid: int


@dataclass(frozen=True, slots=True)
class Row:
    arm: str
    mode: str
    concurrency: int
    load: Load
    cpu_s: float
    peak_bytes: int

    @property
    def requests_per_s(self) -> float:
        return (len(self.load.latencies_ms) + self.load.errors) / self.load.wall_s

    def quantile(self, q: float) -> float:
        ordered = sorted(self.load.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.load.latencies_ms)

    def cells(self, direct: Row | None) -> list[str]:
        requests = len(self.load.latencies_ms) + self.load.errors
        added = (
            ["—", "—"]
            if direct is None or direct is self
            else [
                f"{self.p50 - direct.p50:+.2f}",
                f"{self.quantile(0.99) - direct.quantile(0.99):+.2f}",
            ]
        )
        first = f"{statistics.median(self.load.first_chunk_ms):.2f}" if self.load.first_chunk_ms else "—"
        return [
            self.arm,
            self.mode,
            str(self.concurrency),
            f"{self.requests_per_s:,.0f}",
            f"{self.p50:.2f}",
            f"{self.quantile(0.99):.2f}",
            *added,
            first,
            f"{self.cpu_s / requests * 1000:.2f}",
            f"{self.peak_bytes / 2**20:.0f}",
            str(self.load.errors),
        ]


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-4000:]
                raise SystemExit(f"{process.args[0]} exited with status {process.returncode}:\n{tail}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
    raise SystemExit(f"{url} was not ready within {timeout_s:g} s (log: {log})")


@contextmanager
def started(command: list[str], log: Path, ready_url: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """A server process, ready; its pid. Stopped (SIGTERM, then SIGKILL) on the way out, whatever happened."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, env=env)
    try:
        wait_until_ready(process, ready_url, log)
        yield process.pid
    finally:
        stop(process)


def portico_config(directory: Path, mock_port: int) -> Path:
    """The ``portico.toml`` the brief's docs describe: the mock as an upstream model, auth on, a high-limit tier."""
    tier = "\n".join(f"{name} = {json.dumps(value)}" for name, value in BENCH_TIER.items())
    config = directory / "portico.toml"
    config.write_text(
        f"""[auth]
enabled = true
local_tier = "bench"  # must name a configured tier, even with auth on

[limits]
backend = "memory"

[[tiers]]
{tier}

[[models]]
alias = "{ALIAS}"
snapshot = "mock-gpt-2026"
engine = "upstream"
pricing = {{ input_per_million = 0.15, output_per_million = 0.60 }}

[models.upstream]
base_url = "http://127.0.0.1:{mock_port}/v1"
"""
    )
    return config


def create_portico_key(config: Path, env: dict[str, str]) -> str:
    created = subprocess.run(
        [str(PORTICO), "keys", "create", "--config", str(config), "--tier", "bench", "--name", "bench-gateway"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    keys = [line.strip() for line in created.stdout.splitlines() if line.strip().startswith("pk-")]
    if created.returncode != 0 or not keys:
        raise SystemExit(f"portico keys create failed ({created.returncode}):\n{created.stdout}{created.stderr}")
    return keys[-1]


def count_usage_records(directory: Path) -> int:
    with sqlite3.connect(directory / "portico.db") as database:
        count: int = database.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    database.close()
    return count


@contextmanager
def portico_arm(run_dir: Path, mock_port: int, sent: list[int]) -> Iterator[Target]:
    """Portico in front of the mock. On the way out (stopped: records flushed), one usage record per request."""
    directory = run_dir / "portico"
    directory.mkdir()
    config = portico_config(directory, mock_port)
    # Only the settings written here apply: none of the caller's PORTICO_* variables.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PORTICO_")}
    env |= {"PORTICO_DATA_DIR": str(directory), "PORTICO_CONFIG": str(config)}
    token = create_portico_key(config, env)
    port = free_port()
    command = [str(PORTICO), "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    with started(command, directory / "server.log", f"http://127.0.0.1:{port}/readyz", env) as pid:
        yield Target("portico", port, token, pid)
    written = count_usage_records(directory)
    if written != sum(sent):
        raise SystemExit(f"portico: {written} usage records written for {sum(sent)} requests")


def ensure_litellm() -> None:
    """LiteLLM's proxy in its own virtualenv (system Python 3.11), made once and reused."""
    if LITELLM.exists():
        return
    progress.print(f"installing litellm[proxy] into {LITELLM_VENV} (once) ...", style="dim")
    subprocess.run(["python3.11", "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)


@contextmanager
def litellm_arm(run_dir: Path, mock_port: int) -> Iterator[Target]:
    ensure_litellm()
    directory = run_dir / "litellm"
    directory.mkdir()
    config = directory / "config.yaml"  # JSON is YAML
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": ALIAS,
                        "litellm_params": {
                            "model": f"openai/{ALIAS}",
                            "api_base": f"http://127.0.0.1:{mock_port}/v1",
                            "api_key": "dummy",
                        },
                    }
                ],
                "general_settings": {"master_key": LITELLM_MASTER_KEY},
                "litellm_settings": {"telemetry": False},
            },
            indent=2,
        )
    )
    env = dict(os.environ) | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map from GitHub at import
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    port = free_port()
    command = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    with started(command, directory / "server.log", f"http://127.0.0.1:{port}/health/liveliness", env) as pid:
        yield Target("litellm", port, LITELLM_MASTER_KEY, pid)


# -- the run ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Setup:
    requests: int
    warmup: int
    concurrencies: list[int]
    arms: list[str]


def measure(target: Target, setup: Setup, sent: list[int], runner: asyncio.Runner) -> list[Row]:
    """Each concurrency and mode in turn: a warm-up, then the timed requests with the server's tree watched."""
    rows = []
    for concurrency in setup.concurrencies:
        for mode in MODES:
            stream = mode == "stream"
            request = raw_request(target.port, target.token, stream)
            warm = runner.run(closed_loop(target.port, request, stream, concurrency, setup.warmup))
            with TreeMonitor(target.root_pid) as monitor:
                load = runner.run(closed_loop(target.port, request, stream, concurrency, setup.requests))
            sent += [setup.warmup, setup.requests]
            label = f"{target.arm} {mode} c={concurrency}"
            if warm.errors or load.errors:
                first = warm.first_error or load.first_error
                progress.print(f"{label}: {warm.errors + load.errors} errors, the first: {first}", style="red")
            if not load.latencies_ms:
                raise SystemExit(f"{label}: no request succeeded")
            rows.append(Row(target.arm, mode, concurrency, load, monitor.cpu_s, monitor.peak_bytes))
            progress.print(f"  {label}: {rows[-1].requests_per_s:,.0f} req/s", style="dim")
    return rows


def run(setup: Setup, run_dir: Path) -> list[Row]:
    """The mock for the whole run; each arm's server started, measured and stopped before the next."""
    rows: list[Row] = []
    mock_port = free_port()
    mock_command = [sys.executable, str(MOCK), "--port", str(mock_port)]
    with (
        started(mock_command, run_dir / "mock.log", f"http://127.0.0.1:{mock_port}/health") as mock_pid,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        for arm in setup.arms:
            sent: list[int] = []
            with ExitStack() as stack:
                if arm == "direct":
                    target = Target("direct", mock_port, None, mock_pid)
                elif arm == "portico":
                    target = stack.enter_context(portico_arm(run_dir, mock_port, sent))
                else:
                    target = stack.enter_context(litellm_arm(run_dir, mock_port))
                rows += measure(target, setup, sent, runner)
    return rows


# -- report ----------------------------------------------------------------------------------------------
def table_rows(rows: list[Row]) -> list[list[str]]:
    direct = {(row.mode, row.concurrency): row for row in rows if row.arm == "direct"}
    ordered = sorted(rows, key=lambda row: (MODES.index(row.mode), row.concurrency, ARMS.index(row.arm)))
    return [row.cells(direct.get((row.mode, row.concurrency))) for row in ordered]


def target_rows(rows: list[Row]) -> list[tuple[list[str], bool]]:
    """Per mode and concurrency: Portico's requests/s and added p99 against LiteLLM's; needs all three arms."""
    by_key = {(row.arm, row.mode, row.concurrency): row for row in rows}
    checks = []
    for mode in MODES:
        for concurrency in sorted({row.concurrency for row in rows}):
            arms = [by_key.get((arm, mode, concurrency)) for arm in ARMS]
            if any(row is None for row in arms):
                continue
            direct, portico, litellm = arms
            assert direct is not None and portico is not None and litellm is not None
            throughput = portico.requests_per_s / litellm.requests_per_s
            portico_p99 = portico.quantile(0.99) - direct.quantile(0.99)
            litellm_p99 = litellm.quantile(0.99) - direct.quantile(0.99)
            overhead = portico_p99 / litellm_p99 if litellm_p99 > 0 else float("inf")
            met_throughput = throughput >= TARGET_THROUGHPUT_RATIO
            met_overhead = overhead <= TARGET_P99_OVERHEAD_RATIO
            checks.append(
                (
                    [
                        mode,
                        str(concurrency),
                        f"{throughput:.2f}x ({portico.requests_per_s:,.0f} vs {litellm.requests_per_s:,.0f})",
                        "yes" if met_throughput else "NO",
                        f"{overhead:.2f} ({portico_p99:+.1f} vs {litellm_p99:+.1f} ms)",
                        "yes" if met_overhead else "NO",
                    ],
                    met_throughput and met_overhead,
                )
            )
    return checks


TARGET_COLUMNS = [
    "mode",
    "conc.",
    "req/s: Portico / LiteLLM",
    f"≥ {TARGET_THROUGHPUT_RATIO:g}x?",
    "added p99: Portico / LiteLLM",
    f"≤ {TARGET_P99_OVERHEAD_RATIO:g}?",
]


def print_markdown(columns: list[str], cells: list[list[str]]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join(":---" if index < 2 else "---:" for index in range(len(columns))) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")
    print()


def print_rich(columns: list[str], cells: list[list[str]], title: str) -> None:
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < 2 else "right")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def parse_args() -> tuple[Setup, bool]:
    parser = argparse.ArgumentParser(description="Portico's gateway vs LiteLLM's proxy vs the upstream directly.")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per arm, mode and concurrency")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests before each timed run")
    parser.add_argument("--concurrency", default="10,50", help="comma-separated concurrency levels (default: 10,50)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the docs)")
    args = parser.parse_args()
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if unknown := sorted(set(arms) - set(ARMS)):
        parser.error(f"unknown arms: {', '.join(unknown)} (choose from {', '.join(ARMS)})")
    try:
        concurrencies = [int(level) for level in args.concurrency.split(",")]
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 10,50")
    if args.requests < 1 or args.warmup < 1 or min(concurrencies) < 1:
        parser.error("--requests, --warmup and every concurrency must be at least 1")
    return Setup(args.requests, args.warmup, concurrencies, arms), args.markdown


def main() -> None:
    setup, markdown = parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="gateway-", dir=WORK))
    load_before = os.getloadavg()[0]
    try:
        rows = run(setup, run_dir)
    except BaseException:
        progress.print(f"the servers' logs are kept in {run_dir}", style="red")
        raise
    shutil.rmtree(run_dir)
    checks = target_rows(rows)
    target_cells = [cells for cells, _ in checks]
    if markdown:
        print_markdown(COLUMNS, table_rows(rows))
        if target_cells:
            print_markdown(TARGET_COLUMNS, target_cells)
    else:
        print_rich(COLUMNS, table_rows(rows), f"Gateway overhead, {setup.requests} requests per row")
        if target_cells:
            print_rich(TARGET_COLUMNS, target_cells, "Targets (all three arms needed)")
    console.print(
        f"{setup.warmup} warm-up + {setup.requests} timed requests per row; "
        f"1-min load average at start {load_before:.2f}",
        style="dim",
    )
    if not all(met for _, met in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
