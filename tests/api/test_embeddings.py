"""POST /v1/embeddings through the full app: the wire format, its checks, the SDK, and batching across requests.

Tests that need the real all-MiniLM-L6-v2 share one app (loaded once) and run on the module's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
import openai
import pytest
import pytest_asyncio
from fastapi import FastAPI

from portico.settings import SentenceTransformersModel, Settings
from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings, registry_of

MINILM = "all-minilm-l6-v2"
MINILM_SNAPSHOT = "all-minilm-l6-v2-test"
EMBEDDINGS = "/v1/embeddings"

F = TypeVar("F", bound=Callable[..., Any])


def real_model(test: F) -> F:
    """Marks a test that uses the shared app with the real model, on the event loop that app lives on."""
    return pytest.mark.model(pytest.mark.asyncio(loop_scope="module")(test))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    minilm = SentenceTransformersModel(alias=MINILM, snapshot=MINILM_SNAPSHOT)
    async with asgi_client(Settings(models=[*echo_settings().models, minilm])) as pair:
        yield pair


@pytest.fixture
def http(served: tuple[httpx.AsyncClient, FastAPI]) -> httpx.AsyncClient:
    return served[0]


async def embed(http: httpx.AsyncClient, input: Any, **fields: Any) -> httpx.Response:
    return await http.post(EMBEDDINGS, json={"model": MINILM, "input": input, **fields})


def vectors(response: httpx.Response) -> list[list[float]]:
    assert response.status_code == 200, response.text
    return [row["embedding"] for row in response.json()["data"]]


# -- with the real model -----------------------------------------------------------------------------------
@real_model
async def test_answers_in_openai_shape_with_snapshot_and_usage(http: httpx.AsyncClient) -> None:
    response = await embed(http, "The quick brown fox.")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == MINILM_SNAPSHOT
    (row,) = body["data"]
    assert (row["object"], row["index"]) == ("embedding", 0)
    assert len(row["embedding"]) == 384
    assert math.sqrt(sum(x * x for x in row["embedding"])) == pytest.approx(1.0, abs=1e-5)
    # 5 word pieces ("the quick brown fox .") plus [CLS] and [SEP]: the tokens the model read.
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7, "cost": 0.0}  # no prices configured


@real_model
async def test_a_list_comes_back_in_order_with_indexes(http: httpx.AsyncClient) -> None:
    texts = ["A cat sleeps.", "Interest rates rose again this quarter.", "Dogs bark."]
    alone = [await embed(http, text) for text in texts]

    response = await embed(http, texts)

    assert [row["index"] for row in response.json()["data"]] == [0, 1, 2]
    for got, single in zip(vectors(response), alone, strict=True):
        assert got == pytest.approx(vectors(single)[0], abs=1e-5)
    assert response.json()["usage"]["prompt_tokens"] == sum(r.json()["usage"]["prompt_tokens"] for r in alone)


@real_model
async def test_base64_is_the_same_vector_as_little_endian_float32(http: httpx.AsyncClient) -> None:
    as_floats = vectors(await embed(http, "Encode me twice."))[0]

    encoded = vectors(await embed(http, "Encode me twice.", encoding_format="base64"))[0]

    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    # The float form carries the same float32 values (printed exactly), so the two agree bit for bit.
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == as_floats


@real_model
async def test_token_ids_of_the_models_tokenizer_embed_like_their_text(http: httpx.AsyncClient) -> None:
    text_vector = vectors(await embed(http, "hello world"))[0]
    hello_world = [7592, 2088]  # bert-base-uncased word pieces, which all-MiniLM-L6-v2 uses

    single = await embed(http, hello_world)
    several = await embed(http, [hello_world, [7592]])

    assert vectors(single)[0] == pytest.approx(text_vector, abs=1e-5)
    assert vectors(several)[0] == pytest.approx(text_vector, abs=1e-5)
    assert single.json()["usage"]["prompt_tokens"] == 4


@real_model
async def test_token_id_outside_the_vocabulary_is_400(http: httpx.AsyncClient) -> None:
    response = await embed(http, [[7592], [7592, 30522]])

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "input[1]")
    assert "30521" in error["message"]


@real_model
async def test_dimensions_are_accepted_only_when_the_model_makes_them(http: httpx.AsyncClient) -> None:
    assert len(vectors(await embed(http, "fits", dimensions=384))[0]) == 384

    response = await embed(http, "does not fit", dimensions=256)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "dimensions")
    assert "384" in error["message"]


@real_model
async def test_input_over_the_window_is_400_not_truncated(http: httpx.AsyncClient) -> None:
    fits = await embed(http, "hello " * 254)  # 254 word pieces + [CLS] + [SEP] = the 256-token window
    too_long = await embed(http, ["short", "hello " * 255])

    assert fits.status_code == 200
    assert fits.json()["usage"]["prompt_tokens"] == 256
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "input[1]")
    assert (error["limit"], error["requested"]) == (256, 257)


@real_model
async def test_official_openai_sdk_creates_embeddings(http: httpx.AsyncClient) -> None:
    expected = vectors(await embed(http, ["first text", "second text"]))
    sdk = openai.AsyncOpenAI(base_url="http://portico.test/v1", api_key="unused", http_client=http)

    result = await sdk.embeddings.create(model=MINILM, input=["first text", "second text"])

    assert result.model == MINILM_SNAPSHOT
    assert [row.index for row in result.data] == [0, 1]
    for row, floats in zip(result.data, expected, strict=True):
        assert row.embedding == pytest.approx(floats, abs=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 8


@real_model
async def test_concurrent_requests_share_forward_passes(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    http, app = served
    minilm = registry_of(app).resolve(MINILM).embedder()
    before = minilm.stats.forward_passes
    texts = [f"Request {i} asks about topic {i}." for i in range(6)]

    responses = await asyncio.gather(*(embed(http, text) for text in texts))

    assert all(response.status_code == 200 for response in responses)
    assert minilm.stats.forward_passes - before < len(texts)


@real_model
async def test_models_lists_the_embeddings_model_with_its_window(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/v1/models/{MINILM}")

    assert response.json()["capabilities"] == ["embeddings"]
    assert response.json()["context_window"] == 256
    assert "embeddings" not in (await http.get(f"/v1/models/{ECHO_ALIAS}")).json()["capabilities"]


@real_model
async def test_chat_and_tokenize_on_the_embeddings_model_are_400(http: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "hi"}]
    chat = await http.post("/v1/chat/completions", json={"model": MINILM, "messages": messages})
    tokenize = await http.post("/v1/tokenize", json={"model": MINILM, "prompt": "hi"})

    for response, capability in ((chat, "chat"), (tokenize, "tokenize")):
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("unsupported_parameter", "model")
        assert f"does not support {capability}" in error["message"]


# -- the HTTP layer alone (echo engine) --------------------------------------------------------------------
async def test_embeddings_on_a_model_without_the_capability_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(EMBEDDINGS, json={"model": ECHO_ALIAS, "input": "hi"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "model")
    assert "does not support embeddings" in error["message"]


@pytest.mark.parametrize("empty", ["", [], [[]], ["text", ""], [[1], []]])
async def test_empty_input_is_400(client: httpx.AsyncClient, empty: Any) -> None:
    response = await client.post(EMBEDDINGS, json={"model": ECHO_ALIAS, "input": empty})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"input": "x", "truncate": True}, "unknown_parameter", "truncate"),
        ({"input": "x", "encoding_format": "hex"}, "invalid_request", "encoding_format"),
        ({"input": "x", "dimensions": 0}, "invalid_request", "dimensions"),
        ({"input": ["x", 1]}, "invalid_request", "input"),
        ({"input": [True]}, "invalid_request", "input"),
        ({}, "invalid_request", "input"),
    ],
)
async def test_invalid_fields_are_400_naming_them(
    client: httpx.AsyncClient, fields: dict[str, Any], code: str, param: str
) -> None:
    response = await client.post(EMBEDDINGS, json={"model": ECHO_ALIAS, **fields})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"].startswith(param)
