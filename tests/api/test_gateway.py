"""Routing a model over several upstream deployments, as a client sees it: balancing by weight, retries on
another deployment, fallbacks to other models (also on context overflow), circuit breakers in /readyz, and
one usage record per request under the model that answered."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from portico.constants import Scope
from portico.settings import (
    AuthSettings,
    EchoModel,
    EchoSettings,
    RoutingSettings,
    Settings,
    UpstreamModel,
    UpstreamSettings,
)
from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT, asgi_client, bearer, make_key
from tests.upstream_mock import UPSTREAM_ALIAS, MockUpstream, closed_port, upstream_model

CHAT = {"model": UPSTREAM_ALIAS, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 20}
QUICK = RoutingSettings(retries=2, backoff_s=0, max_backoff_s=0, breaker_failures=3, breaker_cooldown_s=60)


@pytest.fixture
def mocks() -> Iterator[tuple[MockUpstream, MockUpstream]]:
    with MockUpstream() as first, MockUpstream() as second:
        yield first, second


def _deployment(name: str, url: str, weight: int = 1) -> UpstreamSettings:
    return UpstreamSettings(name=name, base_url=f"{url}/v1", weight=weight, timeout_s=5)


def _settings(
    deployments: list[UpstreamSettings],
    *,
    routing: RoutingSettings = QUICK,
    fallbacks: tuple[str, ...] = (),
    context_window: int | None = None,
    **overrides: Any,
) -> Settings:
    """The upstream model over ``deployments``, and a local echo model it may fall back to."""
    upstream = upstream_model(deployments[0].base_url).model_copy(
        update={
            "upstream": deployments,
            "routing": routing,
            "fallbacks": list(fallbacks),
            "context_window": context_window,
        }
    )
    echo = EchoModel(alias=ECHO_ALIAS, snapshot=ECHO_SNAPSHOT, context_window=2048, echo=EchoSettings())
    return Settings(models=[upstream, echo], **overrides)


async def test_light_traffic_splits_by_weight(mocks: tuple[MockUpstream, MockUpstream]) -> None:
    heavy, light = mocks
    settings = _settings([_deployment("heavy", heavy.url, weight=3), _deployment("light", light.url)])
    async with asgi_client(settings) as (http, _):
        served = Counter()
        for _ in range(8):
            response = await http.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200, response.text
            served[response.headers["x-served-by"]] += 1
    assert served == {"heavy": 6, "light": 2}
    assert (len(heavy.requests), len(light.requests)) == (6, 2)


async def test_busy_deployments_get_fewer_requests(mocks: tuple[MockUpstream, MockUpstream]) -> None:
    slow, fast = mocks
    slow.delay_s = 0.5
    settings = _settings([_deployment("slow", slow.url), _deployment("fast", fast.url)])
    async with asgi_client(settings) as (http, _):

        async def client_loop() -> list[str]:
            served = []
            for _ in range(5):
                response = await http.post("/v1/chat/completions", json=CHAT)
                served.append(response.headers["x-served-by"])
            return served

        served = Counter(name for names in await asyncio.gather(*(client_loop() for _ in range(4))) for name in names)
    # The slow one holds its requests 0.5 s: while it does, least-outstanding sends the rest to the fast one.
    assert served["fast"] > 2 * served["slow"], served


async def test_a_failing_deployment_is_retried_on_the_other(mocks: tuple[MockUpstream, MockUpstream]) -> None:
    broken, healthy = mocks
    broken.fail = "500"
    settings = _settings([_deployment("broken", broken.url), _deployment("healthy", healthy.url)])
    async with asgi_client(settings) as (http, _):
        for stream in (False, True):
            response = await http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == 200, response.text
            assert response.headers["x-served-by"] == "healthy"
    # Each request tried the broken one at most once: a retry goes to a deployment it has not tried.
    assert len(broken.requests) <= 2 and len(healthy.requests) == 2


async def test_one_deployment_is_retried_with_backoff_until_it_answers(
    mocks: tuple[MockUpstream, MockUpstream],
) -> None:
    flaky, _ = mocks
    flaky.fail = "500"
    settings = _settings([_deployment("flaky", flaky.url)], routing=QUICK.model_copy(update={"backoff_s": 0.2}))
    async with asgi_client(settings) as (http, _):
        pending = asyncio.ensure_future(http.post("/v1/chat/completions", json=CHAT))
        while not flaky.requests:
            await asyncio.sleep(0.01)
        flaky.fail = None  # heals during the backoff
        response = await pending
    assert response.status_code == 200, response.text
    assert len(flaky.requests) >= 2


async def test_fallback_to_a_local_model_is_recorded_once_under_it(mocks: tuple[MockUpstream, MockUpstream]) -> None:
    down, _ = mocks
    down.fail = "500"
    settings = _settings(
        [_deployment("only", down.url)], routing=QUICK.model_copy(update={"retries": 1}), fallbacks=(ECHO_ALIAS,)
    )
    async with asgi_client(settings.model_copy(update={"auth": AuthSettings(enabled=True)})) as (http, app):
        key = bearer(await make_key(app, scopes=[Scope.INFERENCE, Scope.USAGE_READ], limits={"requests_per_minute": 3}))
        sync = await http.post("/v1/chat/completions", json=CHAT, headers=key)
        assert sync.status_code == 200, sync.text
        assert sync.headers["x-served-by"] == ECHO_ALIAS and sync.json()["model"] == ECHO_SNAPSHOT
        assert sync.json()["usage"]["cost"] == 0  # the echo model is free; the upstream one is not
        stream = await http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=key)
        assert stream.status_code == 200 and stream.headers["x-served-by"] == ECHO_ALIAS
        assert f'"model":"{ECHO_SNAPSHOT}"' in stream.text.replace(" ", "") and "[DONE]" in stream.text
        # Two requests against a limit of 3 a minute, each counted once, though each tried two models.
        third = await http.post("/v1/chat/completions", json=CHAT, headers=key)
        assert third.status_code == 200, third.text
        fourth = await http.post("/v1/chat/completions", json=CHAT, headers=key)
        assert fourth.status_code == 429 and fourth.json()["error"]["code"] == "requests_per_minute"
        for _ in range(100):
            usage = (await http.get("/v1/usage", params={"group_by": "model"}, headers=key)).json()
            if usage["totals"]["requests"] >= 3:
                break
            await asyncio.sleep(0.05)
    # One record per answered request, under the model that answered (the refused one is not usage).
    assert usage["totals"]["requests"] == 3
    assert {bucket["key"]: bucket["requests"] for bucket in usage["buckets"]} == {ECHO_SNAPSHOT: 3}
    # Tried twice upstream, then once (the circuit opened at its third failure), then not at all.
    assert len(down.requests) == 3


async def test_context_overflow_goes_to_a_fallback_with_a_larger_window(
    mocks: tuple[MockUpstream, MockUpstream],
) -> None:
    small, _ = mocks
    small.fail = "context"
    deployments = [_deployment("small", small.url)]
    async with asgi_client(_settings(deployments, fallbacks=(ECHO_ALIAS,), context_window=512)) as (http, _):
        response = await http.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200, response.text
        assert response.headers["x-served-by"] == ECHO_ALIAS
    assert len(small.requests) == 1  # not a retryable failure: no retry, straight to the larger model
    # Without a larger fallback the upstream's refusal is the answer.
    async with asgi_client(_settings(deployments, fallbacks=(ECHO_ALIAS,), context_window=4096)) as (http, _):
        response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"


async def test_circuits_open_show_in_readyz_and_answer_circuit_open() -> None:
    dead = [
        _deployment("a", f"http://127.0.0.1:{closed_port()}"),
        _deployment("b", f"http://127.0.0.1:{closed_port()}"),
    ]
    async with asgi_client(_settings(dead)) as (http, _):
        ready = (await http.get("/readyz")).json()
        assert ready["checks"]["upstream:a"] == ready["checks"]["upstream:b"] == "closed"
        codes = [(await http.post("/v1/chat/completions", json=CHAT)).json()["error"]["code"] for _ in range(3)]
        # 3 attempts per request, 3 failures per circuit: both open during the second request.
        assert codes[0] == "upstream_unavailable" and codes[-1] == "circuit_open"
        refused = await http.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503 and refused.json()["error"]["retryable"] is True
        assert 55 <= float(refused.headers["retry-after"]) <= 60
        ready = await http.get("/readyz")
    assert ready.status_code == 200  # open circuits do not make the server unready
    assert ready.json()["checks"]["upstream:a"] == ready.json()["checks"]["upstream:b"] == "open"


async def test_open_circuits_fall_back_without_trying_the_upstream(mocks: tuple[MockUpstream, MockUpstream]) -> None:
    down, _ = mocks
    down.fail = "500"
    settings = _settings([_deployment("down", down.url)], fallbacks=(ECHO_ALIAS,))
    async with asgi_client(settings) as (http, _):
        for _ in range(4):
            response = await http.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200 and response.headers["x-served-by"] == ECHO_ALIAS
    assert len(down.requests) == 3  # the circuit opened after 3 failures; later requests went straight to echo


async def test_names_in_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="fallback 'nope'"):
        _settings([_deployment("a", "http://127.0.0.1:1")], fallbacks=("nope",))
    with pytest.raises(ValueError, match="same name"):
        _settings([_deployment("a", "http://127.0.0.1:1"), _deployment("a", "http://127.0.0.1:2")])
    unnamed = _settings([UpstreamSettings(base_url="http://x/v1"), UpstreamSettings(base_url="http://y/v1")])
    assert unnamed.models[0].deployment_names() == [f"{UPSTREAM_ALIAS}/1", f"{UPSTREAM_ALIAS}/2"]


def test_one_upstream_table_or_several() -> None:
    one = UpstreamModel.model_validate(
        {"alias": "m", "snapshot": "m-1", "engine": "upstream", "upstream": {"base_url": "http://x/v1"}}
    )
    several = UpstreamModel.model_validate(
        {
            "alias": "m",
            "snapshot": "m-1",
            "engine": "upstream",
            "upstream": [{"base_url": "http://x/v1"}, {"base_url": "http://y/v1", "weight": 2}],
        }
    )
    assert len(one.upstream) == 1 and [d.weight for d in several.upstream] == [1, 2]
    with pytest.raises(ValueError, match="upstream\n  Field required"):
        UpstreamModel.model_validate({"alias": "m", "snapshot": "m-1", "engine": "upstream"})


async def test_unknown_model_is_still_a_404(mocks: tuple[MockUpstream, MockUpstream]) -> None:
    async with asgi_client(_settings([_deployment("a", mocks[0].url)])) as (http, _):
        response = await http.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
