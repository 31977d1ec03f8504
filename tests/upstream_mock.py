"""A fake OpenAI-compatible upstream: a real HTTP server on loopback (uvicorn in a thread), for gateway tests.

It answers ``/v1/chat/completions`` (JSON, or SSE with ``chunks`` content chunks and a usage chunk when the
request asks ``stream_options.include_usage``), ``/v1/completions``, ``/v1/embeddings`` and ``/v1/moderations``
(a text holding ``FLAGGED_WORD`` scores 0.93 in ``violence``, anything else 0.01 everywhere). It records every
request (path, headers, JSON body) and, with the monotonic time, every connection a client closed before its
answer was complete (``closed_at``). Switches, changeable while it runs: ``fail`` ("429", "500", "400",
"reset": the connection is dropped mid-answer, "context": a 400 saying the prompt is too long, "malformed": a 200
whose body or first event is broken JSON, "reset_mid_stream": a stream's connection is dropped after two chunks,
a non-streamed answer's as with "reset"), ``delay_s`` before answering, ``chunk_delay_s`` between chunks.

    with MockUpstream() as upstream:
        settings = upstream_settings(upstream)

A chat request with ``tools`` is answered with two calls of its first tool (arguments ``{"n": 0}`` and
``{"n": 1}``; streamed interleaved, as parallel calls arrive).

``python -m tests.upstream_mock PORT`` runs one in its own process (for tests that kill it).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from portico.settings import PricingSettings, RoutingSettings, Settings, UpstreamModel, UpstreamSettings
from tests.conftest import LiveServer

UPSTREAM_ALIAS = "gpt-up"
UPSTREAM_SNAPSHOT = "gpt-up-2025-01-01"
UPSTREAM_MODEL = "upstream-model-7b"
UPSTREAM_KEY_ENV = "PORTICO_TEST_UPSTREAM_KEY"
PROMPT_TOKENS = 11  # what the mock reports as every answer's prompt tokens (embeddings: per input)
MALFORMED = b'{"id": "upstream-id-1", "choices": [{"index": 0,'  # cut off: not JSON
CHUNKS_BEFORE_RESET = 2  # "reset_mid_stream" drops the connection after this many events
FLAGGED_WORD = "kaboom"  # what the mock's moderation model flags (as violence)
MODERATION_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence", "violence/graphic")

Scope = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    client_port: int  # the client's end of the connection: equal ports, a reused connection


@dataclass(slots=True)
class _Call:
    """One request being answered: set ``finished`` before the last byte, so a normal end is not a disconnect."""

    finished: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class MockUpstream:
    def __init__(self, *, chunks: int = 5, chunk_delay_s: float = 0.0, delay_s: float = 0.0, port: int = 0) -> None:
        self.chunks = chunks
        self.chunk_delay_s = chunk_delay_s
        self.delay_s = delay_s
        self.fail: str | None = None
        self.retry_after = "7"
        self.requests: list[Recorded] = []
        self.closed_at: list[float] = []  # time.monotonic() when a client left before its answer was complete
        self.completed = 0
        self._server = LiveServer(self, lifespan="off", port=port)
        self.port = self._server.port
        self.url = self._server.url

    def __enter__(self) -> MockUpstream:
        self._server.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.__exit__()

    # -- ASGI --------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        body = json.loads(raw) if raw else {}
        self.requests.append(Recorded(scope["path"], headers, body, scope["client"][1]))
        call = _Call()
        watcher = asyncio.ensure_future(self._watch(call, receive))
        try:
            await self._answer(call, scope["path"], headers, body, send)
        finally:
            watcher.cancel()

    async def _watch(self, call: _Call, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not call.finished:
            self.closed_at.append(time.monotonic())
            call.gone.set()

    async def _pause(self, call: _Call, seconds: float) -> bool:
        """Wait ``seconds``; False if the client left meanwhile."""
        if seconds <= 0:
            return not call.gone.is_set()
        try:
            await asyncio.wait_for(call.gone.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _json(
        self, call: _Call, send: Any, status: int, payload: Any, extra: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        headers += [(name.encode(), value.encode()) for name, value in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        call.finished = True
        await send({"type": "http.response.body", "body": data})
        self.completed += 1

    async def _answer(self, call: _Call, path: str, headers: dict[str, str], body: dict[str, Any], send: Any) -> None:
        if not await self._pause(call, self.delay_s):
            return
        fail = self.fail
        if fail == "429":
            error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
            return await self._json(call, send, 429, error, {"retry-after": self.retry_after})
        if fail == "500":
            return await self._json(call, send, 500, {"error": {"message": "upstream exploded at /srv/app.py:12"}})
        if fail == "400":
            # An upstream that echoes the credentials it got: Portico must not pass them on.
            message = f"max_tokens is too large (sent with {headers.get('authorization', '')})"
            return await self._json(call, send, 400, {"error": {"message": message, "type": "invalid_request_error"}})
        if fail == "context":
            error = {"message": "This model's maximum context length is 512 tokens.", "code": "context_length_exceeded"}
            return await self._json(call, send, 400, {"error": error})
        streamed = bool(body.get("stream"))
        if fail == "malformed" and not streamed:
            start = [(b"content-type", b"application/json"), (b"content-length", str(len(MALFORMED)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": start})
            call.finished = True
            return await send({"type": "http.response.body", "body": MALFORMED})
        if fail == "reset" or (fail == "reset_mid_stream" and not streamed):
            start = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": start})
            await send({"type": "http.response.body", "body": b'{"id": "x", ', "more_body": True})
            raise ConnectionResetError("the mock upstream drops the connection")
        if path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.25, 0.125]} for i in range(len(inputs))]
            usage = {"prompt_tokens": PROMPT_TOKENS * len(inputs), "total_tokens": PROMPT_TOKENS * len(inputs)}
            return await self._json(
                call, send, 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}
            )
        if path == "/v1/moderations":
            return await self._json(call, send, 200, _moderation(body))
        chat = path == "/v1/chat/completions"
        words = [f"w{i} " for i in range(self.chunks)]
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": self.chunks,
            "total_tokens": PROMPT_TOKENS + self.chunks,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        if not streamed:
            text = "".join(words)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            if chat and body.get("tools"):
                calls = [_call(n, _first_tool(body), f'{{"n": {n}}}') for n in range(2)]
                choice |= {"message": {"role": "assistant", "content": None, "tool_calls": calls}}
                choice["finish_reason"] = "tool_calls"
            answer = {
                "id": "upstream-id-1",
                "object": "chat.completion" if chat else "text_completion",
                "created": 1700000000,
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }
            return await self._json(call, send, 200, answer)
        await self._stream(call, send, body, chat, words, usage)

    async def _stream(
        self, call: _Call, send: Any, body: dict[str, Any], chat: bool, words: list[str], usage: dict[str, Any]
    ) -> None:
        start = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        kind = "chat.completion.chunk" if chat else "text_completion"

        def frame(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            base = {"id": "upstream-chunk", "object": kind, "created": 1700000000, "model": body["model"]}
            return {**base, "choices": choices, **extra}

        def choice(text: str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text or "", "finish_reason": finish}

        frames = [frame([choice(word, None)]) for word in words] + [frame([choice(None, "stop")])]
        if chat and body.get("tools"):
            frames = [
                frame([{"index": 0, "delta": {"tool_calls": [d]}, "finish_reason": None}]) for d in _call_deltas(body)
            ]
            frames.append(frame([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append(frame([], usage=usage))
        for number, payload in enumerate(frames):
            if not await self._pause(call, self.chunk_delay_s):
                return
            if number == 0 and self.fail == "malformed":
                await send({"type": "http.response.body", "body": b"data: " + MALFORMED + b"\n\n", "more_body": True})
                continue
            if number == CHUNKS_BEFORE_RESET and self.fail == "reset_mid_stream":
                raise ConnectionResetError("the mock upstream drops the stream")
            await send(
                {"type": "http.response.body", "body": f"data: {json.dumps(payload)}\n\n".encode(), "more_body": True}
            )
        call.finished = True
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        self.completed += 1


def _first_tool(body: dict[str, Any]) -> str:
    return str(body["tools"][0]["function"]["name"])


def _call(number: int, name: str, arguments: str) -> dict[str, Any]:
    return {"id": f"call_up_{number}", "type": "function", "function": {"name": name, "arguments": arguments}}


def _call_deltas(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Two parallel calls of the request's first tool, streamed interleaved (each delta names its call)."""
    name = _first_tool(body)
    return [
        {"index": 0, **_call(0, name, "")},
        {"index": 0, "function": {"arguments": '{"n": '}},
        {"index": 1, **_call(1, name, "")},
        {"index": 0, "function": {"arguments": "0}"}},
        {"index": 1, "function": {"arguments": '{"n": 1}'}},
    ]


