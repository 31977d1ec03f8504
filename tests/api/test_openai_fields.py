"""Every parameter of the installed openai SDK's create() calls is a field Portico's request schema takes, and the
docs say what Portico does with each, so an SDK upgrade that adds a field fails here instead of as a user's 400."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openai.resources.chat.completions import Completions as ChatCompletions
from openai.resources.completions import Completions
from openai.resources.responses import Responses
from pydantic import BaseModel

from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.completions import CompletionRequest
from portico.schemas.responses import ResponseCreateRequest

DOCS = Path(__file__).resolve().parents[2] / "docs"
TRANSPORT = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}  # the SDK's, not the API's
# Fields Portico takes beyond OpenAI's: completions keep metadata as chat does; a response takes a seed.
EXTENSIONS = {CompletionRequest: {"metadata"}, ResponseCreateRequest: {"seed"}}
CREATES: list[tuple[Callable[..., Any], type[BaseModel], str]] = [
    (ChatCompletions.create, ChatCompletionRequest, "api.md"),
    (Completions.create, CompletionRequest, "api.md"),
    (Responses.create, ResponseCreateRequest, "responses.md"),
]


def _sdk_parameters(create: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(create).parameters) - TRANSPORT


def _fields(schema: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in schema.model_fields.items()}


@pytest.mark.parametrize(("create", "schema", "doc"), CREATES, ids=lambda value: getattr(value, "__name__", None))
def test_the_schema_takes_every_parameter_of_the_sdk(
    create: Callable[..., Any], schema: type[BaseModel], doc: str
) -> None:
    sdk = _sdk_parameters(create)

    assert sdk - _fields(schema) == set(), "parameters the SDK sends that Portico would refuse"
    assert _fields(schema) - sdk == EXTENSIONS.get(schema, set()), "fields OpenAI does not define"


@pytest.mark.parametrize(("create", "schema", "doc"), CREATES, ids=lambda value: getattr(value, "__name__", None))
def test_the_docs_say_what_happens_to_each_parameter(
    create: Callable[..., Any], schema: type[BaseModel], doc: str
) -> None:
    text = (DOCS / doc).read_text()
    documented = set(re.findall(r"`([a-z_]+)(?:[.`:\[ ])", text))

    assert _sdk_parameters(create) - documented == set()
