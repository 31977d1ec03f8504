"""gzip: large JSON bodies are compressed for clients that accept it; event streams never, and still stream."""

from __future__ import annotations

import gzip
import json

import httpx

from tests.api.test_disconnect import LONG_ANSWER, assert_engine_stops, engine_of
from tests.conftest import ECHO_ALIAS, echo_settings, live_server


async def test_a_large_json_body_is_gzipped_only_when_asked(client: httpx.AsyncClient) -> None:
    asked = await client.get("/openapi.json", headers={"accept-encoding": "gzip"})
    assert asked.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in asked.headers["vary"].lower()
    assert int(asked.headers["content-length"]) < len(asked.content)  # httpx decoded it
    assert asked.json()["info"]["title"] == "Portico"

    plain = await client.get("/openapi.json", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json() == asked.json()


async def test_a_small_body_is_not_compressed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers={"accept-encoding": "gzip"})
    assert len(response.content) < 1024
    assert "content-encoding" not in response.headers


async def test_the_body_on_the_wire_is_gzip() -> None:
    with live_server(echo_settings()) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            request = http.build_request("GET", "/openapi.json", headers={"accept-encoding": "gzip"})
            response = await http.send(request, stream=True)
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
            await response.aclose()
    assert json.loads(gzip.decompress(raw))["info"]["title"] == "Portico"


async def test_an_event_stream_is_not_compressed_and_still_streams_and_cancels() -> None:
    settings = echo_settings(tokens_per_second=20, context_window=4096)
    body = {"model": ECHO_ALIAS, "stream": True, "messages": [{"role": "user", "content": LONG_ANSWER}]}
    with live_server(settings) as server:
        engine = engine_of(server)
        async with httpx.AsyncClient(base_url=server.url) as http:
            headers = {"accept-encoding": "gzip"}
            async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                assert "content-encoding" not in response.headers
                # Events arrive while the 100-second answer is being generated: nothing buffers the stream.
                lines = response.aiter_lines()
                received = 0
                while received < 3:
                    if (await anext(lines)).startswith("data: "):
                        received += 1
                assert engine.stats.active_generations == 1
        # Leaving the block closed the connection mid-stream; the disconnect reached the generation.
        await assert_engine_stops(engine)
