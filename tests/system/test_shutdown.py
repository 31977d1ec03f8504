"""Graceful shutdown: SIGTERM to a `portico serve` that has streams open and a job running ends the streams
with a retryable error event, hands the job back to the queue (a `portico worker` on the same PostgreSQL
finishes it), writes the usage of the interrupted work, and exits."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import select

from portico.storage.database import Database
from portico.storage.models import UsageRecord
from portico.storage.resources import Job
from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings, sse_events, wait_until
from tests.databases import POSTGRES_URL, postgres_schema
from tests.system.servers import PORTICO, free_port, portico_env, wait_ready

pytestmark = pytest.mark.slow

CONFIG = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 2048
echo = { tokens_per_second = 20 }
"""
TOKENS = 300
WORDS = " ".join(f"w{i}" for i in range(TOKENS))  # at 20 tokens per second: 15 s, longer than all before the drain
STREAMS = 3
EXIT_BOUND_S = 60  # generous: the deadline is 10 s of graceful wait plus the job drain


@dataclass
class Stream:
    """One streamed chat completion read on a thread: its request id and every `data:` payload it got."""

    request_id: str = ""
    payloads: list[str] = field(default_factory=list)
    first: threading.Event = field(default_factory=threading.Event)


def _read_stream(url: str, stream: Stream) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": WORDS}], "stream": True, "max_tokens": TOKENS}
    with httpx.Client(base_url=url, timeout=60) as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        stream.request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data: "):
                stream.payloads.append(line[len("data: ") :])
                stream.first.set()


async def _rows(schema: str, job_id: str, request_ids: list[str]) -> tuple[Job, list[UsageRecord]]:
    database = Database(POSTGRES_URL, schema=schema)
    try:
        async with database.session() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            query = select(UsageRecord).where(UsageRecord.request_id.in_([job_id, *request_ids]))
            return job, list((await session.scalars(query)).all())
    finally:
        await database.close()


