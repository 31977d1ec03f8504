"""Moderation: what an input-checking content policy adds to a chat request, and how fast the classifier scores.

Two ``portico serve`` processes at once, auth off (the local tier applies), both serving the echo chat engine
and the embedded moderation model (``classifier``: the bundled head over all-MiniLM-L6-v2):

- **(a) no policy**: the baseline.
- **(b) input policy**: the local tier (``unlimited``) carries a content policy that checks each request's new
  input (every default category, blocking at 0.5; ``injection = "warn"``), so every chat request is scored by
  the classifier before it runs.

Before anything is timed, an obviously violent message must be refused by (b) with 400
``content_policy_violation`` and answered 200 by (a); otherwise the run exits with status 1.

Measured, in one run:

1. **One at a time**: small non-streamed ``/v1/chat/completions`` requests (one short user message, cycling
   through 20 everyday prompts, ``max_tokens`` 8) sent to (a) and (b) in turn, each server over its own
   keep-alive connection, so drift on a shared machine hits both alike. p50 / p99 / mean per server and the
   added p50 / p99 (policy minus baseline). A request answered other than 200 fails the run.
2. **Concurrency 8**: the same requests from 8 keep-alive connections per server (asyncio + httpx), (a) then
   (b), the same number each: requests/s and p50 / p99.
3. **Classifications**: (b)'s ``POST /v1/moderations``, one text per request at concurrency 1 and 16, and 32
   texts per request at concurrency 4: texts classified per second and request p50 / p99. Every response must
   hold one result per text.
4. **Memory**: each server's resident memory (``VmRSS``, and its peak ``VmHWM``, from ``/proc``) at the end;
   and, for scale, that of a third server started briefly afterwards with the echo engine only (no moderation
   model), after a few requests.

Run from the repository root (a few minutes on 2 cores):

    .venv/bin/python benchmarks/moderation.py --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
from rich.console import Console
from rich.table import Table

from portico.constants import HEADER_CONTENT_WARNING
from processes import free_port, stop, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
PORTICO = Path(sys.executable).with_name("portico")
ENDPOINT_CHAT = "/v1/chat/completions"
ENDPOINT_MODERATIONS = "/v1/moderations"

ECHO_ALIAS = "echo"
ECHO_MODEL: dict[str, Any] = {
    "alias": ECHO_ALIAS,
    "snapshot": "echo-2026-01-01",
    "engine": "echo",
    "context_window": 256,
    # As many as the concurrent run sends, so no request waits for the chat engine: what differs is the check.
    "parallel_slots": 8,
}
MODERATION_MODEL: dict[str, Any] = {
    "alias": "portico-moderation",
    "snapshot": "portico-moderation-minilm-20261203",
    "engine": "classifier",
}
# Every default category at the default threshold; a suspected injection only warns.
INPUT_POLICY: dict[str, Any] = {"check": "input", "injection": "warn"}
MAX_TOKENS = 8
CONCURRENCY = 8
MODERATION_RUNS = ((1, 1), (1, 16), (32, 4))  # (texts per request, concurrency)
VIOLENT = "I am going to stab my neighbour tonight and watch him bleed."
PROMPTS = [
    "What's a good recipe for a quick weeknight pasta?",
    "Can you summarise the plot of Pride and Prejudice in two sentences?",
    "How do I convert Celsius to Fahrenheit?",
    "Suggest a name for a small bakery by the sea.",
    "What is the difference between a list and a tuple in Python?",
    "Write a short thank-you note to a colleague who helped me move.",
    "How long should I boil an egg for a runny yolk?",
    "Give me three ideas for a rainy Sunday with kids.",
    "Explain what compound interest is in simple terms.",
    "Which houseplants do well in low light?",
    "How do I politely decline a meeting invitation?",
    "What are the main sights to see in Lisbon in one day?",
    "Translate 'good morning, how are you?' into Spanish.",
    "What's a healthy breakfast I can make in five minutes?",
    "How do I fix a squeaky door hinge?",
    "Recommend a few podcasts about history.",
    "What should I pack for a weekend hiking trip?",
    "Help me plan a birthday dinner for six people.",
    "Why is the sky blue?",
    "How can I improve my sleep routine?",
]

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)
progress = Console(stderr=True)  # progress and problems, so that stdout holds only the tables


@dataclass(frozen=True, slots=True)
class Setup:
    requests: int
    warmup: int


def chat_body(prompt: str) -> bytes:
    return json.dumps(
        {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS}
    ).encode()


CHAT_BODIES = [chat_body(prompt) for prompt in PROMPTS]


def quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the servers -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Server:
    name: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_config(directory: Path, models: list[dict[str, Any]], policy: dict[str, Any] | None) -> Path:
    """A ``portico.toml``: auth off, the local tier ``unlimited`` (with ``policy``, if given), ``models``."""
    lines = [
        f"data_dir = {json.dumps(str(directory))}",
        'log_level = "warning"',
        "",
        "[auth]",
        "enabled = false",
        'local_tier = "unlimited"',
        "",
        "[[tiers]]",
        'name = "unlimited"',
    ]
    if policy is not None:
        lines += ["[tiers.content_policy]"] + [f"{name} = {json.dumps(value)}" for name, value in policy.items()]
    for model in models:
        lines += ["", "[[models]]"] + [f"{name} = {json.dumps(value)}" for name, value in model.items()]
    config = directory / "portico.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@contextmanager
def running_server(
    name: str, run_dir: Path, models: list[dict[str, Any]], policy: dict[str, Any] | None
) -> Iterator[Server]:
    """A ``portico serve`` subprocess (not yet known to be ready); stopped with SIGTERM on the way out."""
    directory = run_dir / name.split()[0].strip("()")
    directory.mkdir()
    config = server_config(directory, models, policy)
    # Only the settings written here apply: none of the caller's PORTICO_* variables.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    env["PORTICO_CONFIG"] = str(config)
    port = free_port()
    command = [str(PORTICO), "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    with (directory / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60, trust_env=False) as client:
            yield Server(name, port, directory, process, client)
    finally:
        stop(process)


def ready(server: Server) -> None:
    try:
        wait_until_ready(server.client, server.process, timeout_s=300)
    except SystemExit as exc:
        log = (server.directory / "server.log").read_text(errors="replace")[-4000:]
        raise SystemExit(f"{server.name}: {exc}\n{log}") from None


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Vm")
    )
    return tuple(int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


# -- the policy runs -------------------------------------------------------------------------------------
def require_policy(baseline: Server, policed: Server) -> None:
    """The violent message: refused by the policy's server, answered by the baseline; everyday prompts pass."""
    body = chat_body(VIOLENT)
    answered = baseline.client.post(ENDPOINT_CHAT, content=body)
    if answered.status_code != 200:
        raise SystemExit(f"{baseline.name}: the violent message got {answered.status_code}: {answered.text}")
    refused = policed.client.post(ENDPOINT_CHAT, content=body)
    try:
        code = refused.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if refused.status_code != 400 or code != "content_policy_violation":
        raise SystemExit(
            f"{policed.name}: the violent message got {refused.status_code} {refused.text!r}, "
            "expected 400 content_policy_violation"
        )
    progress.print(f"policy check: {policed.name} refused the violent message ({refused.text[:160]})", style="dim")


