"""The same clients against a real `portico serve` in front of an upstream (the loopback mock, which answers a
request with tools with two parallel calls of its first tool): the tool fields reach the upstream, and its calls
come back to each client in its own API's shape, sync and streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from openai import OpenAI

from tests.system.servers import serving
from tests.upstream_mock import UPSTREAM_ALIAS, UPSTREAM_MODEL, MockUpstream

pytestmark = pytest.mark.slow

CONFIG = """
[[models]]
alias = "{alias}"
snapshot = "{alias}-2025-01-01"
engine = "upstream"

[[models.upstream]]
base_url = "{url}/v1"
model = "{model}"
"""
PARAMETERS = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TWO_CALLS = [("count", {"n": 0}), ("count", {"n": 1})]


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as mock:
        yield mock


@pytest.fixture(scope="module")
def server(upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's root URL; its one model is the upstream's."""
    work: Path = tmp_path_factory.mktemp("gateway")
    (work / "portico.toml").write_text(CONFIG.format(alias=UPSTREAM_ALIAS, url=upstream.url, model=UPSTREAM_MODEL))
    with serving(work) as url:
        yield url


@pytest.fixture
def openai_client(server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server}/v1", api_key="unused on loopback", max_retries=0) as client:
        yield client


def test_chat_tool_calls_are_relayed_sync_and_streamed(openai_client: OpenAI, upstream: MockUpstream) -> None:
    tool = {"type": "function", "function": {"name": "count", "parameters": PARAMETERS}}
    ask = {"model": UPSTREAM_ALIAS, "messages": [{"role": "user", "content": "count"}], "tools": [tool]}
    completion = openai_client.chat.completions.create(**ask, parallel_tool_calls=True)  # type: ignore[call-overload]
    sent = upstream.requests[-1].body
    chunks = list(openai_client.chat.completions.create(**ask, stream=True))  # type: ignore[call-overload]

    calls = completion.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == TWO_CALLS  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert sent["tools"] == [tool] and sent["parallel_tool_calls"] is True
    streamed: dict[int, str] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            streamed[delta.index] = streamed.get(delta.index, "") + (delta.function.arguments or "")  # type: ignore[union-attr]
    assert [json.loads(streamed[i]) for i in sorted(streamed)] == [{"n": 0}, {"n": 1}]


def test_a_response_relays_the_upstreams_calls_and_continues(openai_client: OpenAI, upstream: MockUpstream) -> None:
    tool = {"type": "function", "name": "count", "parameters": PARAMETERS}
    called = openai_client.responses.create(model=UPSTREAM_ALIAS, input="count", tools=[tool])  # type: ignore[list-item]
    sent = upstream.requests[-1].body
    events = list(openai_client.responses.create(model=UPSTREAM_ALIAS, input="count", tools=[tool], stream=True))  # type: ignore[list-item]
    outputs = [
        {"type": "function_call_output", "call_id": item.call_id, "output": "done"}
        for item in called.output
        if item.type == "function_call"
    ]
    answered = openai_client.responses.create(model=UPSTREAM_ALIAS, previous_response_id=called.id, input=outputs)  # type: ignore[arg-type]
    replayed = upstream.requests[-1].body["messages"]

    items = [item for item in called.output if item.type == "function_call"]
    assert [(item.name, json.loads(item.arguments), item.call_id) for item in items] == [
        ("count", {"n": 0}, "call_up_0"),
        ("count", {"n": 1}, "call_up_1"),
    ]
    assert sent["tools"] == [{"type": "function", "function": {"name": "count", "parameters": PARAMETERS}}]
    done = [event.arguments for event in events if event.type == "response.function_call_arguments.done"]
    assert [json.loads(arguments) for arguments in done] == [{"n": 0}, {"n": 1}]
    assert answered.output_text == "w0 w1 w2 w3 w4 "
    assert [message["role"] for message in replayed] == ["user", "assistant", "tool", "tool"]
    assert [call["id"] for call in replayed[1]["tool_calls"]] == ["call_up_0", "call_up_1"]


def test_the_anthropic_sdk_gets_the_calls_as_tool_use_blocks(server: str) -> None:
    tool: anthropic.types.ToolParam = {"name": "count", "input_schema": PARAMETERS}
    with anthropic.Anthropic(base_url=server, api_key="unused on loopback", max_retries=0) as client:
        message = client.messages.create(
            model=UPSTREAM_ALIAS, max_tokens=64, messages=[{"role": "user", "content": "count"}], tools=[tool]
        )
        with client.messages.stream(
            model=UPSTREAM_ALIAS, max_tokens=64, messages=[{"role": "user", "content": "say words"}]
        ) as stream:
            text = "".join(stream.text_stream)

    uses = [(block.name, block.input) for block in message.content if block.type == "tool_use"]
    assert uses == TWO_CALLS and message.stop_reason == "tool_use"
    assert text == "w0 w1 w2 w3 w4 "
