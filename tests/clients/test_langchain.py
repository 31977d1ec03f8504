"""LangChain's ChatOpenAI, as its quickstart drives it, against a real `portico serve`: bound tools with a forced
choice, and structured output both ways (a JSON schema response format, and a forced function call)."""

from __future__ import annotations

from typing import Literal

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.clients.conftest import API_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.model]


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The current weather in a city."""
    return f"18 degrees {unit} in {city}"


class Movie(BaseModel):
    title: str
    year: int
    genre: Literal["comedy", "drama", "horror"]


def _chat(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(base_url=base_url, api_key=API_KEY, model=MODEL, temperature=0, max_tokens=150)


@pytest.mark.parametrize("tool_choice", ["any", "get_weather"])
def test_bound_tools_with_a_forced_choice_give_valid_tool_calls(base_url: str, tool_choice: str) -> None:
    chat = _chat(base_url).bind_tools([get_weather], tool_choice=tool_choice)

    answer = chat.invoke("What is the weather in Paris?")

    assert isinstance(answer, AIMessage)
    assert answer.tool_calls and not answer.invalid_tool_calls
    for call in answer.tool_calls:
        assert call["name"] == "get_weather"
        get_weather.args_schema.model_validate(call["args"])  # the tool's own schema accepts them
        assert isinstance(get_weather.invoke(call["args"]), str)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_returns_an_instance(
    base_url: str, method: Literal["json_schema", "function_calling"]
) -> None:
    chat = _chat(base_url).with_structured_output(Movie, method=method)

    movie = chat.invoke("Name a famous movie.")

    assert isinstance(movie, Movie)
