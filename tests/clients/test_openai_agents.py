"""The OpenAI Agents SDK, as its quickstart drives it, against a real `portico serve`, on its default model (the
Responses API) and on its Chat Completions model: an agent with a structured output type, and an agent forced to
call its function tool."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from agents import (
    Agent,
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ToolCallItem
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests.clients.conftest import API_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.model]


class Weather(BaseModel):
    city: str
    temperature_c: int
    sunny: bool


@pytest.fixture(params=[OpenAIResponsesModel, OpenAIChatCompletionsModel], ids=["responses", "chat_completions"])
def model(base_url: str, request: pytest.FixtureRequest) -> Iterator[Model]:
    set_tracing_disabled(True)  # tracing would export to api.openai.com
    # Runner.run_sync runs on the thread's default event loop and shuts its async generators down after each run,
    # so a second run on the same loop warns (httpx's auth flow is an async generator): one loop per test.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = AsyncOpenAI(base_url=base_url, api_key=API_KEY)
    try:
        yield request.param(model=MODEL, openai_client=client)
    finally:
        loop.run_until_complete(client.close())
        asyncio.set_event_loop(None)
        loop.close()


SETTINGS = ModelSettings(temperature=0, max_tokens=150)


def test_structured_output_is_an_instance(model: Model) -> None:
    agent = Agent(
        name="Reporter", instructions="Report the weather.", model=model, model_settings=SETTINGS, output_type=Weather
    )

    result = Runner.run_sync(agent, "The weather in Paris is 18 C and sunny.")

    assert isinstance(result.final_output, Weather)


def test_a_forced_tool_call_runs_with_valid_arguments(model: Model) -> None:
    calls: list[str] = []

    @function_tool
    def get_temperature(city: str) -> str:
        """The temperature in a city, in degrees Celsius."""
        calls.append(city)
        return "18"

    agent = Agent(
        name="Forecaster",
        instructions="Answer questions about the weather.",
        model=model,
        model_settings=SETTINGS.resolve(ModelSettings(tool_choice="required")),
        tools=[get_temperature],
        tool_use_behavior="stop_on_first_tool",
    )

    result = Runner.run_sync(agent, "What is the weather in Paris?")

    # The SDK runs a tool only on arguments that validate against its signature (and runs each call of the answer).
    assert calls and all(isinstance(city, str) for city in calls)
    assert result.final_output == "18"
    made = [item.raw_item for item in result.new_items if isinstance(item, ToolCallItem)]
    assert len(made) == len(calls) and {call.name for call in made} == {"get_temperature"}