def _moderation(body: dict[str, Any]) -> dict[str, Any]:
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    results = []
    for text in texts:
        scores = dict.fromkeys(MODERATION_CATEGORIES, 0.01)
        if FLAGGED_WORD in text:
            scores["violence"] = 0.93
        flags = {name: score >= 0.5 for name, score in scores.items()}
        results.append({"flagged": any(flags.values()), "categories": flags, "category_scores": scores})
    return {"id": "modr-upstream", "model": body["model"], "results": results}


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it fails at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def upstream_model(
    base_url: str,
    *,
    timeout_s: float = 10.0,
    capabilities: tuple[str, ...] = ("chat", "completions", "embeddings"),
    api_key_env: str | None = UPSTREAM_KEY_ENV,
    routing: RoutingSettings | None = None,
) -> UpstreamModel:
    """A model served by the upstream at ``base_url`` (``.../v1``), priced $1 / $2 per million tokens."""
    return UpstreamModel(
        alias=UPSTREAM_ALIAS,
        snapshot=UPSTREAM_SNAPSHOT,
        upstream=[
            UpstreamSettings.model_validate(
                {
                    "base_url": base_url,
                    "model": UPSTREAM_MODEL,
                    "api_key_env": api_key_env,
                    "timeout_s": timeout_s,
                    "capabilities": list(capabilities),
                }
            )
        ],
        pricing=PricingSettings(input_per_million=1.0, output_per_million=2.0),
        routing=routing or RoutingSettings(),
    )


def upstream_settings(upstream: MockUpstream | str, **overrides: Any) -> Settings:
    """Settings serving only the upstream model; ``upstream`` is a running mock or a base URL."""
    base_url = upstream if isinstance(upstream, str) else f"{upstream.url}/v1"
    names = ("timeout_s", "capabilities", "api_key_env", "routing")
    model_overrides = {k: overrides.pop(k) for k in names if k in overrides}
    return Settings(models=[upstream_model(base_url, **model_overrides)], **overrides)


if __name__ == "__main__":
    with MockUpstream(port=int(sys.argv[1])):
        signal.pause()  # until killed
