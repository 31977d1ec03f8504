"""Limits, cost and usage as a client sees them: headers, 429s, quota warnings, and billing of streams."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from portico.auth.keys import new_key
from portico.constants import Scope
from portico.settings import LimitsSettings, PricingSettings, Settings
from tests.conftest import ECHO_ALIAS, asgi_client, auth_settings, bearer, live_server, make_key, sse_events

WORDS = " ".join(f"w{i}" for i in range(40))  # the echo engine answers with these: 40 prompt tokens


def _priced(**overrides: object) -> Settings:
    overrides.setdefault("context_window", 512)
    settings = auth_settings(**overrides)
    settings.models[0].pricing = PricingSettings(input_per_million=1_000.0, output_per_million=2_000.0)
    return settings


def completion(max_tokens: int, *, stream: bool = False, prompt: str = WORDS) -> dict[str, object]:
    body: dict[str, object] = {"model": ECHO_ALIAS, "prompt": prompt, "max_tokens": max_tokens}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with asgi_client(_priced()) as pair:
        yield pair


async def test_request_rate_admits_exactly_the_limit_with_openai_headers(
    served: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = served
    key = bearer(await make_key(app, limits={"requests_per_minute": 3}))
    responses = [await client.post("/v1/completions", json=completion(4), headers=key) for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses[:3]] == ["2", "1", "0"]
    assert responses[0].headers["x-ratelimit-limit-requests"] == "3"
    assert responses[0].headers["x-ratelimit-reset-requests"].endswith("s")
    rejected = responses[3]
    error = rejected.json()["error"]
    assert error["code"] == "requests_per_minute" and error["retryable"] is True
    assert 1 <= int(rejected.headers["retry-after"]) <= 20 and error["retry_after"] >= 1


async def test_token_rate_reserves_max_tokens_and_names_the_limit(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = bearer(await make_key(app, limits={"tokens_per_minute": 100}))
    first = await client.post("/v1/completions", json=completion(10), headers=key)  # 40 + 10 reserved and used
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) <= 50
    second = await client.post("/v1/completions", json=completion(20), headers=key)  # 60 more would overshoot
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "tokens_per_minute"


async def test_daily_quota_and_soft_warnings(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = bearer(await make_key(app, limits={"tokens_per_day": 100}))
    first = await client.post("/v1/completions", json=completion(2), headers=key)  # 42 of 100
    assert "x-quota-warning" not in first.headers
    second = await client.post("/v1/completions", json=completion(2), headers=key)  # 84 of 100
    assert second.headers["x-quota-warning"] == "tokens_per_day=80%"
    third = await client.post("/v1/completions", json=completion(2), headers=key)
    assert third.status_code == 429
    error = third.json()["error"]
    assert error["code"] == "tokens_per_day" and error["retryable"] is False
    assert 0 < int(third.headers["retry-after"]) <= 86_400


async def test_cost_is_in_the_body_and_the_header(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = bearer(await make_key(app))
    response = await client.post("/v1/completions", json=completion(10), headers=key)
    # 40 prompt tokens at $1000/M and 10 completion tokens at $2000/M.
    assert response.json()["usage"]["cost"] == pytest.approx(0.06)
    assert float(response.headers["x-request-cost"]) == pytest.approx(0.06)


async def test_stream_reports_cost_and_warning_in_the_final_usage_chunk(
    served: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = served
    key = bearer(await make_key(app, limits={"tokens_per_day": 55}))
    response = await client.post("/v1/completions", json=completion(10, stream=True), headers=key)
    assert response.headers["x-quota-warning"] == "tokens_per_day=90%"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    final = httpx.Response(200, content=events[-2]).json()
    assert final["usage"]["completion_tokens"] == 10 and final["usage"]["cost"] == pytest.approx(0.06)
    assert final["quota_warning"] == "tokens_per_day=90%"


async def test_budget_cuts_off_streamed_traffic(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    # Each stream costs $0.06 (see above); the budget holds two of them.
    key = bearer(await make_key(app, limits={"budget_per_day_usd": 0.13}))
    statuses = []
    for _ in range(3):
        response = await client.post("/v1/completions", json=completion(10, stream=True), headers=key)
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert sse_events(response.text)[-1] == "[DONE]"
    assert statuses == [200, 200, 429]
    usage = await client.get("/v1/usage", headers=key)
    assert usage.json()["totals"]["cost_usd"] == pytest.approx(0.12)


async def test_concurrency_limit_frees_the_slot_when_a_stream_ends() -> None:
    settings = _priced(tokens_per_second=50)
    async with asgi_client(settings) as (client, app):
        key = bearer(await make_key(app, limits={"max_concurrent": 1}))
        slow = asyncio.create_task(client.post("/v1/completions", json=completion(20), headers=key))
        await asyncio.sleep(0.1)
        busy = await client.post("/v1/completions", json=completion(2), headers=key)
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "concurrency"
        assert (await slow).status_code == 200
        assert (await client.post("/v1/completions", json=completion(2), headers=key)).status_code == 200


def test_a_stream_cancelled_halfway_is_billed_for_what_it_produced() -> None:
    """A real server and a real disconnect: the client reads a few tokens of 200 and hangs up."""
    admin_key = new_key().plaintext
    settings = _priced(tokens_per_second=100, context_window=1024, admin_key=admin_key)
    prompt = " ".join(f"w{i}" for i in range(300))
    with live_server(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        created = http.post(
            "/v1/admin/keys",
            json={
                "project": "default",
                "scopes": ["inference", "usage:read"],
                "tier": "unlimited",
                "limits": {"tokens_per_day": 1000},
            },
            headers=bearer(admin_key),
        )
        key = bearer(created.json()["value"])
        path = "/v1/completions"
        with http.stream("POST", path, json=completion(200, stream=True, prompt=prompt), headers=key) as stream:
            received = 0
            for line in stream.iter_lines():
                received += line.startswith("data: ")
                if received == 20:
                    break
        usage = _usage_when_recorded(http, key)
        produced = usage["completion_tokens"]
        assert usage["requests"] == 1 and usage["cancelled"] == 1
        assert usage["prompt_tokens"] == 300
        assert 20 <= produced < 200, produced
        assert usage["cost_usd"] == pytest.approx((300 * 1000 + produced * 2000) / 1e6)
        # The daily quota was charged the actual tokens, not the 500 reserved: 1000 - 300 - produced remain.
        room = 1000 - 300 - produced
        too_much = http.post("/v1/completions", json=completion(room - 40 + 1), headers=key)
        assert too_much.status_code == 429 and too_much.json()["error"]["code"] == "tokens_per_day"
        fits = http.post("/v1/completions", json=completion(room - 40), headers=key)
        assert fits.status_code == 200, fits.text


def _usage_when_recorded(http: httpx.Client, key: dict[str, str]) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while True:
        totals: dict[str, float] = http.get("/v1/usage", headers=key).json()["totals"]
        if totals["requests"] >= 1 or time.monotonic() > deadline:
            return totals
        time.sleep(0.05)


async def test_usage_groups_and_windows(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    reader = bearer(await make_key(app, scopes=[Scope.USAGE_READ, Scope.INFERENCE]))
    other = bearer(await make_key(app, scopes=[Scope.INFERENCE]))
    start = time.time()
    await client.post("/v1/completions", json=completion(5), headers=reader)
    await client.post("/v1/completions", json=completion(5), headers=other)
    await client.post(
        "/v1/chat/completions",
        json={"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 3},
        headers=reader,
    )
    by_endpoint = (await client.get("/v1/usage", params={"group_by": "endpoint"}, headers=reader)).json()
    assert by_endpoint["totals"]["requests"] == 3
    assert {b["key"]: b["requests"] for b in by_endpoint["buckets"]} == {
        "/v1/chat/completions": 1,
        "/v1/completions": 2,
    }
    by_key = (await client.get("/v1/usage", params={"group_by": "key"}, headers=reader)).json()
    assert sorted(b["requests"] for b in by_key["buckets"]) == [1, 2]
    by_day = (await client.get("/v1/usage", params={"group_by": "day"}, headers=reader)).json()
    assert [b["key"] for b in by_day["buckets"]] == [time.strftime("%Y-%m-%d", time.gmtime())]
    later = (await client.get("/v1/usage", params={"start": time.time() + 60}, headers=reader)).json()
    assert later["totals"]["requests"] == 0
    window = (await client.get("/v1/usage", params={"start": start, "end": time.time() + 1}, headers=reader)).json()
    assert window["totals"]["completion_tokens"] == 5 + 5 + 3


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
async def test_unreachable_redis_follows_the_failure_policy(
    policy: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _priced(
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        limits=LimitsSettings(backend="redis", on_redis_error=policy),  # type: ignore[arg-type]
    )
    async with asgi_client(settings) as (client, app):
        key = bearer(await make_key(app, limits={"requests_per_minute": 1}))
        responses = [await client.post("/v1/completions", json=completion(2), headers=key) for _ in range(2)]
        assert [r.status_code for r in responses] == [status, status]
        if status == 503:
            assert responses[0].json()["error"]["code"] == "limits_unavailable"
            assert responses[0].headers["x-should-retry"] == "true"
        ready = await client.get("/readyz")
        assert ready.json()["checks"]["limits"] == "unavailable"
        assert ready.status_code == (200 if policy == "open" else 503)
    assert any("redis" in record.getMessage().lower() for record in caplog.records if record.levelname == "WARNING")
