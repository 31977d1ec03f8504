"""Request ids, X-Processing-Ms and per-request log lines."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from portico.observability.logging import JsonFormatter
from tests.conftest import ECHO_ALIAS


def chat(**extra: object) -> dict[str, object]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", chat()),
        ("POST", "/v1/chat/completions", chat(stream=True)),
        ("POST", "/v1/chat/completions", chat(model="missing")),
        ("GET", "/nowhere", None),
        ("GET", "/healthz", None),
    ],
)
async def test_every_response_has_request_id_and_processing_time(
    client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await client.request(method, path, json=body)

    assert response.headers["x-request-id"].startswith("req_")
    assert float(response.headers["x-processing-ms"]) >= 0


async def test_a_sane_client_request_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"x-request-id": "client-abc.123"})

    assert response.headers["x-request-id"] == "client-abc.123"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "semi;colon", "<script>"])
async def test_an_unsafe_client_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get("/healthz", headers={"x-request-id": bad})

    assert response.headers["x-request-id"].startswith("req_")


async def test_log_lines_of_a_request_carry_its_id(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="portico")
    response = await client.post("/v1/chat/completions", json=chat(), headers={"x-request-id": "trace-me-1"})

    access = [r for r in caplog.records if r.name == "portico.access"]
    assert access, "no access log line"
    line = json.loads(JsonFormatter().format(access[-1]))
    assert line["request_id"] == response.headers["x-request-id"] == "trace-me-1"
    assert line["status"] == 200
    assert line["path"] == "/v1/chat/completions"
    assert "hi" not in json.dumps(line), "prompts never reach the logs"
