"""Single stream: Portico's streaming chat endpoint against raw llama-cpp-python, on the same GGUF, in one run.

What is measured, for one request at a time and the bundled SmolLM2-135M Q4_1 model:

- **Portico HTTP stream**: ``portico serve`` runs as a subprocess; each run is a streaming
  ``POST /v1/chat/completions`` (temperature 0, ``max_tokens`` N, ``stream_options.include_usage``) read with
  httpx. TTFT is the time to the first content delta; the token count is the usage chunk's
  ``completion_tokens``.
- **raw llama-cpp-python**: the same file loaded in this process with the server's context window (its
  ``max_model_len`` from ``/v1/tokenize``) and thread count, the same chat prompt (the GGUF's
  ``tokenizer.chat_template`` through ``Jinja2ChatFormatter``, as the engine renders it) and the engine's
  sampling at temperature 0 (greedy; top_k 40, top_p 1, min_p 0.05 passed as the engine does), with flash
  attention on as in the engine's llama.cpp context (``--flash-attn off`` for llama-cpp-python's default).
  ``llama.generate`` is iterated for exactly as many tokens as the server produced, ignoring
  end-of-generation. TTFT is the time to the first token.

Both arms must do the same work: the script warns when their prompts (token counts) or their generated texts
differ, e.g. because the engine's llama.cpp context settings changed.

Per arm: decode tokens/s = (tokens - 1) / (last - first token time); end-to-end tokens/s = tokens / total time.
Each arm is warmed up once, then run ``--runs`` times; the table shows medians. The arms never overlap: the
server runs first (its token count sets the raw arm's) and is stopped before the model is loaded in-process.
Both arms keep the repeated prompt's KV cells between runs (llama-cpp-python's prefix match here, the engine's
prefix cache in the server), so TTFT after warm-up is one token's decode plus overhead, not a prompt evaluation.

Run from the repository root:

    .venv/bin/python benchmarks/engine_single.py --markdown
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from portico.engines.llama_cpp import bundled_gguf
from portico.settings import default_models
from processes import free_port, stop, wait_until_ready

MODEL = "smollm2"
MESSAGES = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]
# The embedded engine's fixed sampler settings (see portico.engines).
TOP_K, MIN_P = 40, 0.05
TARGET_RATIO = 0.90
PORTICO = Path(sys.executable).with_name("portico")
COLUMNS = ["arm", "tokens generated", "TTFT p50 (ms)", "decode tokens/s (p50)", "end-to-end tokens/s (p50)"]

console = Console(soft_wrap=True)


@dataclass(frozen=True, slots=True)
class Setup:
    model_path: Path
    threads: int
    max_tokens: int
    runs: int
    flash_attn: bool


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed generation. Times are seconds from sending the request (or calling generate)."""

    prompt_tokens: int
    tokens: int
    first_s: float
    last_s: float
    text: str

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / (self.last_s - self.first_s)

    @property
    def end_to_end_tps(self) -> float:
        return self.tokens / self.last_s


@dataclass(frozen=True, slots=True)
class ArmResult:
    name: str
    samples: list[Sample]
    context_window: int

    def median(self, metric: Callable[[Sample], float]) -> float:
        return statistics.median(metric(sample) for sample in self.samples)

    def decode_range(self) -> str:
        rates = [sample.decode_tps for sample in self.samples]
        return f"{min(rates):.1f}-{max(rates):.1f}"

    def row(self) -> list[str]:
        return [
            self.name,
            str(self.samples[0].tokens),
            f"{self.median(lambda s: s.first_s) * 1000:.1f}",
            f"{self.median(lambda s: s.decode_tps):.1f}",
            f"{self.median(lambda s: s.end_to_end_tps):.1f}",
        ]


# -- Portico over HTTP ---------------------------------------------------------------------------------
def server_environment(setup: Setup) -> dict[str, str]:
    """One llama_cpp model under the default snapshot, pinned to the raw arm's file and thread count."""
    model = {
        "alias": MODEL,
        "snapshot": default_models()[0].snapshot,
        "engine": "llama_cpp",
        "path": str(setup.model_path),
        "threads": setup.threads,
    }
    return {**os.environ, "PORTICO_LOG_LEVEL": "warning", "PORTICO_MODELS": json.dumps([model])}


@contextmanager
def running_server(setup: Setup) -> Iterator[httpx.Client]:
    """A ``portico serve`` subprocess that is ready for requests; stopped with SIGTERM on the way out."""
    port = free_port()
    process = subprocess.Popen([str(PORTICO), "serve", "--port", str(port)], env=server_environment(setup))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, trust_env=False) as client:
            wait_until_ready(client, process)
            yield client
    finally:
        stop(process)


def served_context_window(client: httpx.Client) -> int:
    response = client.post("/v1/tokenize", json={"model": MODEL, "messages": MESSAGES})
    response.raise_for_status()
    context_window: int = response.json()["max_model_len"]
    return context_window


def stream_chat(client: httpx.Client, max_tokens: int) -> Sample:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = last = 0.0
    parts: list[str] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            usage = chunk.get("usage") or usage
            if content := "".join(choice["delta"].get("content") or "" for choice in chunk["choices"]):
                last = time.perf_counter() - start
                first = first or last
                parts.append(content)
    return Sample(usage["prompt_tokens"], usage["completion_tokens"], first, last, "".join(parts))


