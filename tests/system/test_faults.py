"""`portico serve` under faults of what it depends on, with traffic running: Redis killed and brought back,
PostgreSQL restarted, and an upstream that is slow, fails, drops connections and sends broken JSON.

Every client gets an answer or a well-formed error (never a 500, a stack trace or a hung connection), the
server stays up, and service recovers when the dependency does. Redis and PostgreSQL here are private
instances (tests/system/services.py): the shared ones serve other tests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from portico.auth.keys import new_key
from tests.system.servers import PORTICO, free_port, portico_env, stop_all, wait_ready
from tests.system.services import PrivatePostgres, PrivateRedis, private_postgres, private_redis
from tests.upstream_mock import MockUpstream

pytestmark = pytest.mark.slow

ECHO = """
[[models]]
alias = "echo"
snapshot = "echo-2026-01-01"
engine = "echo"
context_window = 512
parallel_slots = 16
pricing = { input_per_million = 1.0, output_per_million = 2.0 }
"""
COMPLETION = {"model": "echo", "prompt": "hello there", "max_tokens": 4}
CLIENTS = 8
# A client whose request is not answered by then has hit a hung connection: the test fails on it.
CLIENT_TIMEOUT_S = 30


class Traffic:
    """``CLIENTS`` clients sending requests in a loop; every answer is checked to be well-formed and counted
    in the phase it was sent in."""

    def __init__(self, send: Callable[[], Awaitable[httpx.Response]]) -> None:
        self._send = send
        self.phase = "before"
        self.statuses: dict[str, Counter[str]] = {}  # phase → "200" or "<status> <code>" → how many
        self.served_ids: list[str] = []  # X-Request-ID of every 200
        self._stop = asyncio.Event()
        self._clients: list[asyncio.Task[None]] = []

    def __enter__(self) -> Traffic:
        self._clients = [asyncio.create_task(self._client()) for _ in range(CLIENTS)]
        return self

    def __exit__(self, *_: object) -> None:
        for client in self._clients:
            client.cancel()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._clients)

    def count(self, phase: str, outcome: str = "200") -> int:
        return self.statuses.get(phase, Counter())[outcome]

    async def until(self, phase: str, outcome: str, at_least: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count(phase, outcome) < at_least:
            assert time.monotonic() < deadline, f"{phase}: {self.statuses.get(phase)}, never {at_least} of {outcome!r}"
            await asyncio.sleep(0.05)

    async def _client(self) -> None:
        while not self._stop.is_set():
            phase = self.phase
            response = await self._send()
            self.statuses.setdefault(phase, Counter())[_outcome(response)] += 1
            if response.status_code == 200:
                self.served_ids.append(response.headers["x-request-id"])


def _outcome(response: httpx.Response) -> str:
    """``"200"``, or the status and code of a well-formed error envelope (asserted)."""
    if response.status_code == 200:
        return "200"
    assert_well_formed_error(response)
    return f"{response.status_code} {response.json()['error']['code']}"


def assert_well_formed_error(response: httpx.Response) -> None:
    assert response.status_code != 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert error["message"] and error["code"] and error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and ".py" not in error["message"], error


class Server:
    """`portico serve` in ``work`` with ``settings`` (PORTICO_... variables), stopped with SIGTERM on exit."""

    def __init__(self, work: Path, config: str, **settings: str) -> None:
        (work / "portico.toml").write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "serve.log"
        self._log = self.log_path.open("w")
        command = [str(PORTICO), "serve", "--port", str(self.port)]
        env = portico_env(work, **settings)
        self.process = subprocess.Popen(command, env=env, cwd=work, stdout=self._log, stderr=self._log)

    def __enter__(self) -> Server:
        wait_ready(self.process, self.url, timeout_s=60)
        return self

    def __exit__(self, *_: object) -> None:
        stop_all(self.process)
        self._log.close()


# -- Redis -----------------------------------------------------------------------------------------------


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    with private_redis() as redis:
        yield redis


def _create_key(url: str, admin_key: str, limits: dict[str, int]) -> dict[str, str]:
    body = {"project": "default", "scopes": ["inference"], "tier": "unlimited", "limits": limits}
    created = httpx.post(f"{url}/v1/admin/keys", json=body, headers={"authorization": f"Bearer {admin_key}"})
    assert created.status_code == 201, created.text
    return {"authorization": f"Bearer {created.json()['value']}"}


async def _limits_check(http: httpx.AsyncClient) -> str:
    state: str = (await http.get("/readyz")).json()["checks"]["limits"]
    return state


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_redis_killed_mid_traffic_and_brought_back(tmp_path: Path, redis: PrivateRedis, policy: str) -> None:
    admin_key = new_key().plaintext
    settings = {
        "PORTICO_REDIS_URL": redis.url,
        "PORTICO_LIMITS__BACKEND": "redis",
        "PORTICO_LIMITS__ON_REDIS_ERROR": policy,
        "PORTICO_AUTH__ENABLED": "true",
        "PORTICO_ADMIN_KEY": admin_key,
        "PORTICO_AUTH__SECRET": secrets.token_hex(32),
    }
    with Server(tmp_path, ECHO, **settings) as server:
        key = _create_key(server.url, admin_key, {"requests_per_minute": 1_000_000, "max_concurrent": 64})
        async with httpx.AsyncClient(base_url=server.url, headers=key, timeout=CLIENT_TIMEOUT_S) as http:
            with Traffic(lambda: http.post("/v1/completions", json=COMPLETION)) as traffic:
                await traffic.until("before", "200", 50)
                traffic.phase = "outage"
                redis.stop()
                during = "200" if policy == "open" else "503 limits_unavailable"
                await traffic.until("outage", during, 100)
                assert (await _limits_check(http)) == "unavailable"
                redis.start()
                traffic.phase = "recovery"
                await traffic.until("recovery", "200", 100)
                traffic.phase = "after"
                await traffic.until("after", "200", 50)
                await traffic.stop()
            assert await _limits_check(http) == "ok"
            assert server.process.poll() is None

        # Requests in flight when Redis died may get the outage's answer, and those just after it came back too.
        statuses = traffic.statuses
        outcomes = {outcome for counts in statuses.values() for outcome in counts}
        assert outcomes == ({"200"} if policy == "open" else {"200", "503 limits_unavailable"}), statuses
        assert set(statuses["after"]) == {"200"}, statuses

        # Limits hold again: a fresh key with 2 requests a minute gets its third refused.
        limited = _create_key(server.url, admin_key, {"requests_per_minute": 2})
        answers = [httpx.post(f"{server.url}/v1/completions", json=COMPLETION, headers=limited) for _ in range(3)]
        assert [answer.status_code for answer in answers] == [200, 200, 429]
    print(f"\nredis killed ({policy}): {_figures(statuses)}")


def _figures(statuses: dict[str, Counter[str]]) -> str:
    return "; ".join(f"{phase}: {dict(counts)}" for phase, counts in statuses.items())


# -- PostgreSQL ------------------------------------------------------------------------------------------


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as postgres:
        yield postgres


async def test_postgres_down_mid_traffic_loses_no_usage_record(tmp_path: Path, postgres: PrivatePostgres) -> None:
    # Auth off: a request needs no database on its way, only its usage record does, written after it.
    settings = {"PORTICO_DATABASE_URL": postgres.url, "PORTICO_AUTH__ENABLED": "false"}
    with Server(tmp_path, ECHO, **settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
            with Traffic(lambda: http.post("/v1/completions", json=COMPLETION)) as traffic:
                await traffic.until("before", "200", 100)
                traffic.phase = "restart"
                await asyncio.to_thread(postgres.stop)
                await _until_logged(server, "usage flush failed")  # a write failed: its records wait
                await asyncio.to_thread(postgres.start)
                traffic.phase = "after"
                await traffic.until("after", "200", 100)
                await traffic.stop()
        assert server.process.poll() is None

        # The writes that failed while the database was down are retried: every answered request is recorded.
        served = set(traffic.served_ids)
        deadline = time.monotonic() + 30
        while len(recorded := _recorded_ids(postgres)) < len(served):
            assert time.monotonic() < deadline, f"{len(served - recorded)} of {len(served)} usage records missing"
            await asyncio.sleep(0.5)
        assert recorded == served
    assert traffic.count("restart") > 0, traffic.statuses  # requests were answered while it was down
    assert {outcome for counts in traffic.statuses.values() for outcome in counts} == {"200"}, traffic.statuses
    print(f"\npostgres restarted: {_figures(traffic.statuses)}; {len(recorded)} usage records")


async def _until_logged(server: Server, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in server.log_path.read_text():
        assert time.monotonic() < deadline, f"the server never logged {text!r}"
        await asyncio.sleep(0.1)


def _recorded_ids(postgres: PrivatePostgres) -> set[str]:
    return {row["request_id"] for row in postgres.fetch("SELECT request_id FROM usage_records")}


# -- Upstream --------------------------------------------------------------------------------------------

UPSTREAM_TIMEOUT_S = 3
UPSTREAM_MODEL = """
[[models]]
alias = "{alias}"
snapshot = "{alias}-2025-01-01"
engine = "upstream"
fallbacks = {fallbacks}