# -- 1: one at a time ------------------------------------------------------------------------------------
@dataclass(slots=True)
class Sequential:
    latencies_ms: list[float] = field(default_factory=list)
    warned: int = 0


def post_chat(server: Server, body: bytes, result: Sequential | None = None) -> None:
    start = time.perf_counter()
    response = server.client.post(ENDPOINT_CHAT, content=body)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{server.name}: {response.status_code} {response.text}")
    if result is not None:
        result.latencies_ms.append(elapsed)
        result.warned += HEADER_CONTENT_WARNING in response.headers


def interleaved(servers: Sequence[Server], setup: Setup) -> list[Sequential]:
    """Requests to each server in turn (the first one rotating), each prompt sent to both."""
    bodies = itertools.cycle(CHAT_BODIES)
    for _ in range(setup.warmup):
        body = next(bodies)
        for server in servers:
            post_chat(server, body)
    results = [Sequential() for _ in servers]
    for round_index in range(setup.requests):
        body = next(bodies)
        for offset in range(len(servers)):
            position = (round_index + offset) % len(servers)
            post_chat(servers[position], body, results[position])
    return results


# -- 2 and 3: concurrent ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0


async def closed_loop(
    base_url: str, path: str, bodies: Sequence[bytes], concurrency: int, total: int, expect_results: int = 0
) -> Load:
    """``concurrency`` keep-alive connections posting ``bodies`` (cycled) back to back until ``total`` are done.
    ``expect_results``: a moderation response must hold that many results."""
    load, issued = Load(), 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=120, trust_env=False
    ) as client:

        async def worker() -> None:
            nonlocal issued
            while issued < total:
                body = bodies[issued % len(bodies)]
                issued += 1
                start = time.perf_counter()
                response = await client.post(path, content=body)
                elapsed = (time.perf_counter() - start) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"{base_url}{path}: {response.status_code} {response.text}")
                if expect_results and len(response.json()["results"]) != expect_results:
                    raise SystemExit(
                        f"{base_url}{path}: {len(response.json()['results'])} results, {expect_results} sent"
                    )
                load.latencies_ms.append(elapsed)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        load.wall_s = time.perf_counter() - start
    return load


