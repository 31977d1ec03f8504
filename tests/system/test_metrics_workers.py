"""`portico serve --workers 2`: /metrics adds up both processes, whichever of them answers the scrape."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.observability.support import Samples, parse, value
from tests.system.servers import PORTICO, free_port, portico_env, stop_all, wait_ready

pytestmark = pytest.mark.slow

CONFIG = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 512
parallel_slots = 8
echo = { tokens_per_second = 200 }

[cache]
enabled = false
"""
REQUESTS = 40  # every other one streamed
MODEL = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "echo-2026-01-01"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    (tmp_path / "portico.toml").write_text(CONFIG)
    port = free_port()
    env = portico_env(tmp_path) | {"TMPDIR": str(tmp_path)}  # where `serve` makes the shared metrics directory
    log = (tmp_path / "serve.log").open("w")
    command = [str(PORTICO), "serve", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        yield url, tmp_path
    finally:
        stop_all(process)
        log.close()


def _chat(url: str, number: int) -> tuple[int, int]:
    """One request (streamed when ``number`` is odd); its prompt and completion tokens."""
    prompt = " ".join(f"w{number}-{i}" for i in range(number % 7 + 3))
    body = {"model": "echo", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
    if number % 2 == 0:
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
    else:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 200, response.text
        last = [line for line in response.text.splitlines() if '"usage":{' in line][-1]
        usage = httpx.Response(200, content=last.removeprefix("data: ")).json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def _scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return parse(response.text)


def test_metrics_add_up_across_worker_processes(server: tuple[str, Path]) -> None:
    url, work = server
    with ThreadPoolExecutor(max_workers=8) as pool:
        used = list(pool.map(lambda number: _chat(url, number), range(REQUESTS)))
    prompt, completion = sum(p for p, _ in used), sum(c for _, c in used)

    # Both processes answered part of the traffic: each wrote its own sample file.
    writers = {path.stem.split("_")[-1] for path in work.glob("portico-metrics-*/histogram_*.db")}
    assert len(writers) == 2, writers

    # A request is counted once its response has ended, which the client may see a moment before.
    route = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    deadline = time.monotonic() + 10
    while value(_scrape(url), "portico_http_requests_total", **route) < REQUESTS and time.monotonic() < deadline:
        time.sleep(0.05)

    # Each scrape lands on either process; every one reports the totals of both.
    for _ in range(10):
        samples = _scrape(url)
        assert value(samples, "gen_ai_client_token_usage_sum", **MODEL, gen_ai_token_type="input") == prompt
        assert value(samples, "gen_ai_client_token_usage_sum", **MODEL, gen_ai_token_type="output") == completion
        assert value(samples, "gen_ai_client_token_usage_count", **MODEL, gen_ai_token_type="input") == REQUESTS
        assert value(samples, "gen_ai_server_time_to_first_token_seconds_count", **MODEL) == REQUESTS
        assert value(samples, "portico_http_requests_total", **route) == REQUESTS
        assert value(samples, "portico_active_streams") == 0
