"""GET /metrics after traffic: per-model tokens, TTFT, route counts, cache and rate-limit counters."""

from __future__ import annotations

import httpx

from portico.settings import RoutingSettings
from tests.conftest import ECHO_SNAPSHOT, asgi_client, auth_settings, bearer, echo_settings, make_key
from tests.observability.support import Samples, delta, parse, value
from tests.upstream_mock import UPSTREAM_ALIAS, MockUpstream, upstream_settings

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 5}
MODEL = {"gen_ai_operation_name": "chat", "gen_ai_request_model": ECHO_SNAPSHOT}


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_tokens_and_time_to_first_token_are_counted_per_model() -> None:
    async with asgi_client(echo_settings(cache={"enabled": False})) as (client, _):
        before = await scrape(client)
        prompt = completion = 0
        for _ in range(2):
            usage = (await client.post("/v1/chat/completions", json=CHAT)).json()["usage"]
            prompt, completion = prompt + usage["prompt_tokens"], completion + usage["completion_tokens"]
        streamed = await client.post(
            "/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        )
        usage = [line for line in streamed.text.splitlines() if '"usage":{' in line][-1]
        stream_usage = httpx.Response(200, content=usage.removeprefix("data: ")).json()["usage"]
        prompt += stream_usage["prompt_tokens"]
        completion += stream_usage["completion_tokens"]
        after = await scrape(client)

    tokens = "gen_ai_client_token_usage_sum"
    assert delta(before, after, tokens, **MODEL, gen_ai_token_type="input") == prompt > 0
    assert delta(before, after, tokens, **MODEL, gen_ai_token_type="output") == completion > 0
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_count", **MODEL) == 3
    assert delta(before, after, "gen_ai_server_time_per_output_token_seconds_count", **MODEL) == 3
    duration = {**MODEL, "status": "200"}
    assert delta(before, after, "gen_ai_server_request_duration_seconds_count", **duration) == 3
    route = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert delta(before, after, "portico_http_requests_total", **route) == 3
    assert delta(before, after, "portico_queue_wait_seconds_count", model=ECHO_SNAPSHOT) == 3


async def test_unknown_paths_share_one_route_label() -> None:
    async with asgi_client(echo_settings()) as (client, _):
        before = await scrape(client)
        for path in ("/v1/nope", "/v1/nope/again"):
            assert (await client.get(path)).status_code == 404
        after = await scrape(client)

    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert delta(before, after, "portico_http_requests_total", **unmatched) == 2
    assert not any("/v1/nope" in dict(labels).get("route", "") for _, labels in after)


async def test_cache_hits_and_misses_are_counted() -> None:
    deterministic = {**CHAT, "temperature": 0}
    async with asgi_client(echo_settings()) as (client, _):
        before = await scrape(client)
        statuses = [(await client.post("/v1/chat/completions", json=deterministic)).headers["x-cache-status"]]
        statuses.append((await client.post("/v1/chat/completions", json=deterministic)).headers["x-cache-status"])
        after = await scrape(client)

    assert statuses == ["miss", "hit"]
    assert delta(before, after, "portico_cache_lookups_total", cache="exact", result="miss") == 1
    assert delta(before, after, "portico_cache_lookups_total", cache="exact", result="hit") == 1


async def test_rate_limit_rejections_are_counted_by_limit() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        key = await make_key(app, limits={"requests_per_minute": 1})
        before = await scrape(client)
        codes = [(await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status_code]
        codes.append((await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status_code)
        after = await scrape(client)

    assert codes == [200, 429]
    assert delta(before, after, "portico_rate_limited_requests_total", limit="requests_per_minute") == 1


async def test_metrics_need_no_key_and_can_be_turned_off() -> None:
    async with asgi_client(auth_settings()) as (client, _):
        assert (await client.get("/metrics")).status_code == 200
    async with asgi_client(echo_settings(metrics={"enabled": False})) as (client, _):
        assert (await client.get("/metrics")).status_code == 404


async def test_upstream_failures_open_the_circuit_and_upstream_calls_measure_the_overhead() -> None:
    routing = RoutingSettings(retries=0, breaker_failures=2, breaker_cooldown_s=60)
    body = {**CHAT, "model": UPSTREAM_ALIAS}
    deployment = f"{UPSTREAM_ALIAS}/1"
    with MockUpstream() as upstream:
        async with asgi_client(upstream_settings(upstream, routing=routing)) as (client, _):
            before = await scrape(client)
            statuses = [(await client.post("/v1/chat/completions", json=body)).status_code]
            upstream.fail = "500"
            statuses += [(await client.post("/v1/chat/completions", json=body)).status_code for _ in range(2)]
            after = await scrape(client)

    assert statuses == [200, 502, 502]
    assert delta(before, after, "portico_upstream_errors_total", deployment=deployment, code="upstream_error") == 2
    assert value(after, "portico_upstream_circuit_open", deployment=deployment) == 1
    route = {"route": "/v1/chat/completions"}
    assert delta(before, after, "portico_gateway_overhead_seconds_count", **route) == 3