def moderation_bodies(texts_per_request: int) -> list[bytes]:
    """Request bodies whose inputs walk through the prompts, so consecutive requests differ."""
    texts = itertools.cycle(PROMPTS)
    bodies = []
    for _ in range(len(PROMPTS)):
        batch = [next(texts) for _ in range(texts_per_request)]
        payload: str | list[str] = batch[0] if texts_per_request == 1 else batch
        bodies.append(json.dumps({"model": MODERATION_MODEL["alias"], "input": payload}).encode())
        next(texts)  # shift by one more, so 20 bodies of 32 texts do not all start alike
    return bodies


# -- the run ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Results:
    sequential: list[Sequential] = field(default_factory=list)
    concurrent: list[Load] = field(default_factory=list)
    moderation: list[tuple[int, int, Load]] = field(default_factory=list)  # texts per request, concurrency, load
    memory: list[tuple[str, float, float]] = field(default_factory=list)  # server, RSS MiB, peak MiB


SERVERS = (("(a) no policy", None), ("(b) input policy", INPUT_POLICY))


def measure(setup: Setup, run_dir: Path) -> Results:
    results = Results()
    with ExitStack() as stack, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        servers = [
            stack.enter_context(running_server(name, run_dir, [ECHO_MODEL, MODERATION_MODEL], policy))
            for name, policy in SERVERS
        ]
        for server in servers:
            ready(server)
        require_policy(*servers)
        progress.print(f"1/3 one at a time: {setup.requests} requests per server, interleaved", style="dim")
        results.sequential = interleaved(servers, setup)
        for server in servers:
            progress.print(f"2/3 concurrency {CONCURRENCY}: {server.name}", style="dim")
            runner.run(closed_loop(server.base_url, ENDPOINT_CHAT, CHAT_BODIES, CONCURRENCY, setup.warmup))
            load = runner.run(closed_loop(server.base_url, ENDPOINT_CHAT, CHAT_BODIES, CONCURRENCY, setup.requests))
            results.concurrent.append(load)
        policed = servers[1]
        for texts, concurrency in MODERATION_RUNS:
            progress.print(f"3/3 moderations: {texts} text(s) per request, concurrency {concurrency}", style="dim")
            bodies = moderation_bodies(texts)
            total = setup.requests if texts == 1 else max(concurrency, setup.requests // 8)
            runner.run(closed_loop(policed.base_url, ENDPOINT_MODERATIONS, bodies, concurrency, setup.warmup, texts))
            load = runner.run(closed_loop(policed.base_url, ENDPOINT_MODERATIONS, bodies, concurrency, total, texts))
            results.moderation.append((texts, concurrency, load))
        results.memory = [(server.name, *memory_mb(server.process.pid)) for server in servers]
    # For scale: a server without the moderation model, after a few requests.
    with running_server("(c) echo only, no moderation model", run_dir, [ECHO_MODEL], None) as reference:
        ready(reference)
        for body in CHAT_BODIES:
            post_chat(reference, body)
        results.memory.append((reference.name, *memory_mb(reference.process.pid)))
    return results


# -- report ----------------------------------------------------------------------------------------------
def sequential_table(results: Results) -> tuple[list[str], list[list[str]]]:
    columns = ["server", "requests", "p50 ms", "p99 ms", "mean ms", "added p50 ms", "added p99 ms", "warned"]
    baseline = results.sequential[0].latencies_ms
    rows = []
    for (name, _), result in zip(SERVERS, results.sequential, strict=True):
        samples = result.latencies_ms
        added = (
            ["—", "—"]
            if samples is baseline
            else [
                f"{statistics.median(samples) - statistics.median(baseline):+.2f}",
                f"{quantile(samples, 0.99) - quantile(baseline, 0.99):+.2f}",
            ]
        )
        rows.append(
            [
                name,
                str(len(samples)),
                f"{statistics.median(samples):.2f}",
                f"{quantile(samples, 0.99):.2f}",
                f"{statistics.fmean(samples):.2f}",
                *added,
                str(result.warned),
            ]
        )
    return columns, rows


def concurrent_table(results: Results) -> tuple[list[str], list[list[str]]]:
    columns = ["server", "conc.", "requests", "req/s", "p50 ms", "p99 ms", "added p99 ms"]
    baseline = results.concurrent[0]
    rows = []
    for (name, _), load in zip(SERVERS, results.concurrent, strict=True):
        samples = load.latencies_ms
        added = "—" if load is baseline else f"{quantile(samples, 0.99) - quantile(baseline.latencies_ms, 0.99):+.2f}"
        rows.append(
            [
                name,
                str(CONCURRENCY),
                str(len(samples)),
                f"{len(samples) / load.wall_s:,.0f}",
                f"{statistics.median(samples):.2f}",
                f"{quantile(samples, 0.99):.2f}",
                added,
            ]
        )
    return columns, rows


def moderation_table(results: Results) -> tuple[list[str], list[list[str]]]:
    columns = ["texts / request", "conc.", "requests", "texts/s", "requests/s", "request p50 ms", "request p99 ms"]
    rows = [
        [
            str(texts),
            str(concurrency),
            str(len(load.latencies_ms)),
            f"{texts * len(load.latencies_ms) / load.wall_s:,.0f}",
            f"{len(load.latencies_ms) / load.wall_s:,.0f}",
            f"{statistics.median(load.latencies_ms):.2f}",
            f"{quantile(load.latencies_ms, 0.99):.2f}",
        ]
        for texts, concurrency, load in results.moderation
    ]
    return columns, rows


def memory_table(results: Results) -> tuple[list[str], list[list[str]]]:
    columns = ["server", "RSS MiB (end)", "peak RSS MiB"]
    return columns, [[name, f"{rss:.0f}", f"{peak:.0f}"] for name, rss, peak in results.memory]


def print_markdown(columns: list[str], cells: list[list[str]]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join(":---" if index == 0 else "---:" for index in range(len(columns))) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")
    print()


def print_rich(columns: list[str], cells: list[list[str]], title: str) -> None:
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def parse_args() -> tuple[Setup, bool]:
    parser = argparse.ArgumentParser(description="Latency an input content policy adds; classifications/s.")
    parser.add_argument(
        "--requests",
        type=int,
        default=300,
        help="timed chat requests per server and run, and single-text "
        "moderation requests per run; the 32-text run sends an eighth as many (default: 300)",
    )
    parser.add_argument("--warmup", type=int, default=30, help="untimed requests before each timed run (default: 30)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the docs)")
    args = parser.parse_args()
    if args.requests < 1 or args.warmup < 1:
        parser.error("--requests and --warmup must be at least 1")
    return Setup(args.requests, args.warmup), args.markdown


def main() -> None:
    setup, markdown = parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="moderation-", dir=WORK))
    load_before = os.getloadavg()[0]
    try:
        results = measure(setup, run_dir)
    except BaseException:
        progress.print(f"the servers' logs are kept in {run_dir}", style="red")
        raise
    shutil.rmtree(run_dir)
    tables = [
        (sequential_table(results), "Chat requests one at a time, interleaved (max_tokens 8)"),
        (concurrent_table(results), f"Chat requests at concurrency {CONCURRENCY}"),
        (moderation_table(results), "POST /v1/moderations on (b)"),
        (memory_table(results), "Resident memory"),
    ]
    for (columns, cells), title in tables:
        if markdown:
            print_markdown(columns, cells)
        else:
            print_rich(columns, cells, title)
    console.print(
        f"{setup.warmup} warm-up + {setup.requests} timed chat requests per server and run; "
        f"1-min load average at start {load_before:.2f}",
        style="dim",
    )


if __name__ == "__main__":
    main()
