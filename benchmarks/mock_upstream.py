"""A fast OpenAI-compatible upstream for the gateway benchmark: the baseline every proxy is measured against.

A raw ASGI callable under uvicorn (uvloop + httptools, no access log), so that the proxies, not the mock, are
what the benchmark sees. ``POST .../chat/completions`` answers a ``chat.completion`` with a unique id and a
usage object, or, with ``stream: true``, 32 content chunks, a finish chunk, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``; each chunk is its own write, as a real server
sends them. ``GET /health`` answers 200 (readiness). Anything else is a 404.

Run it on its own (the benchmark starts it so, in its own process):

    .venv/bin/python benchmarks/mock_upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn

CONTENT_CHUNKS = 32
PROMPT_TOKENS = 12

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_WORDS = [f"tok{index} " for index in range(CONTENT_CHUNKS)]
_USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": CONTENT_CHUNKS,
    "total_tokens": PROMPT_TOKENS + CONTENT_CHUNKS,
}
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
# Unique across restarts too: a proxy that caches or de-duplicates by id would show up as repeated ids.
_ids = (f"chatcmpl-mock{os.getpid()}x{serial}" for serial in itertools.count())


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = _JSON_HEADERS) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": next(_ids),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(_WORDS)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _USAGE,
        }
    )


async def _stream(send: Send, model: str, include_usage: bool) -> None:
    base = {"id": next(_ids), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    frames = [{**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]} for word in _WORDS]
    frames.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        frames.append({**base, "choices": [], "usage": _USAGE})
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    for frame in frames:
        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(frame) + b"\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if scope["method"] == "GET" and path == "/health":
        return await _respond(send, 200, b'{"status":"ok"}')
    if scope["method"] != "POST" or not path.endswith("/chat/completions"):
        return await _respond(send, 404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')
    request = orjson.loads(await _read_body(receive))
    model = str(request.get("model", "mock"))
    if request.get("stream"):
        return await _stream(send, model, bool((request.get("stream_options") or {}).get("include_usage")))
    await _respond(send, 200, _completion(model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
