"""The newcomer's path: `portico serve`, then the official openai SDK gets an English answer, both ways, and
embeddings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.system.servers import free_port, stop_all, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.model]

QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    portico = Path(sys.executable).parent / "portico"
    work = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    log = (work / "serve.log").open("w")
    command = [str(portico), "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=log)  # its SQLite file goes in work
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base)
        yield f"{base}/v1"
    finally:
        stop_all(process)
        log.close()


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server, api_key="not-needed-locally") as sdk:
        yield sdk


def test_openai_sdk_gets_an_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=30
    )

    answer = completion.choices[0].message.content or ""
    assert "Paris" in answer
    assert completion.model == "smollm2-135m-instruct-q4_1-20250207"
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_openai_sdk_streams_an_answer(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=30, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]

    assert "Paris" in "".join(pieces)
    assert len([p for p in pieces if p]) > 1, "the answer should arrive in several chunks"


def test_openai_sdk_gets_a_longer_english_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What color is the sky on a clear day?"}],
        temperature=0,
        max_tokens=40,
    )

    answer = (completion.choices[0].message.content or "").lower()
    assert "blue" in answer
    assert len(answer.split()) >= 5


def test_openai_sdk_gets_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="all-minilm-l6-v2", input=["The sky is blue.", "Grass is green."])

    assert [len(row.embedding) for row in result.data] == [384, 384]
    assert result.model == "all-minilm-l6-v2-f32-0.1.0"


def test_models_endpoint_lists_the_embedded_models(client: openai.OpenAI) -> None:
    models = client.models.list()

    assert [m.id for m in models] == ["smollm2", "all-minilm-l6-v2", "portico-moderation"]
