"""Request limits a hostile or careless client meets: messages per request, open streams per key, slow bodies."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx

from portico.auth.keys import new_key
from portico.settings import FilesSettings
from tests.conftest import ECHO_ALIAS, asgi_client, auth_settings, bearer, echo_settings, live_server


def _chat(messages: int, **extra: Any) -> dict[str, Any]:
    turns = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n}"} for n in range(messages)]
    return {"model": ECHO_ALIAS, "messages": turns, "max_tokens": 2, **extra}


async def test_more_messages_than_max_messages_is_a_400_naming_the_param() -> None:
    async with asgi_client(echo_settings(max_messages=3)) as (client, _):
        fits = await client.post("/v1/chat/completions", json=_chat(3))
        too_many = await client.post("/v1/chat/completions", json=_chat(4))
        streamed = await client.post("/v1/chat/completions", json=_chat(4, stream=True))

    assert fits.status_code == 200
    for refused in (too_many, streamed):
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_request", "messages")
        assert "at most 3" in error["message"]


def _admin(http: httpx.Client, admin_key: str) -> str:
    created = http.post(
        "/v1/admin/keys",
        json={"project": "default", "scopes": ["inference"], "tier": "unlimited"},
        headers=bearer(admin_key),
    )
    assert created.status_code == 201, created.text
    return str(created.json()["value"])


def test_a_key_holds_at_most_max_streams_per_key_open_streams() -> None:
    """Real connections: two streams stay open while a third is refused, for that key only."""
    admin_key = new_key().plaintext
    settings = auth_settings(max_streams_per_key=2, tokens_per_second=20, context_window=1024, admin_key=admin_key)
    words = " ".join(f"w{n}" for n in range(300))  # echoed at 20 tokens/s: each stream stays open about 15 s
    long_stream = {**_chat(1, stream=True, max_tokens=500), "messages": [{"role": "user", "content": words}]}
    with live_server(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        key, other_key = bearer(_admin(http, admin_key)), bearer(_admin(http, admin_key))
        with (
            http.stream("POST", "/v1/chat/completions", json=long_stream, headers=key) as first,
            http.stream("POST", "/v1/chat/completions", json=long_stream, headers=key) as second,
        ):
            assert (first.status_code, second.status_code) == (200, 200)
            # Held in names: a line iterator dropped mid-stream is closed when collected, and closing it closes
            # its connection (httpcore), which would end that stream and free its slot.
            first_lines, second_lines = first.iter_lines(), second.iter_lines()
            next(first_lines)
            next(second_lines)
            refused = http.post("/v1/chat/completions", json=long_stream, headers=key)
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert (error["code"], error["retryable"]) == ("too_many_streams", True)
            assert refused.headers["retry-after"] == "1"
            assert http.post("/v1/chat/completions", json=_chat(1), headers=key).status_code == 200
            others = http.post("/v1/chat/completions", json=_chat(1, stream=True), headers=other_key)
            assert others.status_code == 200
        # The server frees a slot when it sees its client gone, a moment after the client closed it.
        deadline = time.monotonic() + 10
        while (again := http.post("/v1/chat/completions", json=_chat(1, stream=True), headers=key)).status_code == 429:
            assert time.monotonic() < deadline, "closed streams still hold their slots"
            time.sleep(0.05)
        assert again.status_code == 200 and again.text.endswith("data: [DONE]\n\n")


def _stalled_request(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` (a body cut short) and stall; the server's whole answer, and what follows it."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        raw.sendall(request)
        received = b""
        while chunk := raw.recv(65536):  # ends when the server closes the connection
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def test_a_body_slower_than_body_timeout_is_a_408_and_the_connection_closes() -> None:
    with live_server(echo_settings(body_timeout_s=0.5)) as server:
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: portico\r\ncontent-type: application/json\r\n"
            b'content-length: 200\r\n\r\n{"model": "echo", '
        )
        head, body = _stalled_request(server.port, request)

    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert b'"code":"request_timeout"' in body
    assert b"within 0.5 seconds" in body


def test_an_upload_that_stalls_is_a_408_and_the_connection_closes() -> None:
    boundary = b"portico-boundary"
    start = (
        b"--" + boundary + b'\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--" + boundary + b'\r\ncontent-disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        b"content-type: application/jsonl\r\n\r\n{}"
    )
    request = (
        b"POST /v1/files HTTP/1.1\r\nhost: portico\r\n"
        b"content-type: multipart/form-data; boundary=" + boundary + b"\r\ncontent-length: 100000\r\n\r\n" + start
    )
    settings = echo_settings(body_timeout_s=0.5, files=FilesSettings(max_bytes=1_000_000))
    with live_server(settings) as server:
        head, body = _stalled_request(server.port, request)

    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert b'"code":"request_timeout"' in body
    assert b"paused for more than 0.5 seconds" in body
