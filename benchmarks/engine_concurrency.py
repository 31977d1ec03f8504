"""Many clients at once: Portico's batching engine vs one-at-a-time and llama.cpp's own server.

One run, side by side, same GGUF (the bundled SmolLM2-135M Q4_1), same thread count:

  (a) Portico over HTTP (`portico serve`, continuous batching, 8 slots);
  (b) llama-cpp-python's own server (`python -m llama_cpp.server --interrupt_requests False`), installed into
      a separate virtualenv under benchmarks/.work (never a project dependency): one request at a time;
  (c) llama.cpp's C++ `llama-server -np 8`, when a binary is given with --llama-server or found on PATH.

Closed loop at each concurrency level: C clients each send streaming chat requests (short prompts,
max_tokens 128) back to back until 2*C requests (at least 8) are done. Reported per arm and level: aggregate
output tokens/s, time to first token p50/p95, time per output token p50, errors.

    .venv/bin/python benchmarks/engine_concurrency.py [--levels 1,2,4,8,16] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from portico.engines.llama_cpp import bundled_gguf
from processes import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
MAX_TOKENS = 128
TOPICS = [
    "a dragon who learns to cook",
    "a robot lost in a forest",
    "two friends sailing to an island",
    "a cat who becomes mayor",
    "a child who finds a map",
    "a baker in a small town",
    "an astronaut on Mars",
    "a detective in Paris",
]


@dataclass
class Sample:
    ttft_s: float
    gaps_s: list[float]
    tokens: int


@dataclass
class LevelResult:
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return sum(s.tokens for s in self.samples) / self.wall_s if self.wall_s else 0.0

    def ttft_ms(self, quantile: float) -> float:
        values = sorted(s.ttft_s for s in self.samples)
        return 1000 * values[min(len(values) - 1, int(quantile * len(values)))] if values else float("nan")

    def tpot_ms(self) -> float:
        gaps = [gap for s in self.samples for gap in s.gaps_s]
        return 1000 * statistics.median(gaps) if gaps else float("nan")


@contextmanager
def running(command: list[str], base_url: str, ready_path: str, env: dict[str, str] | None = None) -> Iterator[str]:
    log = (WORK / f"{Path(command[0]).name}-{int(time.time())}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(base_url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not become ready; see {log.name}")
            time.sleep(0.25)
        yield base_url
    finally:
        stop(process)
        log.close()


def portico_arm(threads: int) -> Iterator[str]:
    port = free_port()
    config = WORK / "portico-bench.toml"
    config.write_text(
        f'log_level = "warning"\n[[models]]\nalias = "smollm2"\nsnapshot = "smollm2-bench"\nthreads = {threads}\n'
    )
    command = [str(Path(sys.executable).parent / "portico"), "serve", "--port", str(port), "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    return running(command, f"http://127.0.0.1:{port}", "/readyz", env)


def llama_cpp_python_venv() -> Path:
    """A separate virtualenv with llama-cpp-python's server extra (pip's cache makes this quick)."""
    target = WORK / "llama-cpp-python-server"
    python = target / "bin" / "python"
    if not (target / "ready").exists():
        venv.create(target, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "llama-cpp-python[server]==0.3.36"], check=True)
        (target / "ready").touch()
    return python


def llama_cpp_python_arm(threads: int) -> Iterator[str]:
    port = free_port()
    command = [
        str(llama_cpp_python_venv()),
        "-m",
        "llama_cpp.server",
        "--model",
        str(bundled_gguf()),
        "--n_threads",
        str(threads),
        "--n_ctx",
        "4096",
        "--interrupt_requests",
        "False",
        "--port",
        str(port),
    ]
    return running(command, f"http://127.0.0.1:{port}", "/v1/models")


def llama_server_arm(binary: str, threads: int) -> Iterator[str]:
    port = free_port()
    command = [binary, "-m", str(bundled_gguf()), "-np", "8", "-c", str(8 * 4096), "-t", str(threads)]
    command += ["--port", str(port), "--host", "127.0.0.1"]
    return running(command, f"http://127.0.0.1:{port}", "/health")


async def one_request(http: httpx.AsyncClient, base: str, number: int) -> Sample:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": f"Write a long story about {TOPICS[number % len(TOPICS)]}."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.8,
        "seed": number,
        "stream": True,
    }
    started = time.perf_counter()
    stamps: list[float] = []
    async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", [])):
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError("no tokens")
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return Sample(ttft_s=stamps[0] - started, gaps_s=gaps, tokens=len(stamps))


async def closed_loop(base: str, concurrency: int) -> LevelResult:
    result = LevelResult(concurrency)
    total = max(8, 2 * concurrency)
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        for number in counter:
            try:
                result.samples.append(await one_request(http, base, number))
            except (httpx.HTTPError, RuntimeError):
                result.errors += 1

    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await one_request(http, base, 999)  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - started
    return result


def measure(arm: Iterator[str], levels: list[int], console: Console, name: str) -> list[LevelResult]:
    results = []
    with arm as base:
        for level in levels:
            console.print(f"[dim]{name}: concurrency {level}…[/dim]")
            results.append(asyncio.run(closed_loop(base, level)))
    return results


def render(rows: dict[str, list[LevelResult] | str], markdown: bool, console: Console) -> None:
    headers = ["arm", "concurrency", "tokens/s", "TTFT p50 ms", "TTFT p95 ms", "TPOT p50 ms", "errors"]
    lines: list[list[str]] = []
    for arm, results in rows.items():
        if isinstance(results, str):
            lines.append([arm, "-", results, "", "", "", ""])
            continue
        for r in results:
            lines.append(
                [
                    arm,
                    str(r.concurrency),
                    f"{r.tokens_per_s:.0f}",
                    f"{r.ttft_ms(0.5):.0f}",
                    f"{r.ttft_ms(0.95):.0f}",
                    f"{r.tpot_ms():.1f}",
                    str(r.errors),
                ]
            )
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    table = Table(*headers, title="Streaming chat, 128-token answers, closed loop")
    for line in lines:
        table.add_row(*line)
    console.print(table)


def summary(rows: dict[str, list[LevelResult] | str], console: Console) -> None:
    def at(arm: str, level: int) -> LevelResult | None:
        results = rows.get(arm)
        return next((r for r in results if r.concurrency == level), None) if isinstance(results, list) else None

    portico8, baseline8, cpp8 = at("Portico", 8), at("llama-cpp-python server", 8), at("llama-server -np 8", 8)
    portico1, baseline1 = at("Portico", 1), at("llama-cpp-python server", 1)
    if portico8 and baseline8:
        ratio = portico8.tokens_per_s / baseline8.tokens_per_s
        console.print(f"concurrency 8: Portico / llama-cpp-python server = {ratio:.2f}x tokens/s (target ≥ 1.8x)")
    if portico8 and cpp8:
        ratio = portico8.tokens_per_s / cpp8.tokens_per_s
        console.print(f"concurrency 8: Portico / llama-server = {ratio:.2f}x tokens/s (target ≥ 0.95x)")
    if portico8:
        console.print(f"concurrency 8: Portico TTFT p95 = {portico8.ttft_ms(0.95):.0f} ms (target ≤ 500 ms)")
    if portico1 and baseline1:
        ratio = portico1.tokens_per_s / baseline1.tokens_per_s
        console.print(f"concurrency 1: Portico / llama-cpp-python server = {ratio:.2f}x tokens/s (target ≥ 0.90x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8,16", help="comma-separated concurrency levels")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--llama-server", default=shutil.which("llama-server"), help="path to llama.cpp's server")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)

    rows: dict[str, list[LevelResult] | str] = {}
    rows["Portico"] = measure(portico_arm(args.threads), levels, console, "Portico")
    rows["llama-cpp-python server"] = measure(llama_cpp_python_arm(args.threads), levels, console, "llama-cpp-python")
    if args.llama_server:
        rows["llama-server -np 8"] = measure(
            llama_server_arm(args.llama_server, args.threads), levels, console, "llama-server"
        )
    else:
        rows["llama-server -np 8"] = "skipped: no llama-server binary (pass --llama-server PATH)"
    render(rows, args.markdown, console)
    summary(rows, console)


if __name__ == "__main__":
    main()