def measure_portico(setup: Setup) -> ArmResult:
    with running_server(setup) as client:
        stream_chat(client, setup.max_tokens)  # warm-up
        samples = [stream_chat(client, setup.max_tokens) for _ in range(setup.runs)]
        context_window = served_context_window(client)
    if len({sample.tokens for sample in samples}) != 1:
        raise SystemExit(f"the server produced different token counts at temperature 0: {samples}")
    return ArmResult("Portico HTTP stream", samples, context_window)


# -- raw llama-cpp-python ------------------------------------------------------------------------------
def chat_prompt_tokens(llama: Any) -> list[int]:
    """The prompt exactly as the engine builds it: the GGUF's chat template, then tokenized with specials."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    special = functools.partial(llama.detokenize, special=True)
    formatter: Any = Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"],
        eos_token=special([llama.token_eos()]).decode(errors="ignore"),
        bos_token=special([llama.token_bos()]).decode(errors="ignore"),
    )
    text = formatter(messages=MESSAGES).prompt
    tokens: list[int] = llama.tokenize(text.encode(), add_bos=True, special=True)
    return tokens


def generate_raw(llama: Any, prompt: Sequence[int], count: int) -> Sample:
    first = last = 0.0
    produced: list[int] = []
    start = time.perf_counter()
    tokens = llama.generate(prompt, top_k=TOP_K, top_p=1.0, min_p=MIN_P, temp=0.0)
    for token in tokens:
        produced.append(token)
        last = time.perf_counter() - start
        first = first or last
        if len(produced) == count:  # stop like the engine does at max_tokens: without decoding one more token
            break
    tokens.close()
    text = llama.detokenize(produced).decode(errors="replace")
    return Sample(len(prompt), len(produced), first, last, text)


def measure_raw(setup: Setup, n_ctx: int, count: int) -> ArmResult:
    import llama_cpp

    llama = llama_cpp.Llama(
        model_path=str(setup.model_path),
        n_ctx=n_ctx,
        n_threads=setup.threads,
        flash_attn=setup.flash_attn,
        verbose=False,
    )
    try:
        prompt = chat_prompt_tokens(llama)
        generate_raw(llama, prompt, count)  # warm-up
        samples = [generate_raw(llama, prompt, count) for _ in range(setup.runs)]
    finally:
        llama.close()
    return ArmResult("raw llama-cpp-python", samples, n_ctx)


# -- report --------------------------------------------------------------------------------------------
def different_work(raw: Sample, served: Sample) -> list[str]:
    """Why the two arms did not do the same work, if they did not."""
    problems = []
    if raw.prompt_tokens != served.prompt_tokens:
        problems.append(f"prompts differ: raw {raw.prompt_tokens} tokens, server {served.prompt_tokens}")
    if raw.text != served.text:
        at = next((i for i, (a, b) in enumerate(zip(raw.text, served.text, strict=False)) if a != b), None)
        problems.append(f"generated texts differ (from character {at}); check --flash-attn")
    return problems


def print_rich(rows: list[list[str]]) -> None:
    table = Table(title="Single stream, SmolLM2-135M Q4_1 (medians)")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_markdown(rows: list[list[str]]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join([":---"] + ["---:"] * (len(COLUMNS) - 1)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def parse_args() -> tuple[Setup, bool]:
    parser = argparse.ArgumentParser(description="Single stream: Portico HTTP vs raw llama-cpp-python.")
    parser.add_argument("--tokens", type=int, default=256, help="max_tokens per request (default: 256)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per arm after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="decode threads (default: all cores)")
    parser.add_argument(
        "--flash-attn", choices=["on", "off"], default="on", help="flash attention in the raw arm (default: on)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the docs)")
    args = parser.parse_args()
    return Setup(bundled_gguf(), args.threads, args.tokens, args.runs, args.flash_attn == "on"), args.markdown


def main() -> None:
    setup, markdown = parse_args()
    console.print(f"model {setup.model_path.name}, threads {setup.threads}, runs {setup.runs}", style="dim")
    load_before = os.getloadavg()[0]
    portico = measure_portico(setup)
    raw = measure_raw(setup, portico.context_window, portico.samples[0].tokens)
    for problem in different_work(raw.samples[0], portico.samples[0]):
        console.print(f"[red]warning: {problem}[/red]")
    rows = [raw.row(), portico.row()]
    if markdown:
        print_markdown(rows)
    else:
        print_rich(rows)
    ratio = portico.median(lambda s: s.decode_tps) / raw.median(lambda s: s.decode_tps)
    print(f"\nratio HTTP/raw (decode tokens/s): {ratio:.2f} (target ≥ {TARGET_RATIO:.2f})")
    # A busy machine shows up as a wide range, or a load average well above 0 before the run; rerun then.
    console.print(
        f"decode tokens/s range per run: raw {raw.decode_range()}, HTTP {portico.decode_range()}; "
        f"context window {raw.context_window}; 1-min load average at start {load_before:.2f}",
        style="dim",
    )


if __name__ == "__main__":
    main()
