"""Batches against real `portico serve` processes: the official openai SDK end to end, and a batch that survives
its server being stopped (SIGTERM) or killed (SIGKILL) and finishes on the next one, each line answered once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.databases import POSTGRES_URL, postgres_schema
from tests.system.servers import PORTICO, free_port, portico_env, stop_all, wait_ready

pytestmark = pytest.mark.slow

CONFIG = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 512
parallel_slots = 8
echo = {{ tokens_per_second = {pace} }}

[jobs]
poll_interval_s = 0.1
lease_s = {lease_s}
batch_concurrency = 4
"""
TERMINAL = {"completed", "failed", "cancelled", "expired"}


@contextmanager
def serve(work: Path, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `portico serve` on a free loopback port (auth off: loopback), with work/portico.toml and work/data."""
    env = portico_env(work, **(extra_env or {}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (work / f"serve-{port}.log").open("w") as log:
        process = subprocess.Popen(
            [str(PORTICO), "serve", "--port", str(port)], env=env, cwd=work, stdout=log, stderr=log
        )
        try:
            wait_ready(process, url, timeout_s=60)
            yield url, process
        finally:
            stop_all(process)


def chat_line(custom_id: str, words: str) -> dict[str, Any]:
    body = {"model": "echo", "messages": [{"role": "user", "content": words}], "max_tokens": 16}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def test_the_openai_sdk_runs_a_batch_of_50_chat_requests(tmp_path: Path) -> None:
    (tmp_path / "portico.toml").write_text(CONFIG.format(pace=0, lease_s=30))
    with serve(tmp_path) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused on loopback", max_retries=0)
        lines = [chat_line(f"request-{n}", f"answer number {n}") for n in range(50)]
        requests = "".join(json.dumps(line) + "\n" for line in lines).encode()

        input_file = client.files.create(file=("requests.jsonl", requests), purpose="batch")
        assert (input_file.purpose, input_file.bytes) == ("batch", len(requests))
        batch = client.batches.create(
            input_file_id=input_file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 60
        while batch.status not in TERMINAL:
            assert time.monotonic() < deadline, batch
            time.sleep(0.2)
            batch = client.batches.retrieve(batch.id)

        assert batch.status == "completed"
        assert batch.request_counts is not None
        counts = batch.request_counts
        assert (counts.total, counts.completed, counts.failed) == (50, 50, 0)
        assert batch.output_file_id is not None and batch.error_file_id is None
        output = client.files.content(batch.output_file_id).text
        results = {result["custom_id"]: result for result in map(json.loads, output.splitlines())}
        assert sorted(results) == sorted(f"request-{n}" for n in range(50))
        for custom_id, result in results.items():
            assert result["error"] is None and result["response"]["status_code"] == 200
            answer = result["response"]["body"]["choices"][0]["message"]["content"]
            assert answer == f"answer number {custom_id.removeprefix('request-')}"
        assert [b.id for b in client.batches.list()] == [batch.id]


@pytest.mark.parametrize(
    ("stop", "database"), [(signal.SIGTERM, "sqlite"), (signal.SIGKILL, "postgresql")], ids=["sigterm", "sigkill"]
)
def test_a_batch_finishes_after_its_server_restarts(tmp_path: Path, stop: signal.Signals, database: str) -> None:
    # 10 tokens/s and 4 tokens a line: each line takes 0.4 s, four at a time; 40 lines take about 4 s.
    (tmp_path / "portico.toml").write_text(CONFIG.format(pace=10, lease_s=2))
    lines = [chat_line(f"request-{n}", "one two three four") for n in range(40)]
    requests = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with postgres_schema("batches") if database == "postgresql" else nullcontext(None) as schema:
        env = {"PORTICO_DATABASE_URL": POSTGRES_URL, "PORTICO_DATABASE_SCHEMA": schema} if schema else {}
        with serve(tmp_path, env) as (url, process):
            file_id = httpx.post(
                f"{url}/v1/files", files={"file": ("r.jsonl", requests)}, data={"purpose": "batch"}
            ).json()["id"]
            body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
            batch_id = httpx.post(f"{url}/v1/batches", json=body).json()["id"]
            before = _wait(url, batch_id, lambda batch: batch["request_counts"]["completed"] >= 4)
            process.send_signal(stop)
            process.wait(timeout=30)
        assert before["status"] == "in_progress"

        restarted_at = int(time.time())
        with serve(tmp_path, env) as (url, _):
            batch = _wait(url, batch_id, lambda batch: batch["status"] in TERMINAL)
            assert batch["status"] == "completed" and batch["completed_at"] >= restarted_at  # finished by the new one
            assert batch["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
            output = httpx.get(f"{url}/v1/files/{batch['output_file_id']}/content").text
    custom_ids = [json.loads(line)["custom_id"] for line in output.splitlines()]
    assert sorted(custom_ids) == sorted(f"request-{n}" for n in range(40))  # every line, exactly once


def _wait(url: str, batch_id: str, done: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        batch: dict[str, Any] = httpx.get(f"{url}/v1/batches/{batch_id}").json()
        if done(batch):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
