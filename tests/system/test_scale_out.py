"""Two `portico serve` and two `portico worker` processes on one PostgreSQL and one Redis. 200 jobs go round-robin
to both servers; midway one worker is killed with SIGKILL and one server stopped with SIGTERM. Clients move to
the other server with the same Idempotency-Key. Every job succeeds, once: one result, one `completed` event and
one usage record per job, 200 in all."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from sqlalchemy import func, select

from portico.auth.keys import new_key
from portico.constants import JobEventType, JobStatus
from portico.storage.database import Database
from portico.storage.models import UsageRecord
from portico.storage.resources import Job, JobEvent
from tests.databases import POSTGRES_URL, postgres_schema
from tests.system.servers import PORTICO, free_port, shared_env, stop_all, wait_ready

pytestmark = pytest.mark.slow

JOBS = 200
CONFIG = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 512
parallel_slots = 16
echo = { tokens_per_second = 10 }
pricing = { input_per_million = 1000.0, output_per_million = 2000.0 }
"""
WORDS = " ".join(f"w{i}" for i in range(8))  # 8 tokens at 10 per second: a job of about a second
BODY = {"type": "completion", "request": {"model": "echo", "prompt": WORDS, "max_tokens": 8}}
FINAL = {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value}


class Cluster:
    def __init__(self, schema: str, servers: list[subprocess.Popen[bytes]], urls: list[str]) -> None:
        self.schema = schema
        self.servers = servers
        self.urls = urls
        self.workers: dict[int, subprocess.Popen[bytes]] = {}  # by pid
        self.key: dict[str, str] = {}


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

    with postgres_schema("scale") as schema:
        env = shared_env(
            tmp_path,
            schema,
            PORTICO_REDIS_URL="redis://127.0.0.1:6379/0",
            PORTICO_LIMITS__BACKEND="redis",
            PORTICO_ADMIN_KEY=admin_key,
            PORTICO_JOBS__LEASE_S="2",
            PORTICO_JOBS__POLL_INTERVAL_S="0.1",
            PORTICO_JOBS__IN_PROCESS_WORKER="false",
        )
        processes: list[subprocess.Popen[bytes]] = []
        logs: list[IO[str]] = []

        def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
            log = (tmp_path / f"{name}.log").open("w")
            logs.append(log)
            process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log)
            processes.append(process)
            return process

        try:
            ports = [free_port(), free_port()]
            servers = [
                start(f"serve-{n}", [str(PORTICO), "serve", "--port", str(port)]) for n, port in enumerate(ports)
            ]
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            for server, url in zip(servers, urls, strict=True):
                wait_ready(server, url, timeout_s=60)  # migrated: the workers find the schema ready
            cluster = Cluster(schema, servers, urls)
            workers = [start(f"worker-{n}", [str(PORTICO), "worker", "--concurrency", "8"]) for n in range(2)]
            for number, worker in enumerate(workers):
                _wait_for_log(tmp_path / f"worker-{number}.log", "worker ready", worker)
            cluster.workers = {worker.pid: worker for worker in workers}
            admin = {"authorization": f"Bearer {admin_key}"}
            # The standard tier's limits (600 requests a minute, 32 at once) hold 200 jobs; Redis keeps them.
            body = {"project": "default", "scopes": ["jobs:read", "jobs:write"], "tier": "standard"}
            created = httpx.post(f"{urls[0]}/v1/admin/keys", json=body, headers=admin, timeout=30)
            assert created.status_code == 201, created.text
            cluster.key = {"authorization": f"Bearer {created.json()['value']}"}
            yield cluster
        finally:
            stop_all(*processes)
            for log in logs:
                log.close()


class Submitter:
    """Submits jobs round-robin; a server that is gone or stopping gets the same request (same Idempotency-Key)
    sent to the other server, as a client behind a load balancer would see it."""

    def __init__(self, cluster: Cluster, http: httpx.AsyncClient) -> None:
        self.cluster = cluster
        self.http = http
        self.job_ids: list[str] = []
        self.statuses: Counter[int] = Counter()  # every answer, by status
        self.transport_errors = 0  # refused or cut connections, while a server stopped
        self.resent = 0  # submissions that went to the other server

    async def submit(self, number: int) -> None:
        headers = self.cluster.key | {"idempotency-key": uuid.uuid4().hex}
        deadline = time.monotonic() + 60
        target = number % 2
        while True:
            try:
                response = await self.http.post(f"{self.cluster.urls[target]}/v1/jobs", json=BODY, headers=headers)
            except httpx.TransportError:
                self.transport_errors += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code == 202:
                    self.job_ids.append(response.json()["id"])
                    return
                assert response.status_code == 503, response.text  # a stopping server may refuse; nothing else
            assert time.monotonic() < deadline, f"job {number} could not be submitted"
            self.resent += 1
            target = 1 - target
            await asyncio.sleep(0.05)


