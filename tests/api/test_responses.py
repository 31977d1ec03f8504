"""The Responses API through the official openai SDK against a real server (uvicorn on loopback), on the echo
engine (it answers with the last user turn, so a turn written as a call comes back as the model's call)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from portico.constants import FinishReason
from portico.engines.base import Generation, GenerationRequest
from portico.engines.echo import EchoEngine
from portico.errors import EngineError
from tests.conftest import ECHO_SNAPSHOT, LiveServer, live_server
from tests.jobs.support import job_settings

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL_TEXT = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with live_server(job_settings()) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused on loopback", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def slow_server() -> Iterator[LiveServer]:
    with live_server(job_settings(tokens_per_second=20)) as running:
        yield running


def test_a_response_answers_with_text_and_usage(client: OpenAI) -> None:
    response = client.responses.create(model="echo", input="the words to answer", instructions="Be brief.")

    assert response.id.startswith("resp_") and response.object == "response"
    assert (response.status, response.model, response.output_text) == (
        "completed",
        ECHO_SNAPSHOT,
        "the words to answer",
    )
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert response.instructions == "Be brief." and response.store is True
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_a_stream_sends_the_typed_events_and_ends_with_the_stored_response(client: OpenAI) -> None:
    events = list(client.responses.create(model="echo", input="stream these four words", stream=True))

    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) == 4 and "".join(deltas) == "stream these four words"
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == "stream these four words" and completed.usage is not None
    stored = client.responses.retrieve(completed.id)
    assert stored.output_text == "stream these four words"
    assert stored.output[0].id == completed.output[0].id == events[2].item.id  # type: ignore[union-attr]


def test_the_sdk_stream_helper_reassembles_the_text(client: OpenAI) -> None:
    with client.responses.stream(model="echo", input="helper words") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()

    assert text == final.output_text == "helper words"


def test_a_function_call_round_trip_continues_from_the_previous_response(client: OpenAI) -> None:
    called = client.responses.create(model="echo", input=CALL_TEXT, tools=[WEATHER], tool_choice="required")

    (call,) = called.output
    assert call.type == "function_call" and call.status == "completed"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    answered = client.responses.create(
        model="echo",
        previous_response_id=called.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'},
            {"role": "user", "content": "so, the weather?"},
        ],
        tools=[WEATHER],
    )
    assert answered.output_text == "so, the weather?"
    assert answered.previous_response_id == called.id
    # The first turn, its call and the call's output are part of the prompt now.
    assert answered.usage is not None and called.usage is not None
    assert answered.usage.input_tokens > called.usage.input_tokens + 10


def test_a_streamed_call_sends_argument_deltas(client: OpenAI) -> None:
    events = list(
        client.responses.create(model="echo", input=CALL_TEXT, tools=[WEATHER], tool_choice="required", stream=True)
    )

    added = [event for event in events if event.type == "response.output_item.added"]
    assert len(added) == 1 and added[0].item.type == "function_call"
    assert added[0].item.name == "get_weather"  # type: ignore[union-attr]
    fragments = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Paris"}
    final = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type == "response.completed" and final.output[0].type == "function_call"


def test_previous_response_id_carries_the_conversation(client: OpenAI) -> None:
    first = client.responses.create(model="echo", input="my name is Ada")
    second = client.responses.create(model="echo", input="what is my name?", previous_response_id=first.id)
    alone = client.responses.create(model="echo", input="what is my name?")

    assert second.usage is not None and alone.usage is not None and first.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    items = client.responses.input_items.list(second.id)
    assert [(item.type, item.role) for item in items.data] == [("message", "user")]  # type: ignore[union-attr]


def test_a_stored_response_is_read_listed_and_deleted(client: OpenAI) -> None:
    response = client.responses.create(
        model="echo",
        input=[
            {"role": "developer", "content": "Answer plainly."},
            {"role": "user", "content": [{"type": "input_text", "text": "first words"}]},
        ],
        metadata={"topic": "tests"},
    )

    assert client.responses.retrieve(response.id).metadata == {"topic": "tests"}
    newest_first = client.responses.input_items.list(response.id)
    assert [item.role for item in newest_first.data] == ["user", "developer"]  # type: ignore[union-attr]
    oldest_first = client.responses.input_items.list(response.id, order="asc", limit=1)
    assert [item.role for item in oldest_first.data] == ["developer"] and oldest_first.has_more  # type: ignore[union-attr]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_store_false_keeps_nothing(client: OpenAI) -> None:
    response = client.responses.create(model="echo", input="not kept", store=False)

    assert response.output_text == "not kept"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as continued:
        client.responses.create(model="echo", input="next", previous_response_id=response.id)
    assert continued.value.body["param"] == "previous_response_id"  # type: ignore[index]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"background": True, "store": False}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"temprature": 0.5}, "temprature"),
    ],
)
def test_what_portico_cannot_serve_is_a_400_naming_the_parameter(
    client: OpenAI, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "echo", "input": "hi", **extra}
    response = httpx.post(f"{client.base_url}responses", json=body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_fields_clients_send_as_a_matter_of_course_are_accepted(client: OpenAI) -> None:
    response = client.responses.create(
        model="echo",
        input="fine",
        reasoning={"effort": "low"},
        service_tier="auto",
        safety_identifier="user-1",
        prompt_cache_key="k",
        truncation="auto",
        include=["message.output_text.logprobs"],
        top_logprobs=2,
        parallel_tool_calls=False,
        text={"format": {"type": "text"}, "verbosity": "low"},
    )

    assert response.output_text == "fine"
    logprobs = response.output[0].content[0].logprobs  # type: ignore[union-attr]
    assert logprobs is not None and len(logprobs) == 1 and len(logprobs[0].top_logprobs) >= 1


def _wait(client: OpenAI, response_id: str, until: set[str]) -> Any:
    deadline = time.monotonic() + 20
    while (response := client.responses.retrieve(response_id)).status not in until:
        assert time.monotonic() < deadline, response
        time.sleep(0.05)
    return response


def test_a_background_response_is_queued_then_polled_to_completion(client: OpenAI) -> None:
    queued = client.responses.create(model="echo", input="later words", background=True)

    assert (queued.status, queued.background, queued.output) == ("queued", True, [])
    done = _wait(client, queued.id, {"completed", "failed", "cancelled"})
    assert (done.status, done.output_text, done.model) == ("completed", "later words", ECHO_SNAPSHOT)
    assert done.usage is not None and done.usage.output_tokens == 2
    follow_up = client.responses.create(model="echo", input="and now?", previous_response_id=queued.id)
    assert follow_up.output_text == "and now?"


def test_a_background_response_streams_and_resumes_after_a_sequence_number(slow_server: LiveServer) -> None:
    with OpenAI(base_url=f"{slow_server.url}/v1", api_key="unused", max_retries=0) as client:
        events = list(client.responses.create(model="echo", input="one two three four", background=True, stream=True))
        response_id = events[0].response.id  # type: ignore[union-attr]
        with httpx.stream(
            "GET", f"{slow_server.url}/v1/responses/{response_id}", params={"stream": "true", "starting_after": 3}
        ) as resumed:
            lines = [line for line in resumed.iter_lines() if line.startswith("data: ")]

    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "one two three four"
    replayed = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert [event["sequence_number"] for event in replayed] == [e.sequence_number for e in events[4:]]
    assert [event["type"] for event in replayed] == [event.type for event in events[4:]]
    assert replayed[-1]["response"]["output"][0]["id"] == events[-1].response.output[0].id  # type: ignore[union-attr]


def test_a_background_response_can_be_cancelled(slow_server: LiveServer) -> None:
    with OpenAI(base_url=f"{slow_server.url}/v1", api_key="unused", max_retries=0) as client:
        words = " ".join(["word"] * 200)
        queued = client.responses.create(model="echo", input=words, background=True)
        _wait(client, queued.id, {"in_progress"})
        cancelled = client.responses.cancel(queued.id)
        again = client.responses.retrieve(queued.id)
        with pytest.raises(openai.BadRequestError):
            client.responses.cancel(client.responses.create(model="echo", input="sync").id)

    assert cancelled.status == again.status == "cancelled"


def test_a_failure_mid_stream_ends_with_error_and_response_failed(
    monkeypatch: pytest.MonkeyPatch, client: OpenAI
) -> None:
    async def emit(self: EchoEngine, request: GenerationRequest, generation: Generation, index: int) -> FinishReason:
        generation.completion_tokens += 1
        generation.push(index, "partial ")
        raise EngineError("The embedded engine failed while generating. Retry the request.")

    monkeypatch.setattr(EchoEngine, "_emit", emit)
    events = list(client.responses.create(model="echo", input="doomed", stream=True))

    assert [event.type for event in events][-2:] == ["error", "response.failed"]
    assert [event.delta for event in events if event.type == "response.output_text.delta"] == ["partial "]
    error, failed = events[-2], events[-1]
    assert error.code == "engine_error" and "Retry" in error.message  # type: ignore[union-attr]
    assert failed.response.status == "failed" and failed.response.error.code == "engine_error"  # type: ignore[union-attr]
    assert [event.sequence_number for event in events] == list(range(len(events)))
