"""Two `portico serve` processes on one PostgreSQL and one Redis: limits, quotas and revocation hold across both."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from portico.auth.keys import new_key
from tests.databases import postgres_schema
from tests.system.servers import PORTICO, free_port, shared_env, stop_all, wait_ready

pytestmark = pytest.mark.slow

CONFIG = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 512
parallel_slots = 16
echo = { tokens_per_second = 50 }
pricing = { input_per_million = 1000.0, output_per_million = 2000.0 }
"""
PROMPT = " ".join(f"w{i}" for i in range(40))  # 40 prompt tokens; the echo engine answers with them
LONG_PROMPT = " ".join(f"w{i}" for i in range(250))  # at 50 tokens per second, an answer of about 5 s


class Cluster:
    def __init__(self, urls: list[str], admin_key: str) -> None:
        self.urls = urls
        self.admin = {"authorization": f"Bearer {admin_key}"}

    def create_key(self, limits: dict[str, int | float]) -> dict[str, str]:
        created = httpx.post(
            f"{self.urls[0]}/v1/admin/keys",
            json={"project": "default", "scopes": ["inference", "usage:read"], "tier": "unlimited", "limits": limits},
            headers=self.admin,
        )
        assert created.status_code == 201, created.text
        return {"authorization": f"Bearer {created.json()['value']}"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    (work / "portico.toml").write_text(CONFIG)
    admin_key = new_key().plaintext

    with postgres_schema("cluster") as schema:
        env = shared_env(
            work,
            schema,
            PORTICO_REDIS_URL="redis://127.0.0.1:6379/0",
            PORTICO_LIMITS__BACKEND="redis",
            PORTICO_ADMIN_KEY=admin_key,
        )
        processes, urls, logs = [], [], []
        try:
            for number in range(2):
                port = free_port()
                log = (work / f"serve-{number}.log").open("w")
                logs.append(log)
                command = [str(PORTICO), "serve", "--port", str(port)]
                processes.append(subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=log))
                urls.append(f"http://127.0.0.1:{port}")
            for process, url in zip(processes, urls, strict=True):
                wait_ready(process, url, timeout_s=60)
            yield Cluster(urls, admin_key)
        finally:
            stop_all(*processes)
            for log in logs:
                log.close()


async def _send_round_robin(
    cluster: Cluster, key: dict[str, str], bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as http:
        return await asyncio.gather(
            *(
                http.post(f"{cluster.urls[number % 2]}/v1/completions", json=body, headers=key)
                for number, body in enumerate(bodies)
            )
        )


def test_request_rate_is_exact_across_two_servers(cluster: Cluster) -> None:
    # 6 per minute: one more request would need 10 s of refill, far longer than this burst takes.
    key = cluster.create_key({"requests_per_minute": 6})
    body = {"model": "echo", "prompt": "hello there", "max_tokens": 2}
    responses = asyncio.run(_send_round_robin(cluster, key, [body] * 18))
    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == 6, statuses
    assert statuses.count(429) == 12
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"requests_per_minute"}
    served_by_both = {number % 2 for number, response in enumerate(responses) if response.status_code == 200}
    assert served_by_both == {0, 1} or len(served_by_both) == 1  # whichever process won, the total is exact


def test_daily_token_quota_is_exact_with_concurrent_streams(cluster: Cluster) -> None:
    # Each stream reserves and uses 40 + 10 tokens; the quota holds exactly five of them.
    key = cluster.create_key({"tokens_per_day": 250})
    body = {
        "model": "echo",
        "prompt": PROMPT,
        "max_tokens": 10,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    responses = asyncio.run(_send_round_robin(cluster, key, [body] * 15))
    admitted = [response for response in responses if response.status_code == 200]
    assert len(admitted) == 5, [response.status_code for response in responses]
    assert all(response.text.rstrip().endswith("data: [DONE]") for response in admitted)
    rejected = [response for response in responses if response.status_code != 200]
    assert {(r.status_code, r.json()["error"]["code"]) for r in rejected} == {(429, "tokens_per_day")}

    # Each server writes its usage records within a second; wait for both.
    deadline = time.monotonic() + 10
    while (usage := _usage_of(cluster, key))["requests"] < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (5, 200, 50)
    after = httpx.post(f"{cluster.urls[0]}/v1/completions", json={**body, "stream": False}, headers=key)
    assert after.status_code == 429


def _usage_of(cluster: Cluster, key: dict[str, str]) -> dict[str, int]:
    """This key's usage (the project holds other tests' keys too)."""
    key_id = key["authorization"].split("-")[1]
    report = httpx.get(f"{cluster.urls[1]}/v1/usage", params={"group_by": "key"}, headers=key).json()
    empty = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    return next((bucket for bucket in report["buckets"] if bucket["key"] == key_id), empty)


def test_concurrent_requests_are_capped_across_two_servers(cluster: Cluster) -> None:
    key = cluster.create_key({"max_concurrent": 3})
    long = {"model": "echo", "prompt": LONG_PROMPT, "max_tokens": 250, "stream": True}
    readers: list[Iterator[str]] = []  # kept: a reader that is garbage-collected closes its connection
    with ExitStack() as streams:
        for number in range(3):  # one slot each, held on both servers
            url = f"{cluster.urls[number % 2]}/v1/completions"
            opened = streams.enter_context(httpx.stream("POST", url, json=long, headers=key, timeout=60))
            assert opened.status_code == 200
            readers.append(opened.iter_lines())
            assert next(readers[-1]).startswith("data: ")  # admitted and generating
        body = {"model": "echo", "prompt": "hello there", "max_tokens": 2}
        responses = asyncio.run(_send_round_robin(cluster, key, [body] * 8))
        assert [r.status_code for r in responses] == [429] * 8, [r.text for r in responses]
        assert {r.json()["error"]["code"] for r in responses} == {"concurrency"}
    # The streams' clients left: their slots free up, on whichever server held them.
    deadline = time.monotonic() + 10
    while (response := httpx.post(f"{cluster.urls[1]}/v1/completions", json=body, headers=key)).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)


def test_revocation_on_one_server_applies_on_the_other_within_a_second(cluster: Cluster) -> None:
    key = cluster.create_key({})
    key_id = key["authorization"].split("-")[1]
    assert httpx.get(f"{cluster.urls[1]}/v1/tokenize", headers=key).status_code != 401  # cached on server B
    revoked = httpx.delete(f"{cluster.urls[0]}/v1/admin/keys/{key_id}", headers=cluster.admin)
    assert revoked.status_code == 200
    started = time.monotonic()
    while True:
        response = httpx.post(f"{cluster.urls[1]}/v1/tokenize", json={"model": "echo", "prompt": "x"}, headers=key)
        if response.status_code == 401:
            break
        assert time.monotonic() - started < 1.0, "server B still accepted the revoked key after a second"
        time.sleep(0.02)
    assert response.json()["error"]["code"] == "revoked_api_key"
