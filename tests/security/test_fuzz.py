"""Hostile bodies against the request parsers (hypothesis): random bytes, random JSON, and valid requests with
one field replaced by a random JSON value. None may produce a 5xx, or a stream that ends in a server error;
every refusal is the error envelope with a code.

A real server (uvicorn on loopback, the echo model, auth off) takes the bodies, so uvicorn's parsing is
exercised too. Examples are bounded and derandomized so the run is the same on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portico.app import create_app
from tests.conftest import ECHO_ALIAS, LiveServer, echo_settings

CHAT = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
# Every route that parses a JSON body, with a body it accepts.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"model": ECHO_ALIAS, "prompt": "hello there", "max_tokens": 4},
    "/v1/embeddings": {"model": ECHO_ALIAS, "input": "hello there"},
    "/v1/tokenize": {"model": ECHO_ALIAS, "prompt": "hello there"},
    f"/v1/models/{ECHO_ALIAS}/predict": {"input": "hello there", "max_tokens": 4},
    "/v1/conversations": {"model": ECHO_ALIAS, "system": "be brief"},
    "/v1/jobs": {"type": "chat.completion", "request": CHAT},
    "/v1/batches": {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    "/v1/admin/keys": {"project": "default", "scopes": ["inference"], "tier": "free"},
    "/v1/admin/projects": {"name": "fuzzed"},
    "/v1/admin/tiers": {"name": "fuzzed", "requests_per_minute": 10},
}
JSON = {"content-type": "application/json"}
CHAT_WITH = b'{"model": "echo", "messages": [{"role": "user", "content": "%s"}], "max_tokens": 8}'
FUZZ = settings(
    max_examples=40, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)

# Text, sometimes with lone UTF-16 surrogates: valid JSON escapes that decode to strings no encoder accepts.
texts = st.text(max_size=40) | st.lists(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=8).map("".join)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """``valid`` with one field replaced by a random value, or removed, or a random field added."""
    body = dict(valid)
    field = draw(st.sampled_from([*valid, "unexpected"]))
    if draw(st.booleans()) and field in body:
        del body[field]
    else:
        body[field] = draw(json_values)
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(create_app(echo_settings(data_dir=tmp_path_factory.mktemp("fuzz")))) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def assert_handled(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        assert '"type":"server_error"' not in response.text, response.text
    elif response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"] and error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("path", sorted(VALID_BODIES))
def test_a_valid_body_with_one_hostile_field_is_never_a_server_error(http: httpx.Client, path: str) -> None:
    @FUZZ
    @given(body=mutated(VALID_BODIES[path]))
    def check(body: dict[str, Any]) -> None:
        assert_handled(http.post(path, content=json.dumps(body).encode(), headers=JSON))

    check()


@pytest.mark.parametrize("path", sorted(VALID_BODIES))
def test_random_json_and_random_bytes_are_never_a_server_error(http: httpx.Client, path: str) -> None:
    @FUZZ
    @given(body=json_values.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=200))
    def check(body: bytes) -> None:
        assert_handled(http.post(path, content=body, headers=JSON))

    check()


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "echo", "max_tokens": 1e999}',
        b'{"model": "echo", "max_tokens": NaN}',
        b'{"model": "echo", "messages": [' * 5000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "\xff\xfe"}',
        b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b"\x00" * 64,
    ],
    ids=["huge-float", "nan", "unclosed-nesting", "deep-nesting", "not-utf8", "lone-surrogate", "nul-bytes"],
)
def test_known_parser_traps_are_400s(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v1/chat/completions", content=body, headers=JSON)
    assert_handled(response)
    assert response.status_code == 400


def test_a_surrogate_pair_is_text_and_a_lone_surrogate_is_refused(http: httpx.Client) -> None:
    pair = http.post("/v1/chat/completions", content=CHAT_WITH % b"\\ud83d\\ude00 hi", headers=JSON)
    lone = http.post("/v1/chat/completions", content=CHAT_WITH % b"\\ud800 hi", headers=JSON)

    assert pair.status_code == 200 and "\N{GRINNING FACE} hi" in pair.json()["choices"][0]["message"]["content"]
    assert lone.status_code == 400
    assert lone.json()["error"]["code"] == "invalid_json"
    assert "lone surrogate" in lone.json()["error"]["message"]


def test_a_missing_body_is_a_400_that_says_so(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", headers=JSON)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("The request body is missing.")


def test_a_tier_is_read_as_strictly_as_every_other_body(http: httpx.Client) -> None:
    """``false`` is not a budget of 0, nor ``"10"`` a rate of 10 (the settings file reads tiers leniently)."""
    for field, value in [("budget_per_month_usd", False), ("requests_per_minute", "10")]:
        response = http.post("/v1/admin/tiers", json={"name": "strict", field: value})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == field
    assert http.post("/v1/admin/tiers", json={"name": "strict", "budget_per_month_usd": 5}).status_code == 200
