"""Two `portico worker` processes and one `portico serve` on one PostgreSQL: a job whose worker is killed with
SIGKILL mid-job is finished by the other worker once the lease lapses, with one result and one usage record."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import select

from portico.auth.keys import new_key
from portico.storage.database import Database
from portico.storage.models import UsageRecord
from portico.storage.resources import Job
from tests.databases import POSTGRES_URL, postgres_schema
from tests.system.servers import PORTICO, free_port, shared_env, stop_all, wait_ready

pytestmark = pytest.mark.slow

CONFIG = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 512
echo = { tokens_per_second = 10 }
pricing = { input_per_million = 1000.0, output_per_million = 2000.0 }
"""
WORDS = " ".join(f"w{i}" for i in range(40))  # 40 tokens at 10 per second: a job of about 4 s


class Cluster:
    def __init__(self, url: str, schema: str, workers: dict[int, subprocess.Popen[bytes]], admin: str) -> None:
        self.url = url
        self.schema = schema
        self.workers = workers  # by pid
        self.admin = {"authorization": f"Bearer {admin}"}


def _wait_for_log(path: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert process.poll() is None, f"{path.name}: the process exited:\n{path.read_text()}"
        assert time.monotonic() < deadline, f"{path.name} never said {text!r}"
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    (tmp_path / "portico.toml").write_text(CONFIG)
    admin_key = new_key().plaintext

    with postgres_schema("jobs") as schema:
        env = shared_env(
            tmp_path,
            schema,
            PORTICO_ADMIN_KEY=admin_key,
            PORTICO_JOBS__LEASE_S="2",
            PORTICO_JOBS__POLL_INTERVAL_S="0.1",
        )
        processes: list[subprocess.Popen[bytes]] = []
        logs: list[IO[str]] = []

        def start(name: str, command: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
            log = (tmp_path / f"{name}.log").open("w")
            logs.append(log)
            process = subprocess.Popen(command, env=env | extra, cwd=tmp_path, stdout=log, stderr=log)
            processes.append(process)
            return process

        try:
            port = free_port()
            no_worker = {"PORTICO_JOBS__IN_PROCESS_WORKER": "false"}
            serve = start("serve", [str(PORTICO), "serve", "--port", str(port)], no_worker)
            url = f"http://127.0.0.1:{port}"
            wait_ready(serve, url, timeout_s=60)  # migrated: the workers find the schema ready
            workers = [start(f"worker-{n}", [str(PORTICO), "worker"], {}) for n in range(2)]
            for number, worker in enumerate(workers):
                _wait_for_log(tmp_path / f"worker-{number}.log", "worker ready", worker)
            yield Cluster(url, schema, {worker.pid: worker for worker in workers}, admin_key)
        finally:
            stop_all(*processes)
            for log in logs:
                log.close()


async def _job_row(schema: str, job_id: str) -> Job:
    database = Database(POSTGRES_URL, schema=schema)
    try:
        async with database.session() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            return job
    finally:
        await database.close()


async def _usage_of(schema: str, job_id: str) -> list[UsageRecord]:
    database = Database(POSTGRES_URL, schema=schema)
    try:
        async with database.session() as session:
            query = select(UsageRecord).where(UsageRecord.request_id == job_id)
            return list((await session.scalars(query)).all())
    finally:
        await database.close()


def _poll_job(http: httpx.Client, job_id: str, done: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']} ({job['progress']})"
        time.sleep(0.05)


def test_a_job_whose_worker_is_killed_is_finished_by_the_other_worker(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, headers=cluster.admin, timeout=30) as admin:
        created = admin.post("/v1/admin/keys", json={"project": "default", "scopes": ["jobs:read", "jobs:write"]})
        assert created.status_code == 201, created.text
    key = {"authorization": f"Bearer {created.json()['value']}"}

    with httpx.Client(base_url=cluster.url, headers=key, timeout=30) as http:
        body = {"type": "completion", "request": {"model": "echo", "prompt": WORDS, "max_tokens": 40}}
        submitted = http.post("/v1/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        _poll_job(http, job_id, lambda job: job["progress"]["completion_tokens"] >= 5)

        first_owner = asyncio.run(_job_row(cluster.schema, job_id)).lease_owner
        assert first_owner is not None
        victim = int(first_owner.split(":")[-2])  # host:pid:random
        assert victim in cluster.workers
        os.kill(victim, signal.SIGKILL)
        cluster.workers[victim].wait(timeout=10)

        job = _poll_job(http, job_id, lambda job: job["status"] in {"succeeded", "failed", "cancelled"})
        events = http.get(f"/v1/jobs/{job_id}/events").text

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["result"]["choices"][0]["text"] == WORDS
    assert job["usage"]["completion_tokens"] == 40
    final_owner = asyncio.run(_job_row(cluster.schema, job_id)).lease_owner
    assert final_owner is not None
    survivor = int(final_owner.split(":")[-2])
    assert survivor != victim and survivor in cluster.workers
    assert events.count("event: started") == 2
    assert events.count("event: completed") == 1

    # The survivor writes its usage records within a second; the killed attempt's died with its process.
    deadline = time.monotonic() + 10
    while not (records := asyncio.run(_usage_of(cluster.schema, job_id))):
        assert time.monotonic() < deadline, "no usage record was written"
        time.sleep(0.2)
    time.sleep(1.5)
    records = asyncio.run(_usage_of(cluster.schema, job_id))
    assert [(record.status, record.completion_tokens) for record in records] == [(200, 40)]
