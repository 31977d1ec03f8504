"""A client that goes away stops its generation: the engine produces no more tokens for it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from portico.engines.base import Engine
from tests.conftest import ECHO_ALIAS, echo_settings, live_server, registry_of, wait_until

LONG_ANSWER = "word " * 2000  # 100 s at 20 tokens/s: only a cancel ends it early


def engine_of(server: object) -> Engine:
    return next(iter(registry_of(server.app))).engine  # type: ignore[attr-defined]


async def assert_engine_stops(engine: Engine) -> None:
    await wait_until(lambda: engine.stats.active_generations == 0, timeout=2)
    produced = engine.stats.tokens_generated
    await asyncio.sleep(0.3)  # six decode steps at 20 tokens/s
    assert engine.stats.tokens_generated == produced, "the engine kept producing tokens after the disconnect"
    assert produced < 100


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_stream_disconnect_cancels_generation(path: str) -> None:
    settings = echo_settings(tokens_per_second=20, context_window=4096)
    body = {"model": ECHO_ALIAS, "stream": True}
    body |= {"prompt": LONG_ANSWER} if path == "/v1/completions" else {}
    body |= {"messages": [{"role": "user", "content": LONG_ANSWER}]} if path != "/v1/completions" else {}
    with live_server(settings) as server:
        engine = engine_of(server)
        async with httpx.AsyncClient(base_url=server.url) as http:
            async with http.stream("POST", path, json=body) as response:
                lines = response.aiter_lines()
                received = 0
                while received < 3:
                    if (await anext(lines)).startswith("data: "):
                        received += 1
            # leaving the block closes the connection mid-stream
            assert engine.stats.active_generations == 1
        await assert_engine_stops(engine)


async def test_sync_disconnect_cancels_generation() -> None:
    settings = echo_settings(tokens_per_second=20, context_window=4096)
    body = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": LONG_ANSWER}]}
    with live_server(settings) as server:
        engine = engine_of(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=0.5) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/chat/completions", json=body)
        await assert_engine_stops(engine)


async def test_the_freed_slot_serves_the_next_request() -> None:
    settings = echo_settings(tokens_per_second=20, context_window=4096, parallel_slots=1)
    body = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": LONG_ANSWER}]}
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=0.5) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/chat/completions", json=body)
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            short = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "next one"}]}
            response = await http.post("/v1/chat/completions", json=short)
        assert response.json()["choices"][0]["message"]["content"] == "next one"
