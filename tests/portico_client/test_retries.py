"""Retries of both clients against loopback stubs: which failures are retried, the one Idempotency-Key per
logical call that every retry reuses, and what is raised when retrying cannot help."""

from __future__ import annotations

from typing import Any

import pytest

from portico_client import (
    APIConnectionError,
    BadRequestError,
    ConflictError,
    OverloadedError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
)
from tests.conftest import LiveServer
from tests.portico_client.support import DropFirstConnection, Mode, ScriptedApp, error_reply, json_reply, sdk_for

MODES: list[Mode] = ["sync", "async"]
TOKENS = {"model": "echo", "count": 3, "max_model_len": 256}


def tokenize(client: Any) -> Any:
    return client.tokenize(model="echo", prompt="a b c")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "engine_overloaded"), (429, "requests_per_minute"), (502, "upstream_error"), (504, "timeout")],
)
async def test_a_retryable_error_is_retried_with_the_same_idempotency_key(mode: Mode, status: int, code: str) -> None:
    app = ScriptedApp(
        error_reply(status, code, retryable=True), error_reply(status, code, retryable=True), json_reply(200, TOKENS)
    )
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=2) as sdk:
            first = await sdk(tokenize)
            second = await sdk(tokenize)

    assert first.count == second.count == 3
    keys = app.idempotency_keys()
    assert len(keys) == 4  # three attempts of the first call, one of the second
    assert keys[0] is not None
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] not in keys[:3]


@pytest.mark.parametrize("mode", MODES)
async def test_retries_stop_after_max_retries_and_raise_the_typed_error(mode: Mode) -> None:
    app = ScriptedApp(error_reply(503, "engine_overloaded", retryable=True))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=1) as sdk:
            with pytest.raises(ServiceUnavailableError) as raised:
                await sdk(tokenize)

    assert len(app.requests) == 2
    assert (raised.value.status_code, raised.value.code, raised.value.retryable) == (503, "engine_overloaded", True)
    assert raised.value.request_id == "req_engine_overloaded"


@pytest.mark.parametrize("mode", MODES)
async def test_an_overloaded_error_is_its_own_class(mode: Mode) -> None:
    error = {"type": "overloaded_error", "code": "engine_overloaded", "message": "full", "retryable": True}
    app = ScriptedApp(json_reply(503, {"error": error}, **{"x-should-retry": "true", "retry-after": "0"}))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=0) as sdk:
            with pytest.raises(OverloadedError):
                await sdk(tokenize)


@pytest.mark.parametrize("mode", MODES)
async def test_a_request_error_is_not_retried(mode: Mode) -> None:
    app = ScriptedApp(error_reply(400, "invalid_request", retryable=False), json_reply(200, TOKENS))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=3) as sdk:
            with pytest.raises(BadRequestError) as raised:
                await sdk(tokenize)

    assert len(app.requests) == 1
    assert raised.value.code == "invalid_request"


@pytest.mark.parametrize("mode", MODES)
async def test_x_should_retry_false_wins_over_a_retryable_status(mode: Mode) -> None:
    """A daily quota says 429 with Retry-After until midnight and x-should-retry: false: raise at once."""
    app = ScriptedApp(error_reply(429, "tokens_per_day", retryable=False, retry_after="36000"), json_reply(200, TOKENS))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=3) as sdk:
            with pytest.raises(RateLimitError) as raised:
                await sdk(tokenize)

    assert len(app.requests) == 1
    assert (raised.value.code, raised.value.retryable) == ("tokens_per_day", False)


@pytest.mark.parametrize("mode", MODES)
async def test_x_should_retry_true_retries_a_conflict_in_progress(mode: Mode) -> None:
    """409 idempotency_key_in_progress: the first attempt still runs; the retry gets its stored answer."""
    app = ScriptedApp(error_reply(409, "idempotency_key_in_progress", retryable=True), json_reply(200, TOKENS))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=2) as sdk:
            counted = await sdk(tokenize)
            downloaded = await sdk(lambda client: client.files.content("file-1"))

    assert counted.count == 3
    assert len(app.requests) == 3
    assert app.idempotency_keys()[0] == app.idempotency_keys()[1]
    assert app.idempotency_keys()[2] is None  # a GET is idempotent already: it carries no key
    assert b'"count": 3' in downloaded


@pytest.mark.parametrize("mode", MODES)
async def test_a_conflict_that_is_not_retryable_is_raised(mode: Mode) -> None:
    app = ScriptedApp(error_reply(409, "idempotency_key_reused", retryable=False))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url) as sdk:
            with pytest.raises(ConflictError) as raised:
                await sdk(lambda client: client.tokenize(model="echo", prompt="x", idempotency_key="mine"))

    assert raised.value.code == "idempotency_key_reused"
    assert app.idempotency_keys() == ["mine"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_connection_closed_without_an_answer_is_retried_with_the_same_key(mode: Mode) -> None:
    with DropFirstConnection(TOKENS) as server:
        async with sdk_for(mode, server.url, max_retries=2) as sdk:
            counted = await sdk(tokenize)

    assert counted.count == 3
    assert len(server.keys) == 2
    assert server.keys[0] is not None
    assert server.keys[0] == server.keys[1]


@pytest.mark.parametrize("mode", MODES)
async def test_a_connection_error_with_no_retries_left_is_raised(mode: Mode) -> None:
    with DropFirstConnection(TOKENS) as server:
        async with sdk_for(mode, server.url, max_retries=0) as sdk:
            with pytest.raises(APIConnectionError) as raised:
                await sdk(tokenize)

    assert raised.value.retryable
    assert len(server.keys) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_non_json_failure_from_a_proxy_still_raises_the_status_class(mode: Mode) -> None:
    app = ScriptedApp((502, {"content-type": "text/html"}, b"<html>Bad Gateway</html>"))
    with LiveServer(app, lifespan="off") as server:
        async with sdk_for(mode, server.url, max_retries=1) as sdk:
            with pytest.raises(UpstreamError) as raised:
                await sdk(tokenize)

    assert (raised.value.status_code, raised.value.code, raised.value.retryable) == (502, None, True)
    assert "Bad Gateway" in str(raised.value)
    assert len(app.requests) == 2  # a 502 without x-should-retry is retried
