"""The access log: one JSON line per request with what an operator needs, and never a key, prompt or answer."""

from __future__ import annotations

import json
import logging

import pytest

from portico.observability.logging import JsonFormatter
from tests.conftest import asgi_client, auth_settings, bearer, make_key

PROMPT = "my secret diagnosis is zebra-quartz-417"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = JsonFormatter()
    return [formatter.format(record) for record in caplog.records]


async def test_one_line_per_request_with_its_model_tokens_and_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with asgi_client(auth_settings()) as (client, app):
        key = await make_key(app)
        caplog.clear()
        body = {"model": "echo", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6}
        sync = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
        stream = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=bearer(key))
        lines = _lines(caplog)

    answer = sync.json()["choices"][0]["message"]["content"]
    assert answer and stream.status_code == 200
    access = [json.loads(line) for line in lines if '"logger":"portico.access"' in line]
    assert [entry["request_id"] for entry in access] == [sync.headers["x-request-id"], stream.headers["x-request-id"]]
    usage = sync.json()["usage"]
    first = access[0]
    assert first["key_id"] == key.split("-")[1]
    assert (first["status"], first["path"], first["model"]) == (200, "/v1/chat/completions", "echo-2026-01-01")
    assert (first["prompt_tokens"], first["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert first["duration_ms"] >= 0
    assert access[1]["completion_tokens"] > 0

    secret = key.split("-")[2]
    for line in lines:
        assert secret not in line
        assert "zebra-quartz" not in line
        assert answer not in line


async def test_a_rejected_key_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "pk-key_000000000000000000000000-" + "ab" * 32
    async with asgi_client(auth_settings()) as (client, _):
        response = await client.get("/v1/models", headers=bearer(wrong))
        lines = _lines(caplog)

    assert response.status_code == 401
    assert any('"status":401' in line for line in lines)
    assert not any("ab" * 32 in line for line in lines)
