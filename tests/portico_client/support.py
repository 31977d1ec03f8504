"""What the SDK tests share: one way to drive either client, a real Portico with auth on, and loopback stubs."""

from __future__ import annotations

import inspect
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

from starlette.types import Receive, Scope, Send

from portico.auth.keys import new_key
from portico_client import AsyncPortico, AsyncStream, Portico, Stream
from tests.conftest import LiveServer, auth_settings, live_server

Mode = Literal["sync", "async"]


class Sdk:
    """Either client behind one interface, so a test runs the same calls through both:
    ``await sdk(lambda client: client.models.list())``."""

    def __init__(self, client: Portico | AsyncPortico) -> None:
        self.client = client

    async def __call__(self, call: Callable[[Any], Any]) -> Any:
        result = call(self.client)
        return await result if inspect.isawaitable(result) else result

    async def collect(self, stream: Stream[Any] | AsyncStream[Any], into: list[Any] | None = None) -> list[Any]:
        """The stream's items; ``into`` holds those received before an error."""
        items = [] if into is None else into
        if isinstance(stream, AsyncStream):
            async for item in stream:
                items.append(item)
        else:
            items.extend(stream)
        return items


@asynccontextmanager
async def sdk_for(mode: Mode, base_url: str, **options: Any) -> AsyncIterator[Sdk]:
    if mode == "sync":
        with Portico(base_url=base_url, **options) as client:
            yield Sdk(client)
    else:
        async with AsyncPortico(base_url=base_url, **options) as aclient:
            yield Sdk(aclient)


@contextmanager
def portico_server(**overrides: Any) -> Iterator[tuple[LiveServer, str]]:
    """A real Portico (echo model, auth on) and its bootstrap admin key, which has every scope."""
    admin_key = new_key().plaintext
    with live_server(auth_settings(admin_key=admin_key, **overrides)) as server:
        yield server, admin_key


Reply = tuple[int, dict[str, str], bytes]


class ScriptedApp:
    """An ASGI app that answers each request with the next scripted reply (the last one repeats), recording
    every request's headers. A reply whose body is a list is streamed as those SSE frames; a frame ``None``
    drops the connection there."""

    def __init__(self, *replies: tuple[int, dict[str, str], bytes | list[bytes | None]]) -> None:
        self._replies = list(replies)
        self.requests: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.requests.append({name.decode(): value.decode() for name, value in scope["headers"]})
        status, headers, body = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        raw_headers = [(name.encode(), value.encode()) for name, value in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        frames = body if isinstance(body, list) else [body]
        for frame in frames:
            if frame is None:
                raise ConnectionAbortedError("scripted drop")  # uvicorn closes the connection mid-body
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def idempotency_keys(self) -> list[str | None]:
        return [headers.get("idempotency-key") for headers in self.requests]


def json_reply(status: int, body: dict[str, Any], **headers: str) -> Reply:
    return status, {"content-type": "application/json", **headers}, json.dumps(body).encode()


def error_reply(status: int, code: str, *, retryable: bool, retry_after: str | None = "0") -> Reply:
    error = {"type": "x", "code": code, "message": f"{code}!", "param": None, "retryable": retryable}
    headers = {"x-should-retry": "true" if retryable else "false", "x-request-id": f"req_{code}"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return json_reply(status, {"error": {**error, "request_id": f"req_{code}"}}, **headers)


def sse(*payloads: dict[str, Any] | str) -> list[bytes | None]:
    return [f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n".encode() for p in payloads]


class DropFirstConnection:
    """A raw loopback HTTP server: the first connection is closed without an answer, later ones get ``reply``.
    It records the Idempotency-Key of each request it read."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self._body = json.dumps(reply).encode()
        self.keys: list[str | None] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DropFirstConnection:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                head = self._read_head(connection)
                key = next(
                    (line.split(":", 1)[1].strip() for line in head if line.startswith("idempotency-key:")), None
                )
                self.keys.append(key)
                if len(self.keys) == 1:
                    continue  # closed without an answer
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    + f"content-length: {len(self._body)}\r\n\r\n".encode()
                    + self._body
                )

    @staticmethod
    def _read_head(connection: socket.socket) -> list[str]:
        """The request's header lines (lower-case), after reading its whole body."""
        data = b""
        while b"\r\n\r\n" not in data and (chunk := connection.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = [line.lower() for line in head.decode().split("\r\n")]
        length = next((int(line.split(":", 1)[1]) for line in lines if line.startswith("content-length:")), 0)
        while len(body) < length and (chunk := connection.recv(65536)):
            body += chunk
        return lines
