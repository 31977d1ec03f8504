"""The upstream engine against a real HTTP server on loopback: requests, streams, error mapping, and the choice
of deployment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from portico.engines.registry import build_engine
from portico.engines.upstream import UpstreamDeployment, UpstreamEngine
from portico.errors import (
    GenerationTimeout,
    InvalidRequest,
    PorticoError,
    UpstreamContextExceeded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from portico.settings import UpstreamSettings
from tests.upstream_mock import UPSTREAM_KEY_ENV, UPSTREAM_MODEL, MockUpstream, closed_port, upstream_model

SECRET = "sk-upstream-secret-123"
CHAT = {"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockUpstream]:
    monkeypatch.setenv(UPSTREAM_KEY_ENV, SECRET)
    with MockUpstream() as upstream:
        yield upstream


async def _engine(base_url: str, **options: float) -> UpstreamEngine:
    engine = build_engine(upstream_model(base_url, **options))
    assert isinstance(engine, UpstreamEngine)
    await engine.start()
    return engine


@pytest.fixture
async def engine(mock: MockUpstream) -> AsyncIterator[UpstreamEngine]:
    engine = await _engine(f"{mock.url}/v1")
    yield engine
    await engine.close()


@pytest.fixture
def deployment(engine: UpstreamEngine) -> UpstreamDeployment:
    return engine.deployments[0]


async def test_post_sends_the_key_from_the_named_env_var(deployment: UpstreamDeployment, mock: MockUpstream) -> None:
    answer = await deployment.post("chat/completions", CHAT)
    assert answer["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4 "
    assert [r.path for r in mock.requests] == ["/v1/chat/completions"]
    assert mock.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert mock.requests[0].body == CHAT


async def test_capabilities_and_name_come_from_config(engine: UpstreamEngine) -> None:
    assert engine.deployments[0].model_name == UPSTREAM_MODEL
    assert {c.value for c in engine.capabilities} == {"chat", "completions", "embeddings"}
    with pytest.raises(InvalidRequest):  # no local tokenizer
        engine.tokenize("hello")


async def test_stream_yields_the_upstream_payloads_until_done(deployment: UpstreamDeployment) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await deployment.open_stream("chat/completions", body)
    payloads = [payload async for payload in deployment.events(response)]
    assert len(payloads) == 5 + 1 + 1  # content, finish, usage
    assert payloads[-1]["usage"]["completion_tokens"] == 5
    assert response.is_closed


@pytest.mark.parametrize(
    ("fail", "error", "status", "retryable"),
    [
        ("429", UpstreamRateLimited, 429, True),
        ("500", UpstreamError, 502, True),
        ("reset", UpstreamError, 502, True),
        ("400", InvalidRequest, 400, False),
        ("context", UpstreamContextExceeded, 400, False),
    ],
)
async def test_upstream_failures_map_to_portico_errors(
    deployment: UpstreamDeployment,
    mock: MockUpstream,
    fail: str,
    error: type[PorticoError],
    status: int,
    retryable: bool,
) -> None:
    mock.fail = fail

    async def stream() -> None:  # a failure after the status arrives surfaces while reading
        response = await deployment.open_stream("chat/completions", {**CHAT, "stream": True})
        async for _ in deployment.events(response):
            pass

    for attempt in (deployment.post("chat/completions", CHAT), stream()):
        with pytest.raises(error) as raised:
            await attempt
        assert raised.value.status_code == status and raised.value.retryable is retryable
        assert SECRET not in raised.value.message and "/srv/app.py" not in raised.value.message
    if fail == "429":
        assert raised.value.retry_after == 7
    if fail == "400":
        assert "max_tokens is too large" in raised.value.message


async def test_an_unreachable_upstream_is_unavailable() -> None:
    engine = await _engine(f"http://127.0.0.1:{closed_port()}/v1")
    try:
        with pytest.raises(UpstreamUnavailable) as raised:
            await engine.deployments[0].post("chat/completions", CHAT)
        assert raised.value.status_code == 503 and raised.value.code == "upstream_unavailable"
    finally:
        await engine.close()


async def test_a_slow_upstream_times_out_at_the_deployment_timeout(mock: MockUpstream) -> None:
    mock.delay_s = 5
    engine = await _engine(f"{mock.url}/v1", timeout_s=0.2)
    try:
        with pytest.raises(GenerationTimeout) as raised:
            await engine.deployments[0].post("chat/completions", CHAT)
        assert raised.value.status_code == 504 and "0.2s" in raised.value.message
    finally:
        await engine.close()


def _engine_of(*weights: int) -> UpstreamEngine:
    deployments = [UpstreamSettings(name=f"d{n}", base_url="http://x/v1", weight=w) for n, w in enumerate(weights)]
    engine = build_engine(upstream_model("http://x/v1").model_copy(update={"upstream": deployments}))
    assert isinstance(engine, UpstreamEngine)
    return engine


def test_pick_prefers_the_fewest_requests_in_flight_per_weight() -> None:
    engine = _engine_of(2, 1)
    heavy, light = engine.deployments
    for _ in range(2):
        heavy.dispatch()
    assert engine.pick() is light  # 2 in flight / weight 2 > 0 / weight 1
    light.dispatch()
    assert engine.pick() is heavy  # 1.0 each: the tie goes to the one sent fewer per weight (2/2 < 1/1)
    assert engine.pick(tried=[heavy]) is light  # a retry prefers a deployment it has not tried


def test_pick_skips_open_circuits_and_gives_none_when_all_are_open() -> None:
    engine = _engine_of(1, 1)
    first, second = engine.deployments
    for _ in range(first.breaker.threshold):
        first.dispatch().end(UpstreamError("down"))
    assert engine.pick() is second and engine.pick(tried=[second]) is second
    for _ in range(second.breaker.threshold):
        second.dispatch().end(UpstreamUnavailable("down"))
    assert engine.pick() is None
    assert first.outstanding == second.outstanding == 0


def test_a_client_error_or_a_departure_is_no_failure_of_the_deployment() -> None:
    engine = _engine_of(1)
    (only,) = engine.deployments
    for _ in range(only.breaker.threshold):
        only.dispatch().end(InvalidRequest("bad max_tokens"))
        only.dispatch().end(asyncio.CancelledError())
    assert engine.pick() is only