def _poll_job(http: httpx.Client, job_id: str, done: Any, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']} ({job['progress']})"
        time.sleep(0.1)


def _wait_for_log(path: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert process.poll() is None, f"{path.name}: the process exited:\n{path.read_text()}"
        assert time.monotonic() < deadline, f"{path.name} never said {text!r}"
        time.sleep(0.1)


@dataclass
class Deployment:
    tmp_path: Path
    env: dict[str, str]
    schema: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[str]] = field(default_factory=list)

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{name}.log").open("w")
        self.logs.append(log)
        process = subprocess.Popen([str(PORTICO), *command], env=self.env, cwd=self.tmp_path, stdout=log, stderr=log)
        self.processes.append(process)
        return process


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    (tmp_path / "portico.toml").write_text(CONFIG)
    with postgres_schema("shutdown") as schema:
        env = portico_env(
            tmp_path,
            PORTICO_DATABASE_URL=POSTGRES_URL,
            PORTICO_DATABASE_SCHEMA=schema,
            PORTICO_AUTH__ENABLED="false",
            PORTICO_JOBS__LEASE_S="30",  # the other worker must not wait for a lapse: the job is handed back
            PORTICO_JOBS__POLL_INTERVAL_S="0.2",
            PORTICO_SHUTDOWN_TIMEOUT_S="10",
        )
        deployment = Deployment(tmp_path, env, schema)
        try:
            yield deployment
        finally:
            for process in deployment.processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in deployment.processes:
                process.wait(timeout=EXIT_BOUND_S)
            for log in deployment.logs:
                log.close()


def test_sigterm_ends_streams_hands_the_job_back_and_exits(deployment: Deployment) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = deployment.start("serve", "serve", "--port", str(port))
    wait_ready(serve, url, timeout_s=60)

    with httpx.Client(base_url=url, timeout=30) as http:
        body = {"type": "completion", "request": {"model": "echo", "prompt": WORDS, "max_tokens": TOKENS}}
        submitted = http.post("/v1/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        _poll_job(http, job_id, lambda job: job["progress"]["completion_tokens"] >= 3)

    streams = [Stream() for _ in range(STREAMS)]
    readers = [threading.Thread(target=_read_stream, args=(url, stream)) for stream in streams]
    for reader in readers:
        reader.start()
    for stream in streams:
        assert stream.first.wait(timeout=30), "a stream sent nothing"

    worker = deployment.start("worker", "worker")  # only now, so the job was claimed by the server's own worker
    _wait_for_log(deployment.tmp_path / "worker.log", "worker ready", worker)
    serve.send_signal(signal.SIGTERM)

    for reader in readers:
        reader.join(timeout=EXIT_BOUND_S)
        assert not reader.is_alive(), "a stream stayed open after SIGTERM"
    # uvicorn re-raises the signal it handled once it has shut down, so a clean exit reads as -SIGTERM.
    assert serve.wait(timeout=EXIT_BOUND_S) in {0, -signal.SIGTERM}
    assert "Application shutdown complete" in (deployment.tmp_path / "serve.log").read_text()
    for stream in streams:
        assert stream.payloads[-1] != "[DONE]"
        last = json.loads(stream.payloads[-1])
        assert last["error"]["code"] == "engine_unavailable"
        assert last["error"]["retryable"] is True
        assert "shutting down" in last["error"]["message"]
        assert len(stream.payloads) < TOKENS  # it ended early, not after its last token

    # The server is gone; the job is the worker's now. Read it through a second server on the same database.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    deployment.env["PORTICO_JOBS__IN_PROCESS_WORKER"] = "false"
    reader_server = deployment.start("serve-2", "serve", "--port", str(port))
    wait_ready(reader_server, url, timeout_s=60)
    with httpx.Client(base_url=url, timeout=30) as http:
        job = _poll_job(http, job_id, lambda job: job["status"] in {"succeeded", "failed", "cancelled"})
        events = http.get(f"/v1/jobs/{job_id}/events").text
    assert job["status"] == "succeeded", job
    assert job["result"]["choices"][0]["text"] == WORDS
    assert job["attempts"] == 1  # the handed-back attempt does not count against jobs.max_attempts
    assert "worker_stopping" in events
    assert events.count("event: started") == 2

    request_ids = [stream.request_id for stream in streams]
    deadline = time.monotonic() + 10  # the worker writes its usage records within a second or so
    while True:
        row, records = asyncio.run(_rows(deployment.schema, job_id, request_ids))
        if any(record.request_id == job_id and record.status == 200 for record in records):
            break
        assert time.monotonic() < deadline, f"the job's usage record was never written: {records}"
        time.sleep(0.2)
    assert row.lease_owner is not None and f":{worker.pid}:" in row.lease_owner  # the worker finished it
    by_request: dict[str, list[tuple[bool, int]]] = {}
    for record in records:
        by_request.setdefault(record.request_id, []).append((record.cancelled, record.completion_tokens))
    for stream in streams:  # the interrupted streams are billed for the tokens they got
        [(cancelled, tokens)] = by_request[stream.request_id]
        assert cancelled and 0 < tokens < TOKENS
    # The server's interrupted attempt is recorded (what it generated before the hand-back), then the worker's.
    finished, interrupted = sorted(by_request[job_id])
    assert finished == (False, TOKENS)
    assert interrupted[0] is True and 0 < interrupted[1] < TOKENS


async def test_readyz_answers_shutting_down_once_the_shutdown_began() -> None:
    async with asgi_client(echo_settings()) as (http, app):
        assert (await http.get("/readyz")).status_code == 200
        app.state.runtime.shutting_down.set()
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "shutting_down"


async def test_a_stream_opened_once_the_shutdown_began_ends_with_the_retry_event() -> None:
    body = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "hello there"}], "stream": True}
    async with asgi_client(echo_settings()) as (http, app):
        app.state.runtime.shutting_down.set()
        await wait_until(lambda: app.state.open_streams.closing)
        response = await http.post("/v1/chat/completions", json=body)
    [payload] = sse_events(response.text)
    error = json.loads(payload)["error"]
    assert (error["code"], error["retryable"]) == ("engine_unavailable", True)
