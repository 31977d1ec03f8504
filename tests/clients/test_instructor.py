"""instructor, as its quickstart drives it, against a real `portico serve`: a response model filled through a
forced function call (Mode.TOOLS) and through a JSON schema response format (Mode.JSON_SCHEMA), validated
without retries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import instructor
import openai
import pytest
from pydantic import BaseModel

from tests.clients.conftest import API_KEY, MODEL

pytestmark = [pytest.mark.slow, pytest.mark.model]


class UserInfo(BaseModel):
    name: str
    age: int
    role: Literal["admin", "member", "guest"]


@pytest.fixture
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key=API_KEY) as client:
        yield client


# The modes the server holds to the model's schema with a grammar. (Mode.JSON only asks for some JSON object, with
# the schema in a system message: the 135M model often writes the schema back instead of an instance.)
@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_create_returns_a_validated_instance(sdk: openai.OpenAI, mode: instructor.Mode) -> None:
    client = instructor.from_openai(sdk, mode=mode)

    user = client.chat.completions.create(
        model=MODEL,
        response_model=UserInfo,
        messages=[{"role": "user", "content": "John Doe is a 30 year old admin."}],
        max_retries=0,
        temperature=0,
        max_tokens=150,
    )

    assert isinstance(user, UserInfo)