[models.routing]
retries = 1
backoff_s = 0.01
max_backoff_s = 0.05
breaker_failures = 1000   # every request meets the fault itself, not an open circuit

[[models.upstream]]
base_url = "{url}/v1"
timeout_s = {timeout}
"""
# The mock's switches per fault: fail, delay_s (before the answer), chunk_delay_s (before each event).
FAULTS = {
    "latency spike": (None, UPSTREAM_TIMEOUT_S / 3, 0.0),
    "500": ("500", 0.0, 0.0),
    "reset": ("reset", 0.0, 0.0),
    "malformed JSON": ("malformed", 0.0, 0.0),
    "reset mid-stream": ("reset_mid_stream", 0.0, 0.0),
    "no answer within the timeout": (None, UPSTREAM_TIMEOUT_S * 2, 0.0),
    "stalled stream": (None, 0.0, UPSTREAM_TIMEOUT_S * 2),
}
# What each kind of request gets: gpt-up (non-streamed, streamed), then gpt-safe, which falls back to echo.
# A stream is answered once its upstream's first event arrived, so a failure up to then is the stream's status
# (or a fallback); a stream that broke after that has started: it ends with an error event, never falls back.
EXPECTED = {
    "latency spike": ("200", "200", "200", "200"),
    "500": ("502 upstream_error", "502 upstream_error", "200", "200"),
    "reset": ("502 upstream_error", "502 upstream_error", "200", "200"),
    "malformed JSON": ("502 upstream_error", "502 upstream_error", "200", "200"),
    "reset mid-stream": ("502 upstream_error", "200 then upstream_error", "200", "200 then upstream_error"),
    "no answer within the timeout": ("504 timeout", "504 timeout", "200", "200"),
    "stalled stream": ("200", "504 timeout", "200", "200"),
}
KINDS = [(model, stream) for model in ("gpt-up", "gpt-safe") for stream in (False, True)]
REQUESTS_PER_KIND = 3


def _gateway_config(url: str) -> str:
    models = [("gpt-up", "[]"), ("gpt-safe", '["echo"]')]  # the same upstream, the second with a fallback
    return ECHO + "".join(
        UPSTREAM_MODEL.format(alias=alias, fallbacks=fallbacks, url=url, timeout=UPSTREAM_TIMEOUT_S)
        for alias, fallbacks in models
    )


def _stream_outcome(response: httpx.Response) -> str:
    """A stream ends with ``[DONE]`` or with one well-formed error event (and no ``[DONE]``)."""
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    if events and events[-1] == "[DONE]":
        return "200"
    assert events and "[DONE]" not in events, response.text
    error = json.loads(events[-1])["error"]
    assert error["message"] and error["code"] and ".py" not in error["message"], error
    return f"200 then {error['code']}"


async def _request(http: httpx.AsyncClient, model: str, stream: bool) -> str:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    response = await http.post("/v1/chat/completions", json=body | {"stream": stream})
    if response.status_code != 200:
        return _outcome(response)
    if stream:
        return _stream_outcome(response)
    assert response.json()["choices"][0]["message"]["content"], response.text
    return "200"


async def test_faulty_upstream_answers_every_client_with_an_answer_or_a_clean_error(tmp_path: Path) -> None:
    with MockUpstream() as upstream, Server(tmp_path, _gateway_config(upstream.url)) as server:
        outcomes: dict[str, list[Counter[str]]] = {}  # per fault, per kind of request (as in EXPECTED)
        async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
            for fault, (fail, delay_s, chunk_delay_s) in FAULTS.items():
                upstream.fail, upstream.delay_s, upstream.chunk_delay_s = fail, delay_s, chunk_delay_s
                answers = await asyncio.gather(
                    *(_request(http, *kind) for kind in KINDS for _ in range(REQUESTS_PER_KIND))
                )
                per_kind = [answers[n : n + REQUESTS_PER_KIND] for n in range(0, len(answers), REQUESTS_PER_KIND)]
                outcomes[fault] = [Counter(answers) for answers in per_kind]
            upstream.fail, upstream.delay_s, upstream.chunk_delay_s = None, 0.0, 0.0
            assert await _request(http, "gpt-up", stream=True) == "200"  # nothing stuck after the faults
        assert server.process.poll() is None

    for fault, expected in EXPECTED.items():
        got = [set(counts) for counts in outcomes[fault]]
        assert got == [{outcome} for outcome in expected], (fault, outcomes[fault])
    print("\nupstream faults, per kind of request:", json.dumps(outcomes))