async def _busy_workers(database: Database) -> tuple[int, set[int]]:
    """How many jobs succeeded so far, and the pids of the workers running jobs now."""
    async with database.session() as session:
        succeeded = await session.scalar(select(func.count()).where(Job.status == JobStatus.SUCCEEDED.value))
        query = select(Job.lease_owner).where(Job.status == JobStatus.RUNNING.value, Job.lease_owner.is_not(None))
        owners = (await session.scalars(query)).all()
    return succeeded or 0, {int(owner.split(":")[-2]) for owner in owners if owner is not None}


async def _kill_a_busy_worker(cluster: Cluster, database: Database) -> int:
    """SIGKILL a worker midway, while it runs jobs and once a quarter of them succeeded (the usage of those it
    just finished not yet written by its recorder's timer); its pid."""
    deadline = time.monotonic() + 60
    while True:
        succeeded, running = await _busy_workers(database)
        pids = running & set(cluster.workers)
        if succeeded >= JOBS // 4 and pids:
            victim = min(pids)
            cluster.workers[victim].send_signal(signal.SIGKILL)
            return victim
        assert time.monotonic() < deadline, f"the workers finished {succeeded} jobs and then stopped running any"
        await asyncio.sleep(0.05)


async def _until_all_final(database: Database) -> list[Job]:
    """Every job in the schema, once all are final."""
    deadline = time.monotonic() + 90
    while True:
        async with database.session() as session:
            jobs = list((await session.scalars(select(Job))).all())
        unfinished = [job for job in jobs if job.status not in FINAL]
        if not unfinished:
            return jobs
        assert time.monotonic() < deadline, f"{len(unfinished)} jobs never finished"
        await asyncio.sleep(0.5)


async def _per_job(database: Database, column: object, *where: object) -> Counter[str]:
    async with database.session() as session:
        rows = await session.execute(select(column, func.count()).where(*where).group_by(column))
        return Counter(dict(rows.all()))


async def _usage_per_job(database: Database) -> Counter[str]:
    """Usage records per request id (a job's is its id), once the survivors have written theirs."""
    deadline = time.monotonic() + 15
    while len(await _per_job(database, UsageRecord.request_id)) < JOBS:
        if time.monotonic() > deadline:
            break  # the assertions below say which are missing
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # a second write of any job's usage would land by now
    return await _per_job(database, UsageRecord.request_id)


async def test_jobs_survive_a_killed_worker_and_a_stopped_server(cluster: Cluster) -> None:
    database = Database(POSTGRES_URL, schema=cluster.schema)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            submitter = Submitter(cluster, http)
            numbers = iter(range(JOBS))  # shared: each number is submitted by one client

            async def client() -> None:
                for number in numbers:
                    await submitter.submit(number)

            clients = [asyncio.create_task(client()) for _ in range(8)]
            while len(submitter.job_ids) < JOBS // 2:
                await asyncio.sleep(0.02)
            cluster.servers[1].send_signal(signal.SIGTERM)
            victim = await _kill_a_busy_worker(cluster, database)
            await asyncio.gather(*clients)
        await asyncio.to_thread(cluster.servers[1].wait, 30)  # a graceful stop: it finished its requests
        assert await asyncio.to_thread(cluster.workers[victim].wait, 30) == -signal.SIGKILL

        jobs = await _until_all_final(database)
        # A resent submission returned its first job, never a second one.
        assert len(submitter.job_ids) == JOBS and {job.id for job in jobs} == set(submitter.job_ids)
        assert Counter(job.status for job in jobs) == {JobStatus.SUCCEEDED.value: JOBS}
        assert {job.result["choices"][0]["text"] for job in jobs if job.result is not None} == {WORDS}
        restarted = [job for job in jobs if job.attempts > 1]
        assert restarted, "the killed worker held running jobs: they must have run again"

        completed = await _per_job(database, JobEvent.job_id, JobEvent.type == JobEventType.COMPLETED.value)
        assert set(completed.values()) == {1} and len(completed) == JOBS  # none completed twice
        usage = await _usage_per_job(database)
        assert set(usage.values()) == {1}, usage.most_common(3)  # none billed twice
        assert set(usage) == set(submitter.job_ids), (
            f"jobs without a usage record: {set(submitter.job_ids) - set(usage)}"
        )
    finally:
        await database.close()
    print(
        f"\nscale-out: {JOBS} jobs, {len(restarted)} restarted after the SIGKILL, {sum(usage.values())} usage "
        f"records; submissions: {dict(submitter.statuses)}, {submitter.transport_errors} transport errors, "
        f"{submitter.resent} resent to the other server"
    )
