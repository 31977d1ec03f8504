"""pydantic-ai, as its quickstart drives it, against a real `portico serve`: an agent whose structured output
comes through its forced output tool, and an agent that calls a function tool, then gives its output."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import RetryPromptPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from tests.clients.conftest import API_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.model]


class Weather(BaseModel):
    city: str
    temperature_c: int
    sunny: bool


@pytest.fixture
def model(base_url: str) -> Iterator[OpenAIChatModel]:
    # run_sync runs on the thread's event loop and leaves the provider's HTTP client (and its connections to
    # the server) open; `async with agent` would close it but cannot wrap run_sync. So: one loop per test, on
    # which the client is closed afterwards.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    provider = OpenAIProvider(base_url=base_url, api_key=API_KEY)
    try:
        yield OpenAIChatModel(MODEL, provider=provider)
    finally:
        loop.run_until_complete(provider.client.close())
        asyncio.set_event_loop(None)
        loop.close()


SETTINGS = ModelSettings(temperature=0, max_tokens=150)


def test_structured_output_is_an_instance(model: OpenAIChatModel) -> None:
    agent = Agent(model, output_type=Weather, model_settings=SETTINGS)

    result = agent.run_sync("The weather in Paris is 18 C and sunny.")

    assert isinstance(result.output, Weather)


@dataclass
class CallThenAnswer(AbstractCapability[None]):
    """Forces a call of ``tool`` on the first step, then the output tool: pydantic-ai refuses a static
    "required" tool choice, since the agent could then never give its output."""

    tool: str

    def get_model_settings(self) -> Callable[[RunContext[None]], ModelSettings]:
        return lambda ctx: ModelSettings(tool_choice=[self.tool] if ctx.run_step <= 1 else "none")


def test_a_forced_tool_call_is_run_then_the_output_is_an_instance(model: OpenAIChatModel) -> None:
    agent = Agent(model, output_type=Weather, model_settings=SETTINGS, capabilities=[CallThenAnswer("get_temperature")])
    calls: list[str] = []

    @agent.tool_plain
    def get_temperature(city: str) -> int:
        """The temperature in a city, in degrees Celsius."""
        calls.append(city)
        return 18

    result = agent.run_sync("What is the weather in Paris?")

    assert isinstance(result.output, Weather)
    # pydantic-ai runs a tool only on arguments that validate against its signature, and asks again otherwise.
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert not [p for m in result.all_messages() for p in m.parts if isinstance(p, RetryPromptPart)]
